"""Why does a search stall? Read a run directory and count what its contests and children did.

    python benchmarks/search_diagnostics.py RUN_DIR [RUN_DIR ...]

Per generation: contests decided by a tie (winner and loser equally fit on the minibatch), children
fitter / as fit / less fit than their parent on the same minibatch, children whose prompt repeats a
prompt already in the population, and the spread of fitness in the population. Then the same
counts per operator.
"""

from __future__ import annotations

import json
import sys
from collections import Counter, defaultdict
from pathlib import Path


def load(run: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(run.glob("generation_*.json"))]


def diagnose(run: Path) -> str:
    generations = load(run)
    lines = [f"{run}:", "gen | ties/contests | child > parent | = | < | repeats | distinct prompts | best | mean"]
    per_operator = defaultdict(Counter)
    for previous, record in zip(generations, generations[1:]):
        units = {u["id"]: u for u in record["population"]}
        before = {u["prompts"]["task_prompt"] for u in previous["population"]}
        ties = better = same = worse = repeats = 0
        for birth in record["births"]:
            contest, child = birth["contest"], units.get(birth["child"])
            winner = units.get(contest["winner"])
            loser = next((u for u in previous["population"] if u["id"] == contest["loser"]), None)
            if winner is None or child is None:
                continue
            # The loser's fitness was measured on the previous minibatch unless it was rescored before the contest.
            if loser is not None and loser.get("scored_on") == winner.get("scored_on") == child.get("scored_on"):
                ties += loser["fitness"] == winner["fitness"]
            delta = child["fitness"] - winner["fitness"]
            better, same, worse = better + (delta > 0), same + (delta == 0), worse + (delta < 0)
            repeated = child["prompts"]["task_prompt"] in before
            repeats += repeated
            stats = per_operator[birth["operator"]]
            stats.update(children=1, better=delta > 0, same=delta == 0, worse=delta < 0, repeats=repeated)
        fitness = [u["fitness"] for u in record["population"]]
        distinct = len({u["prompts"]["task_prompt"] for u in record["population"]})
        lines.append(f"{record['generation']:>3} | {ties}/{len(record['births'])} | {better} | {same} | {worse} | "
                     f"{repeats} | {distinct}/{len(fitness)} | {max(fitness):.3f} | {sum(fitness) / len(fitness):.3f}")
    lines.append("operator | children | > parent | = | < | repeats")
    for name, stats in sorted(per_operator.items()):
        lines.append(f"{name} | {stats['children']} | {stats['better']} | {stats['same']} | {stats['worse']} | "
                     f"{stats['repeats']}")
    return "\n".join(lines)


if __name__ == "__main__":
    for argument in sys.argv[1:]:
        print(diagnose(Path(argument)), end="\n\n")
