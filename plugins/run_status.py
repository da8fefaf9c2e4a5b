"""``lpb runs``: every run of a day care with its status and the exact command that resumes it."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import attrs

from lpb_plugins.run_data import INTERRUPTED, STOPPED, RunFiles, find_runs, load_run, winner

# The budgets a stop names ("budget: max_llm_calls (100) reached"); the resume command leaves that one out.
_BUDGET = re.compile(r"budget: (max_\w+)")
_PATH_SETTINGS = ("day_care_dir", "fitness_test_suite", "test_suite")


def working_directory(run: RunFiles) -> Path | None:
    """Where the breed was started, when it was given relative paths (a resume must give the same ones).

    config.json keeps the day care both as typed and resolved, so the difference is that directory.
    """
    typed = Path(os.path.normpath(run.settings.get("day_care_dir", ".")))
    if typed.is_absolute() or ".." in typed.parts or "day_care" not in run.config:
        return None
    resolved = Path(run.config["day_care"])
    if typed == Path("."):
        return resolved
    if resolved.parts[-len(typed.parts):] != typed.parts:
        return None
    return Path(*resolved.parts[:-len(typed.parts)])


def command_to_resume(run: RunFiles) -> str | None:
    """The `lpb breed` line that goes on with an interrupted or budget-stopped run (None for others)."""
    from lpb_core.cli_breed import resume_command
    from lpb_core.evaluate import settings_of_run

    status = run.status
    if status not in (INTERRUPTED, STOPPED) or run.number is None:
        return None
    # config.json keeps the first session's settings; a later session may have asked for more generations.
    changes = {"continue_run_number": run.number, "verbose": False, "evolution_generations": run.asked_generations}
    if status == STOPPED and (budget := _BUDGET.match(run.summary["stopped_because"])):
        changes[budget.group(1)] = None  # the budget it hit would stop it again at once
    command = resume_command(attrs.evolve(settings_of_run(run.path), **changes))
    relative = any(run.settings.get(k) and not Path(run.settings[k]).is_absolute() for k in _PATH_SETTINGS)
    origin = working_directory(run) if relative else None
    return f"cd {shlex.quote(str(origin))} && {command}" if origin else command


def describe(run: RunFiles) -> dict:
    summary = run.ended or {}
    best = winner(run)
    return {
        "task": run.settings.get("task"),
        "run_number": run.number,
        "run_dir": str(run.path),
        "status": run.status,
        "stopped_because": summary.get("stopped_because"),
        "generations_done": run.done_generations,
        "generations_asked": run.asked_generations,
        "best_unit": best.id if best else None,
        "best_train_fitness": best.fitness if best else None,
        "best_validation_fitness": summary.get("best_validation_fitness"),
        "best_held_out_fitness": summary.get("best_test_fitness"),
        "model": run.settings.get("model_name_or_path"),
        "model_description": run.config.get("model"),
        "resume_command": command_to_resume(run),
    }


def describe_runs(day_care_dir: Path, task: str | None = None) -> list[dict]:
    return [describe(load_run(path)) for path in find_runs(day_care_dir, task)]

