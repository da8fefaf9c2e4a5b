"""Does breeding beat the prompt a person would write? Held-out accuracy on tasks written for this benchmark.

For each task in benchmarks/tasks/ (its own training suite, held-out test_suite.json, three plain
hand prompts written before any model was run, and a fitness template), on the embedded model:

- the task description used as the prompt, and each hand prompt, scored with `lpb eval`'s machinery
  (the breed's own fitness template, decoder and scorer) on the held-out items;
- breeds at a fixed size (population x generations), with the held-out items as --test-suite:
  "bred" starts from the paper's initialisation alone, "bred+seeds" also gets the three hand prompts
  as seeds (what a practitioner with a prompt does); for each, the best initial unit and the winner.

    python benchmarks/bench_quality.py [--tasks a,b] [--seeds 1 2] [--population-size 16]
        [--evolution-generations 4] [--fitness-batch-size 20] [--variants bred,bred+seeds] [--out FILE.json]

Prints a markdown table (mean over seeds) and writes every figure to --out.
"""

from __future__ import annotations

import argparse
import ast
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TASKS = HERE / "tasks"
VARIANTS = ("bred", "bred+seeds")


def day_care_with(task: str, root: Path) -> Path:
    """The built-in shared files (templates, mutation prompts, thinking styles) plus one benchmark task."""
    for name in ("breeder.lmql", "mutation_prompts.json", "thinking_styles.json"):
        shutil.copy(REPO / "day_care" / name, root / name)
    shutil.copytree(TASKS / task, root / task, ignore=shutil.ignore_patterns("RUN_*", "hand_prompts.json"))
    return root


def baselines(task: str, day_care: Path, args) -> dict:
    from lpb_core.evaluate import evaluate, prompt_units
    from lpb_core.settings import BreedSettings

    description = json.loads((TASKS / task / "task_description.json").read_text())["task_description"]
    hand = json.loads((TASKS / task / "hand_prompts.json").read_text())
    candidates = prompt_units([description, *hand], "task_prompt", "prompt", "benchmark", "prompt")
    settings = BreedSettings(task=task, day_care_dir=day_care, loggers=())
    result = evaluate(settings, candidates, suite=TASKS / task / "test_suite.json")
    scores = [row["fitness"] for row in result["prompts"]]
    constant = result["constant_answer"]  # the floor: one label every time (None for numeric answers)
    return {"task_description": scores[0], "hand": scores[1:], "hand_prompts": hand,
            "one_label": constant and {"answer": constant["answer"], "fitness": constant["fitness"]}}


def one_breed(task: str, day_care: Path, seed: int, variant: str, args) -> dict:
    from lpb_core.run import breed
    from lpb_core.settings import BreedSettings

    hand = json.loads((TASKS / task / "hand_prompts.json").read_text()) if variant == "bred+seeds" else []
    started = time.perf_counter()
    settings = dict(task=task, day_care_dir=day_care, seed=seed, population_size=args.population_size,
                    evolution_generations=args.evolution_generations, fitness_batch_size=args.fitness_batch_size,
                    test_suite=TASKS / task / "test_suite.json", initial_prompts=tuple(hand), loggers=())
    summary = breed(BreedSettings(**{**settings, **args.overrides}))
    # Every finalist on the held-out items too, so other ways of choosing the winner can be compared.
    from lpb_core.evaluate import Candidate, evaluate
    from lpb_core.rundir import RunDirectory

    units = {u.id: u for r in RunDirectory(Path(summary["run_dir"]), None).generations() for u in r.population}
    finalists = [f for f in summary["finalists"] if f["id"] in units]
    if finalists:
        scored = evaluate(BreedSettings(task=task, day_care_dir=day_care, loggers=()),
                          [Candidate(f["id"], units[f["id"]]) for f in finalists], suite=TASKS / task / "test_suite.json")
        for finalist, row in zip(finalists, scored["prompts"]):
            finalist["test_fitness"] = row["fitness"]
    return {"seed": seed, "variant": variant, "best_test": summary["best_test_fitness"], "finalists": finalists,
            "initial_best_test": summary["initial_best_test_fitness"],
            "best_validation": summary.get("best_validation_fitness"), "best_finals": summary.get("best_finals_fitness"),
            "best_train": summary["best_train_fitness"],
            "winner": summary["best_unit"]["prompts"], "winner_operator": summary["best_unit"]["operator"],
            "llm_calls": summary["llm_calls"], "cache_hits": summary["cache_hits"],
            "seconds": round(time.perf_counter() - started, 1)}


