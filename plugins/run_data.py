"""A run directory as data, from its files alone: what ``lpb report``, ``lpb runs`` and ``lpb best`` show.

No model and no plugin manager: pure functions over config.json, generation_NNN.json, summary.json
and events.jsonl. They work on a finished, stopped, interrupted or still-running run, because every
JSON file is written atomically (whatever is there is whole) and summary.json appears only when a
breed ends.
"""

from __future__ import annotations

import difflib
import fcntl
import json
import os
from pathlib import Path

import attrs

from lpb_core import rundir
from lpb_core.errors import InputError
from lpb_core.rundir import CONFIG_FILE, EVENTS_FILE, LOCK_FILE, RUN_NAME, RunDirectory
from lpb_core.stats import Accuracy, compare, comparison_measure
from lpb_core.summary import operator_statistics
from lpb_core.units import COMPLETED, GenerationRecord, Unit, Usage, fitness_key

TOP_PROMPTS = 5

FINISHED, STOPPED, INTERRUPTED, RUNNING = "finished", "stopped by budget", "interrupted", "running"


def is_running(run_dir: Path) -> bool:
    """True while a breed holds the run's lock (flock, LOCK_EX); the kernel drops it when the breed's process ends,
    so a killed breed's run reads as not running."""
    try:
        fd = os.open(Path(run_dir) / LOCK_FILE, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # shared, so a look never stops a breed taking the lock
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing also drops the shared lock, if we got it
    return False


def read_events(path: Path) -> list[dict]:
    """Every whole line of an events.jsonl; a line cut short by a crash mid-write is left out."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    events = []
    for line in lines:
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


@attrs.frozen
class RunFiles:
    """What a run directory holds, read once."""

    path: Path
    number: int | None
    config: dict
    generations: tuple[GenerationRecord, ...]
    summary: dict | None
    events: tuple[dict, ...]
    running: bool
    unrecorded: tuple[Usage, float] = (Usage(), 0.0)  # spent after the last generation, by sessions since ended

    @property
    def settings(self) -> dict:
        return self.config.get("settings", {})

    @property
    def asked_generations(self) -> int:
        """The latest session's --evolution-generations (a resume may ask for more than config.json says)."""
        started = [e for e in self.events if e.get("event") == "run_started"]
        if started:
            return started[-1]["total_generations"]
        return self.settings.get("evolution_generations", 0)

    @property
    def done_generations(self) -> int | None:
        return self.generations[-1].generation if self.generations else None

    @property
    def status(self) -> str:
        if self.running:
            return RUNNING
        if self.summary is not None and self.summary.get("generations_completed") == self.done_generations:
            return FINISHED if self.summary.get("stopped_because") == COMPLETED else STOPPED
        return INTERRUPTED  # killed: no summary, or generations written after the last one

    @property
    def ended(self) -> dict | None:
        """summary.json when it describes the run as it stands (not a resumed run that is breeding again)."""
        return self.summary if self.status in (FINISHED, STOPPED) else None


def load_run(path: Path) -> RunFiles:
    path = Path(path)
    if not (path / CONFIG_FILE).is_file():
        raise InputError(path, f"not a run directory (no {CONFIG_FILE})", "RUN_DIR")
    match = RUN_NAME.match(path.name)
    run = RunDirectory(path, None)
    return RunFiles(
        path=path, number=int(match.group(1)) if match else None, config=run.read_config(),
        generations=tuple(run.generations()), summary=run.read_summary(),
        events=tuple(read_events(path / EVENTS_FILE)), running=is_running(path), unrecorded=run.read_unrecorded())


def run_path(day_care_dir: Path, task: str, number: int) -> Path:
    return rundir.run_path(Path(day_care_dir) / task, number)


def find_runs(day_care_dir: Path, task: str | None = None) -> list[Path]:
    """Every RUN_<n> of every task (or of one), in task then number order."""
    root = Path(day_care_dir)
    if not root.is_dir():
        raise InputError(root, "no such day care folder", "DAY_CARE_DIR")
    tasks = [root / task] if task else sorted(p for p in root.iterdir() if p.is_dir())
    runs = []
    for folder in tasks:
        if folder.is_dir():
            numbered = ((int(m.group(1)), p) for p in folder.iterdir() if (m := RUN_NAME.match(p.name)))
            runs.extend(p for _, p in sorted(numbered) if (p / CONFIG_FILE).is_file())
    return runs


# --- units and their history -----------------------------------------------------------------------

def first_appearances(run: RunFiles) -> dict[str, tuple[Unit, int]]:
    """Every unit that ever lived, as recorded in the generation it entered the population, with that number."""
    seen: dict[str, tuple[Unit, int]] = {}
    for record in run.generations:
        for unit in record.population:
            seen.setdefault(unit.id, (unit, record.generation))
    return seen


def post_operators(run: RunFiles) -> dict[str, tuple[str, ...]]:
    return {b.child: b.post_operators for record in run.generations for b in record.births}


def winner(run: RunFiles) -> Unit | None:
    """The breed's answer: summary.json's best unit once it ended, else the fittest of the last generation."""
    if run.ended:
        return Unit.from_dict(run.ended["best_unit"])
    return run.generations[-1].best() if run.generations else None


def ranked_final(run: RunFiles, count: int = TOP_PROMPTS) -> list[Unit]:
    """The winner, then the last generation's fittest units."""
    if not run.generations:
        return []
    best = winner(run)
    ranked = sorted(run.generations[-1].population, key=fitness_key, reverse=True)
    return list({u.id: u for u in [best, *ranked]}.values())[:count]


def word_diff(old: str, new: str) -> list[list[str]]:
    """``new`` against ``old`` word by word: [["same"|"del"|"ins", text], ...]."""
    a, b = old.split(), new.split()
    segments = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op == "equal":
            segments.append(["same", " ".join(a[i1:i2])])
            continue
        if i2 > i1:
            segments.append(["del", " ".join(a[i1:i2])])
        if j2 > j1:
            segments.append(["ins", " ".join(b[j1:j2])])
    return segments


def top_prompts(run: RunFiles, count: int = TOP_PROMPTS) -> list[dict]:
    """The best prompts with their scores, how they were made, and a word diff against their parent."""
    born = first_appearances(run)
    posts = post_operators(run)
    validation = {f["id"]: f.get("validation_fitness") for f in (run.ended or {}).get("finalists") or ()}
    held_out = ((run.ended or {}).get("held_out") or {}).get("units", {})
    rows = []
    for rank, unit in enumerate(ranked_final(run, count), start=1):
        parent = born[unit.parents[0]][0] if unit.parents and unit.parents[0] in born else None
        rows.append({
            "rank": rank, "id": unit.id, "prompts": dict(unit.prompts), "mutation_prompt": unit.mutation_prompt,
            "train_fitness": unit.fitness, "validation_fitness": validation.get(unit.id),
            "held_out_fitness": held_out.get(unit.id, {}).get("fitness"),
            "operator": unit.operator, "post_operators": list(posts.get(unit.id, ())), "born": unit.born,
            "parent": parent.id if parent else None,
            "parent_mutation_prompt": parent.mutation_prompt if parent else None,
            "context": [attrs.asdict(w) for w in unit.context],
            "diff": {field: word_diff(parent.prompts.get(field, ""), text) for field, text in unit.prompts.items()}
            if parent else None,
        })
    return rows


def lineage(run: RunFiles, count: int = TOP_PROMPTS) -> list[dict]:
    """The ancestry of the top units merged into trees, one per founding unit of generation 0.

    Each node: which operator made it, in which generation, its fitness on that generation's
    minibatch, and whether it is on the winner's line.
    """
    born = first_appearances(run)
    posts = post_operators(run)
    best = winner(run)
    on_best_line = set()
    unit_id = best.id if best else None
    while unit_id in born:
        on_best_line.add(unit_id)
        parents = born[unit_id][0].parents
        unit_id = parents[0] if parents else None
    nodes: dict[str, dict] = {}
    roots: list[dict] = []
    for top in ranked_final(run, count):
        child, unit_id = None, top.id
        while unit_id in born:
            if unit_id in nodes:
                if child is not None:
                    nodes[unit_id]["children"].append(child)
                break
            unit, generation = born[unit_id]
            node = {"id": unit.id, "generation": generation, "operator": unit.operator,
                    "post_operators": list(posts.get(unit.id, ())), "fitness": unit.fitness,
                    "on_best_line": unit.id in on_best_line, "top": False, "children": [child] if child else []}
            nodes[unit_id] = node
            child, unit_id = node, (unit.parents[0] if unit.parents else None)
        else:
            if child is not None:
                roots.append(child)
        nodes[top.id]["top"] = True
    return roots


# --- scores --------------------------------------------------------------------------------------------

def fitness_per_generation(run: RunFiles) -> list[dict]:
    rows = []
    for record in run.generations:
        fitnesses = [u.fitness for u in record.population if u.fitness is not None]
        best = record.best()
        rows.append({"generation": record.generation, "best": best.fitness, "best_unit": best.id,
                     "mean": round(sum(fitnesses) / len(fitnesses), 6) if fitnesses else None,
                     "worst": min(fitnesses, default=None)})
    return rows


def operator_table(run: RunFiles) -> list[dict]:
    """The paper's table: per operator, children made, contests entered, wins and win rate."""
    return [{"operator": name, **row} for name, row in operator_statistics(list(run.generations)).items()]


def held_out_report(run: RunFiles) -> dict:
    """The held-out scores, each with a 95 % Wilson interval, and the winner against every other unit
    scored there (McNemar's exact test on the same items). ``scored`` is False, with ``why``, when
    there are no per-item outcomes to compare."""
    summary = run.ended or {}
    block = summary.get("held_out")
    if run.status == RUNNING:
        return {"scored": False, "why": "the run is still breeding; held-out items are scored at its end"}
    if run.status == INTERRUPTED:
        return {"scored": False, "why": "the run was interrupted before its end, where held-out items are scored"}
    if not block:
        if summary.get("stopped_because", COMPLETED) != COMPLETED:
            why = f"the run stopped early ({summary['stopped_because']}), so nothing more was spent on held-out items"
        elif summary.get("test_items"):
            why = "this run recorded held-out scores but no per-item outcomes, so they cannot be compared"
        else:
            share = run.settings.get("test_split")
            why = ("the run had no held-out items (--test-split 0)" if not share else "the run had no held-out items "
                   f"(its suite is too small for --test-split {share} to keep one back)")
        return {"scored": False, "why": why, "best_fitness": summary.get("best_test_fitness"),
                "initial_best_fitness": summary.get("initial_best_test_fitness"), "items": summary.get("test_items")}
    variants = block["variants"]
    what = "held-out items" if len(variants) == 1 else "held-out answers"
    outcomes = {uid: [c for v in variants for c in unit["correct"][v]] for uid, unit in block["units"].items()}
    units = []
    for uid, unit in block["units"].items():
        accuracy = Accuracy.of(outcomes[uid])
        units.append({"id": uid, "roles": unit["roles"], "fitness": unit["fitness"], "prompts": unit.get("prompts"),
                      "correct": accuracy.correct, "answers": accuracy.n, "accuracy": accuracy.value,
                      "interval": list(accuracy.interval)})
    best = next((u["id"] for u in units if "best" in u["roles"]), None)
    measure = comparison_measure({u["id"]: u["fitness"] for u in units}, outcomes)
    comparisons = []
    for other in (u for u in units if u["id"] != best and best is not None):
        result = compare(outcomes[best], outcomes[other["id"]])
        comparisons.append({"a": best, "b": other["id"], "b_roles": other["roles"], **result.to_dict(),
                            "sentence": result.sentence(what, measure)})
    constant = block.get("constant_answer")
    if constant and best is not None:
        result = compare(outcomes[best], constant["correct"])
        constant = {"answer": constant["answer"], "a": best, **result.to_dict(),
                    "sentence": result.sentence(what, measure)}
    return {"scored": True, "items": len(block["items"]), "variants": variants, "what": what, "units": units,
            "comparisons": comparisons, "constant_answer": constant or None}


def cost(run: RunFiles) -> dict:
    """What the run spent: summary.json's totals; while it runs or once stopped, the last generation's totals
    plus what sessions that have ended spent after it."""
    keys = ("llm_calls", "cache_hits", "prompt_tokens", "completion_tokens", "llm_seconds", "unreadable_answers",
            "cost_usd", "wall_seconds")
    if run.ended:
        return {k: run.ended.get(k) for k in keys}
    carried, carried_wall = run.unrecorded
    if not run.generations and carried == Usage():
        return {k: None for k in keys}
    last = run.generations[-1] if run.generations else None
    usage = ((last.usage if last else Usage()) + carried).to_dict()
    wall = (last.wall_seconds if last else 0.0) + carried_wall
    return {**{k: usage.get(k) for k in keys}, "wall_seconds": round(wall, 3)}


def progress(run: RunFiles) -> str:
    """How far the run got, e.g. "generation 2 of 4 done" (generation 0 is the initial population)."""
    done = run.done_generations
    return (f"generation {done} of {run.asked_generations} done" if done is not None
            else f"no generation written yet, of {run.asked_generations}")


def why_stopped(run: RunFiles) -> str:
    done = run.done_generations
    if run.status == RUNNING:
        return f"still running ({progress(run)})"
    if run.status == INTERRUPTED:
        return (f"interrupted after generation {done}" if done is not None
                else "interrupted before the first generation was written")
    reason = run.summary["stopped_because"]
    return f"completed all {done} generations" if reason == COMPLETED else f"stopped early: {reason}"


def report_data(run: RunFiles) -> dict:
    """Everything ``lpb report`` shows, as plain JSON data."""
    best = winner(run)
    summary = run.ended or {}
    return {
        "run_dir": str(run.path),
        "run_number": run.number,
        "task": run.settings.get("task"),
        "model": run.config.get("model"),
        "status": run.status,
        "why_stopped": why_stopped(run),
        "generations_done": run.done_generations,
        "generations_asked": run.asked_generations,
        "progress": progress(run),
        "population_size": run.settings.get("population_size"),
        "items": {k: summary.get(f"{k}_items") for k in ("train", "validation", "test")},
        "best": None if best is None else {
            "id": best.id, "prompts": dict(best.prompts), "train_fitness": best.fitness,
            "validation_fitness": summary.get("best_validation_fitness"),
            "finals_fitness": summary.get("best_finals_fitness"),
            "held_out_fitness": summary.get("best_test_fitness"), "operator": best.operator, "born": best.born},
        "fitness_per_generation": fitness_per_generation(run),
        "held_out": held_out_report(run),
        "operators": operator_table(run),
        "lineage": lineage(run),
        "top_prompts": top_prompts(run),
        "cost": cost(run),
    }
