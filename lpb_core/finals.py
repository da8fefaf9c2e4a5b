"""The end of a breed: choose the winner on validation items, then score it on held-out items.

Training fitness is measured on small minibatches, so it saturates and ties; the unit that tops
the last generation is often just the luckiest. A few finalists (the last generation's fittest,
the best initial unit and every prompt the user supplied) are therefore scored on validation items
that no selection has seen, and the best there wins. Only then are the held-out test items used,
once, to compare the winner with where the run started, item by item.
"""

from __future__ import annotations

from typing import Iterable

import attrs

from lpb_core.fitness import FitnessTest, Minibatch
from lpb_core.llm import LanguageModel, run_all
from lpb_core.stats import compare
from lpb_core.units import SEED, GenerationRecord, Unit, fitness_key

BEST, INITIAL_BEST = "best", "initial_best"


@attrs.frozen
class Finalist:
    unit: Unit  # as it stood in the generation it comes from (training fitness included)
    validation_fitness: float | None = None


def finalists(history: list[GenerationRecord], count: int) -> list[Unit]:
    """The last generation's ``count`` fittest, the best initial unit, and every seeded unit; no unit twice."""
    final, initial = history[-1].population, history[0].population
    ranked = sorted(final, key=fitness_key, reverse=True)[:max(1, count)]
    chosen = ranked + [max(initial, key=fitness_key)] + [u for u in initial if u.operator == SEED]
    return list({u.id: u for u in chosen}.values())


async def choose_winner(history: list[GenerationRecord], fitness: FitnessTest, model: LanguageModel,
                        validation: tuple[int, ...], count: int) -> tuple[Unit, list[Finalist]]:
    """The finalist with the best validation fitness (ties: training fitness, then the order above).

    Without validation items, the last generation's fittest unit wins, as in the paper.
    """
    if not validation:
        return history[-1].best(), []
    units = finalists(history, count)
    batch = Minibatch("validation", validation)
    scored = await run_all(fitness.evaluate(u, batch, model) for u in units)
    results = [Finalist(unit, s.fitness) for unit, s in zip(units, scored)]
    winner = max(results, key=lambda f: (f.validation_fitness, fitness_key(f.unit)))
    return winner.unit, results


def roles(winner: Unit, history: list[GenerationRecord]) -> dict[str, list[str]]:
    """The units scored on the held-out items, each with why: the winner, the best initial unit, the seeds."""
    initial = history[0].population
    named: dict[str, list[str]] = {winner.id: [BEST]}
    named.setdefault(max(initial, key=fitness_key).id, []).append(INITIAL_BEST)
    for unit in initial:
        if unit.operator == SEED:
            named.setdefault(unit.id, []).append(SEED)
    return named


async def score_held_out(units: Iterable[Unit], named: dict[str, list[str]], fitness: FitnessTest,
                         model: LanguageModel, test: tuple[int, ...]) -> dict:
    """Each unit's per-item outcomes on the test items, and the winner compared with every other one.

    Comparisons are of per-item correctness (McNemar's test), whatever the scorer's aggregate is.
    """
    units = list(units)
    what = "held-out items" if len(fitness.variants) == 1 else "held-out answers"
    batch = Minibatch("test", test)
    evaluations = await run_all(fitness.evaluate_items(u, batch, model) for u in units)
    block = {"items": list(test), "variants": list(fitness.variants), "units": {}, "comparisons": []}
    outcomes = {}
    for unit, evaluation in zip(units, evaluations):
        outcomes[unit.id] = [c for variant in fitness.variants for c in evaluation.correct[variant]]
        block["units"][unit.id] = {"roles": named[unit.id], "fitness": evaluation.unit.fitness,
                                   "prompts": dict(unit.prompts),
                                   "correct": {v: list(evaluation.correct[v]) for v in fitness.variants}}
    best = next(u.id for u in units if BEST in named[u.id])
    for other in (u.id for u in units if u.id != best):
        result = compare(outcomes[best], outcomes[other])
        block["comparisons"].append({"a": best, "b": other, "b_roles": named[other], **result.to_dict(),
                                     "sentence": result.sentence(what)})
    return block