def table(results: dict) -> str:
    rows = ["| task | one label every time | task description | hand prompts (best) | " +
            " | ".join(f"{v}: initial best | {v}: winner" for v in results["variants"]) + " | calls |",
            "|---" * (5 + 2 * len(results["variants"])) + "|"]
    means = {}
    for task, data in results["tasks"].items():
        floor = data["baselines"].get("one_label")
        cells = [task, f"{floor['fitness']:.3f} ({floor['answer']})" if floor else "-",
                 f"{data['baselines']['task_description']:.3f}",
                 " / ".join(f"{h:.3f}" for h in data["baselines"]["hand"]) +
                 f" (**{max(data['baselines']['hand']):.3f}**)"]
        means.setdefault("description", []).append(data["baselines"]["task_description"])
        means.setdefault("hand", []).append(max(data["baselines"]["hand"]))
        calls = []
        for variant in results["variants"]:
            runs = [r for r in data["breeds"] if r["variant"] == variant]
            initial = statistics.mean(r["initial_best_test"] for r in runs)
            winner = statistics.mean(r["best_test"] for r in runs)
            means.setdefault(variant + " initial", []).append(initial)
            means.setdefault(variant, []).append(winner)
            each = ", ".join(f"{r['best_test']:.3f}" for r in runs)
            cells += [f"{initial:.3f}", f"**{winner:.3f}**" + (f" ({each})" if len(runs) > 1 else "")]
            calls += [r["llm_calls"] for r in runs]
        cells.append(f"{statistics.mean(calls):.0f}")
        rows.append("| " + " | ".join(cells) + " |")
    mean_cells = ["**mean**", "", f"{statistics.mean(means['description']):.3f}",
                  f"{statistics.mean(means['hand']):.3f}"]
    for variant in results["variants"]:
        mean_cells += [f"{statistics.mean(means[variant + ' initial']):.3f}", f"{statistics.mean(means[variant]):.3f}"]
    rows.append("| " + " | ".join(mean_cells + [""]) + " |")
    return "\n".join(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default=",".join(sorted(p.name for p in TASKS.iterdir() if p.is_dir())))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--population-size", type=int, default=16)
    parser.add_argument("--evolution-generations", type=int, default=4)
    parser.add_argument("--fitness-batch-size", type=int, default=20)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="Any other lpb breed setting, e.g. --set validation_split=0.4 (a Python literal).")
    args = parser.parse_args(argv)
    args.overrides = {}
    for item in args.set:
        field, _, value = item.partition("=")
        try:
            args.overrides[field.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            args.overrides[field.strip()] = value.strip()
    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variant(s) {sorted(unknown)}; known: {', '.join(VARIANTS)}")
    results = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "set"},
               "variants": variants, "tasks": {}}
    for task in [t for t in args.tasks.split(",") if t]:
        with tempfile.TemporaryDirectory(prefix=f"lpb-bench-{task}-") as tmp:
            day_care = day_care_with(task, Path(tmp))
            data = {"baselines": baselines(task, day_care, args), "breeds": []}
            print(f"{task}: task description {data['baselines']['task_description']:.3f}, hand prompts "
                  f"{', '.join(f'{h:.3f}' for h in data['baselines']['hand'])}", file=sys.stderr, flush=True)
            for seed in args.seeds:
                for variant in variants:
                    result = one_breed(task, day_care, seed, variant, args)
                    data["breeds"].append(result)
                    print(f"  {variant} seed {seed}: initial best {result['initial_best_test']:.3f} -> winner "
                          f"{result['best_test']:.3f} ({result['llm_calls']} calls, {result['seconds']}s): "
                          f"{result['winner']}", file=sys.stderr, flush=True)
            results["tasks"][task] = data
            if args.out:
                args.out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
