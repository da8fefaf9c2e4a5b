"""summary.json: what a run achieved, readable without our code (schema: schemas/summary.schema.json)."""

from __future__ import annotations

from collections import Counter

from lpb_core.rundir import RunDirectory
from lpb_core.settings import BreedSettings
from lpb_core.units import GenerationRecord, Usage


def operator_statistics(history: list[GenerationRecord]) -> dict:
    """Per operator: children made, and how many of those won the next contest they entered (the paper's table)."""
    made, entered, won = Counter(), Counter(), Counter()
    made_by = {}
    for record in history:
        for birth in record.births:
            made[birth.operator] += 1
            made_by[birth.child] = birth.operator
    judged = set()
    for record in history:
        for birth in record.births:
            contest = birth.contest
            for unit_id in contest.competitors or (contest.winner, contest.loser):
                if unit_id in made_by and unit_id not in judged:
                    judged.add(unit_id)
                    entered[made_by[unit_id]] += 1
                    won[made_by[unit_id]] += unit_id == contest.winner
    return {
        name: {"children": made[name], "contests_entered": entered[name], "wins": won[name],
               "win_rate": round(won[name] / entered[name], 4) if entered[name] else None}
        for name in sorted(made)
    }


def build_summary(settings: BreedSettings, run: RunDirectory, config: dict, history: list[GenerationRecord],
                  test_scores: dict, n_train: int, n_test: int, usage: Usage, wall_seconds: float,
                  stopped_because: str, cost: float | None = None) -> dict:
    final = history[-1]
    best = final.best()
    return {
        "task": settings.task,
        "model": config["model"],
        "run_number": run.number,
        "run_dir": str(run.path),
        "generations_completed": final.generation,
        "population_size": len(final.population),
        "stopped_because": stopped_because,
        "best_unit": best.to_dict(),
        "best_train_fitness": best.fitness,
        "best_test_fitness": test_scores.get("best_unit"),
        "initial_best_test_fitness": test_scores.get("initial_best_unit"),
        "train_items": n_train,
        "test_items": n_test,
        "fitness_per_generation": [
            {"generation": r.generation, "best": r.best().fitness,
             "mean": round(sum(u.fitness for u in r.population) / len(r.population), 6)}
            for r in history
        ],
        "operator_statistics": operator_statistics(history),
        **usage.to_dict(),
        "cost_usd": None if cost is None else round(cost, 6),
        "wall_seconds": round(wall_seconds, 3),
    }
