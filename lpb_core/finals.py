"""The end of a breed: choose the winner on items not held out, then score it on held-out items.

Training fitness is measured on small minibatches, so it saturates and ties; the unit that tops
the last generation is often just the luckiest. A few finalists (the last generation's fittest,
the best initial unit and every prompt the user supplied) are therefore scored on the validation
items, which no selection has seen, pooled with a sample of the training items
(``Split.finals_train``), and the best there wins. Validation items alone are too few to choose
between good prompts: at 30 items one answer is worth 0.033, and hand prompts differ by a few
answers (benchmarks/README.md, "Quality"). One exception: a prompt of the search takes the place of
the user's prompts only by beating all of them on the validation items alone, so a seeded breed never
returns a bred prompt that lost to the user's on items no selection has seen. Only then are the
held-out test items used, once, to compare the winner with where the run started, item by item.
"""

from __future__ import annotations

from typing import Iterable

import attrs

from lpb_core.fitness import FitnessTest, Minibatch, Progress, Split, evaluate_each
from lpb_core.llm import LanguageModel
from lpb_core.stats import compare, comparison_measure
from lpb_core.units import SEED, GenerationRecord, Unit, fitness_key

BEST, INITIAL_BEST = "best", "initial_best"


@attrs.frozen
class Finalist:
    unit: Unit  # as it stood in the generation it comes from (minibatch training fitness included)
    validation_fitness: float | None = None  # on the validation items
    finals_train_fitness: float | None = None  # on the final's training items (Split.finals_train)
    finals_fitness: float | None = None  # on both, weighted by their item counts: what the winner is chosen on

    def to_dict(self) -> dict:
        return {"id": self.unit.id, "operator": self.unit.operator, "train_fitness": self.unit.fitness,
                "finals_train_fitness": self.finals_train_fitness, "validation_fitness": self.validation_fitness,
                "finals_fitness": self.finals_fitness}


def finalists(history: list[GenerationRecord], count: int) -> list[Unit]:
    """The last generation's ``count`` fittest, the best initial unit, and every seeded unit; no unit twice, and
    a unit still in the last generation as it stands there (its latest minibatch fitness)."""
    final, initial = history[-1].population, history[0].population
    ranked = sorted(final, key=fitness_key, reverse=True)[:max(1, count)]
    latest = {u.id: u for u in final}
    chosen = ranked + [max(initial, key=fitness_key)] + [u for u in initial if u.operator == SEED]
    unique: dict[str, Unit] = {}
    for unit in chosen:
        unique.setdefault(unit.id, latest.get(unit.id, unit))
    return list(unique.values())


async def choose_winner(history: list[GenerationRecord], fitness: FitnessTest, model: LanguageModel,
                        items: Split, count: int, progress: Progress | None = None) -> tuple[Unit, list[Finalist]]:
    """The eligible finalist with the best finals fitness (ties: validation fitness, training fitness, then the
    order above). A seeded unit is always a finalist, and a bred one wins over it only by beating it on the
    validation items (``eligible``).

    Without validation items, the last generation's fittest unit wins, as in the paper.
    """
    if not items.validation:
        return history[-1].best(), []
    units = finalists(history, count)
    batches = [Minibatch("validation", items.validation)]
    if items.finals_train:  # none when the validation items alone reach FINALS_ITEMS
        batches.append(Minibatch("finals_train", items.finals_train))
    scored = await evaluate_each([(u, b) for u in units for b in batches],
                                 lambda u, b: fitness.evaluate(u, b, model), progress)
    results = []
    for k, unit in enumerate(units):
        own = scored[k * len(batches):(k + 1) * len(batches)]  # one per batch, in the order of ``batches``
        pooled = sum(s.fitness * len(b.indices) for s, b in zip(own, batches)) / sum(len(b.indices) for b in batches)
        results.append(Finalist(unit, own[0].fitness, own[1].fitness if len(own) > 1 else None, round(pooled, 6)))
    winner = max(eligible(results), key=lambda f: (f.finals_fitness, f.validation_fitness, fitness_key(f.unit)))
    return winner.unit, results


def eligible(results: list[Finalist]) -> list[Finalist]:
    """The finalists that may win: with the user's prompts among them, those prompts and the search's prompts
    that beat every one of them on the validation items.

    The training items in the pooled finals score favour the search's prompts, whose wording was bred on
    them; the validation items favour no one. So a bred prompt displaces the user's only by scoring higher
    there, and the user's prompts, written without those items, are compared with each other on all of them.
    """
    seeds = [f.validation_fitness for f in results if f.unit.operator == SEED]
    if not seeds:
        return results
    return [f for f in results if f.unit.operator == SEED or f.validation_fitness > max(seeds)]


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
                         model: LanguageModel, test: tuple[int, ...], progress: Progress | None = None) -> dict:
    """Each unit's per-item outcomes on the test items, and the winner compared with every other one.

    Comparisons are of per-item correctness (McNemar's test), whatever the scorer's aggregate is.
    """
    units = list(units)
    what = "held-out items" if len(fitness.variants) == 1 else "held-out answers"
    batch = Minibatch("test", test)
    evaluations = await evaluate_each([(u, batch) for u in units],
                                      lambda u, b: fitness.evaluate_items(u, b, model), progress)
    block = {"items": list(test), "variants": list(fitness.variants), "units": {}, "comparisons": []}
    outcomes = {}
    for unit, evaluation in zip(units, evaluations):
        outcomes[unit.id] = [c for variant in fitness.variants for c in evaluation.correct[variant]]
        block["units"][unit.id] = {"roles": named[unit.id], "fitness": evaluation.unit.fitness,
                                   "prompts": dict(unit.prompts),
                                   "correct": {v: list(evaluation.correct[v]) for v in fitness.variants},
                                   "unreadable": evaluation.unreadable}
    best = next(u.id for u in units if BEST in named[u.id])
    measure = comparison_measure({u: block["units"][u]["fitness"] for u in outcomes}, outcomes)
    for other in (u.id for u in units if u.id != best):
        result = compare(outcomes[best], outcomes[other])
        block["comparisons"].append({"a": best, "b": other, "b_roles": named[other], **result.to_dict(),
                                     "sentence": result.sentence(what, measure)})
    constant = fitness.constant_answer(test)
    if constant is not None:  # did the winner read the items at all, or does it do what one label every time does?
        result = compare(outcomes[best], constant.correct)
        block["constant_answer"] = {**constant.to_dict(), "comparison": {**result.to_dict(),
                                                                        "sentence": result.sentence(what, measure)}}
    return block
