"""Frozen event objects passed to the event hooks (``lpb_core.hookspecs``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs

from lpb_core.units import GenerationRecord, Unit


@attrs.frozen
class RunStarted:
    run_dir: Path
    config: dict  # what config.json holds
    resumed_after: int | None  # last finished generation when resuming, else None
    total_generations: int
    population_size: int


@attrs.frozen
class UnitEvaluated:
    generation: int  # the generation scored, or the last one for the stages after it
    unit: Unit
    items: int  # how many fitness items it was scored on
    done: int  # evaluations finished so far in this batch of work
    total: int  # evaluations in this batch of work
    stage: str = "generation"  # GENERATION, FINAL (finalists on validation and training items), HELD_OUT (test items)


GENERATION, FINAL, HELD_OUT = "generation", "final", "held_out"


@attrs.frozen
class MutationApplied:
    generation: int
    operator: str
    parent: Unit
    child: Unit
    replaced: str  # id of the loser the child replaces


@attrs.frozen
class GenerationFinished:
    record: GenerationRecord
    run_dir: Path
    total_generations: int


@attrs.frozen
class RunFinished:
    run_dir: Path
    summary: dict[str, Any]  # what summary.json holds
