"""summary.json: what a run achieved, readable without our code (schema: schemas/summary.schema.json)."""

from __future__ import annotations

from collections import Counter

from lpb_core.finals import INITIAL_BEST, Finalist
from lpb_core.fitness import Split
from lpb_core.rundir import RunDirectory
from lpb_core.settings import BreedSettings
from lpb_core.units import GenerationRecord, Unit, Usage


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
                  winner: Unit, finalists: list[Finalist], held_out: dict | None, items: Split, usage: Usage,
                  wall_seconds: float, stopped_because: str, priced: bool) -> dict:
    final = history[-1]
    held_out_units = (held_out or {}).get("units", {})
    initial_best = next((i for i, u in held_out_units.items() if INITIAL_BEST in u["roles"]), None)
    chosen = next((f for f in finalists if f.unit.id == winner.id), None)
    return {
        "task": settings.task,
        "model": config["model"],
        "mutation_model": config.get("mutation_model"),
        "run_number": run.number,
        "run_dir": str(run.path),
        "generations_completed": final.generation,
        "population_size": len(final.population),
        "stopped_because": stopped_because,
        "best_unit": winner.to_dict(),
        "best_train_fitness": winner.fitness,
        "best_validation_fitness": chosen and chosen.validation_fitness,
        "best_finals_fitness": chosen and chosen.finals_fitness,
        "best_test_fitness": held_out_units[winner.id]["fitness"] if winner.id in held_out_units else None,
        "initial_best_test_fitness": held_out_units[initial_best]["fitness"] if initial_best else None,
        "train_items": len(items.train),
        "validation_items": len(items.validation),
        "finals_items": len(items.validation) + len(items.finals_train),  # no finals_train without validation
        "test_items": len(items.test),
        "finalists": [f.to_dict() for f in finalists],
        "held_out": held_out,
        "fitness_per_generation": [
            {"generation": r.generation, "best": r.best().fitness,
             "mean": round(sum(u.fitness for u in r.population) / len(r.population), 6)}
            for r in history
        ],
        "operator_statistics": operator_statistics(history),
        **usage.to_dict(),
        "cost_usd": round(usage.cost_usd, 6) if priced else None,
        "wall_seconds": round(wall_seconds, 3),
    }
