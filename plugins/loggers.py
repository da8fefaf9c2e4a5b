"""Built-in loggers: ``console`` (progress on stderr), ``events`` (events.jsonl in the run directory; both on by
default) and ``wandb`` (``--use-wandb``)."""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime, timezone

import attrs
import click

from lpb_core import files
from lpb_core.events import FINAL, GENERATION, HELD_OUT
from lpb_core.constraints import unenforced
from lpb_core.errors import InputError
from lpb_core.hookspecs import hookimpl
from lpb_core.rundir import EVENTS_FILE

WANDB_FILE = "wandb.json"  # the W&B run id, so a resumed breed logs into the same W&B run


def short(text: str, width: int = 90) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


@attrs.define
class GenerationProgress:
    """Units scored so far in one generation. The total grows when the children's batch starts, because
    how many children a generation has is known only once its contests are drawn."""

    generation: int
    stage: str = GENERATION
    started: float = attrs.field(factory=time.monotonic)
    total: int = 0
    done: int = 0
    fitness: dict = attrs.field(factory=dict)  # unit id -> fitness on this generation's minibatch
    last_line: float = attrs.field(factory=time.monotonic)

    def scored(self, event) -> None:
        if event.done == 1:  # the first unit of a new batch of work
            self.total += event.total
        self.done += 1
        self.fitness[event.unit.id] = event.unit.fitness

    def so_far(self) -> str:
        values = [f for f in self.fitness.values() if f is not None]
        if not values or self.stage != GENERATION:  # the final mixes item sets: no one best or mean
            return ""
        return f"best {max(values):.3f} mean {sum(values) / len(values):.3f}"

    def label(self, total_generations: int) -> str:
        return {FINAL: "choosing the winner", HELD_OUT: "held-out test"}.get(
            self.stage, f"generation {self.generation}/{total_generations}")


class ConsoleLogger:
    """Progress a person can follow. In a terminal: a bar per generation (units scored, elapsed, ETA, best and
    mean so far). In a pipe or CI log: a line per generation, and a line every ``heartbeat_seconds`` within
    a long one."""

    name = "console"
    heartbeat_seconds = 30.0

    def __init__(self, settings):
        self.verbose = settings.verbose
        self.live = sys.stderr.isatty()
        self.progress: GenerationProgress | None = None
        self.bar = None  # tqdm bar of the generation being scored, in a terminal
        self.total_generations = settings.evolution_generations

    def say(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)  # above the bar, which is redrawn below
        else:
            click.echo(text, err=True)

    def close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    @hookimpl
    def lpb_run_started(self, event):
        settings = event.config["settings"]
        self.total_generations = event.total_generations
        if event.resumed_after is not None:
            done = event.resumed_after >= event.total_generations
            self.say(f"Resuming {event.run_dir} after generation {event.resumed_after}" +
                     (f": all {event.total_generations} generations are done, so only the final is made (again); "
                      "raise --evolution-generations to breed on" if done else ""))
        generations = f"{event.total_generations} generation{'s' * (event.total_generations != 1)}"
        writer = event.config.get("mutation_model")
        writer = f", prompts written by {writer}" if writer and writer != event.config["model"] else ""
        self.say(f"Breeding task {settings['task']!r} on {event.config['model']}{writer}: population "
                 f"{event.population_size}, {generations}, run directory {event.run_dir}")
        for name, why in event.config.get("disabled_operators", {}).items():
            self.say(f"  operator {name} is off: {why}")
        for warning in event.config.get("warnings", ()):
            self.say(f"  warning: {warning}")
        for name, dropped in event.config.get("unenforced_constraints", {}).items():
            self.say(f"  {unenforced(name, dropped)}")

    @hookimpl
    def lpb_unit_evaluated(self, event):
        if self.progress is None or (self.progress.generation, self.progress.stage) != (event.generation, event.stage):
            self.close_bar()
            self.progress = GenerationProgress(event.generation, event.stage)
            if event.stage != GENERATION and not self.live:  # a stage of minutes after the last generation line
                self.say(f"  {self.progress.label(self.total_generations)}: {event.total} "
                         f"evaluation{'s' * (event.total != 1)}...")
        progress = self.progress
        progress.scored(event)
        label = progress.label(self.total_generations)
        if self.live:
            self.update_bar(progress)
        elif self.verbose:
            self.say(f"  {label}: scored {event.done}/{event.total} on {event.items} items "
                     f"(last {event.unit.id}: {event.unit.fitness:.3f})")
        elif time.monotonic() - progress.last_line >= self.heartbeat_seconds:
            progress.last_line = time.monotonic()
            so_far = progress.so_far()
            what = "units" if progress.stage == GENERATION else "evaluations"
            self.say(f"  {label}: {progress.done}/{progress.total} {what} scored, "
                     f"{time.monotonic() - progress.started:.0f}s so far{', ' + so_far if so_far else ''}")

    def update_bar(self, progress: GenerationProgress) -> None:
        from tqdm import tqdm

        if self.bar is None:
            # smoothing=0: the ETA comes from the average rate of the whole generation so far.
            self.bar = tqdm(total=progress.total, desc=progress.label(self.total_generations),
                            unit="unit", file=sys.stderr, leave=False, smoothing=0, dynamic_ncols=True)
        self.bar.set_postfix_str(progress.so_far(), refresh=False)
        if self.bar.total != progress.total:
            # the children's batch began: show the new total now, not at the next timed redraw, which a quick
            # batch may never reach
            self.bar.total = progress.total
            self.bar.refresh()
        self.bar.update(1)

    @hookimpl
    def lpb_mutation_applied(self, event):
        if self.verbose:
            field = next(iter(event.child.prompts), None)
            self.say(f"  {event.child.id} <- {event.parent.id} by {event.operator} "
                     f"(replaces {event.replaced}): {short(event.child.prompts.get(field, ''))}")

    @hookimpl
    def lpb_generation_finished(self, event):
        self.close_bar()
        self.progress = None
        record, best = event.record, event.record.best()
        fitnesses = [u.fitness for u in record.population]
        self.say(f"generation {record.generation}/{event.total_generations}: best {best.fitness:.3f} "
                 f"mean {sum(fitnesses) / len(fitnesses):.3f} ({best.id}) | {record.usage.llm_calls} LLM calls, "
                 f"{record.wall_seconds:.1f}s")

    @hookimpl
    def lpb_run_finished(self, event):
        self.close_bar()


def end_cut_line(path) -> None:
    """A breed killed in the middle of a write can leave the log's last line cut short; a resume then starts on
    a line of its own, so only the cut line is lost (``read_events`` skips it), not the resume's first event."""
    if os.path.exists(path) and os.path.getsize(path):
        with open(path, "rb+") as log:
            log.seek(-1, os.SEEK_END)
            if log.read(1) != b"\n":
                log.write(b"\n")


class EventLog:
    """events.jsonl: one JSON object per event, appended and flushed as it happens, so a run killed at any
    point keeps its history up to its last event; a resumed run appends to it."""

    name = "events"

    def __init__(self, settings):
        self.handle = None

    def write(self, kind: str, **fields) -> None:
        if self.handle is None:
            return
        line = json.dumps({"event": kind, "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                           **fields}, ensure_ascii=False)
        self.handle.write(line + "\n")  # one write of a whole line, then flushed: a kill never splits it
        self.handle.flush()

    @hookimpl
    def lpb_run_started(self, event):
        path = event.run_dir / EVENTS_FILE
        end_cut_line(path)
        self.handle = open(path, "a", encoding="utf-8")
        self.write("run_started", run_dir=str(event.run_dir), resumed_after=event.resumed_after,
                   total_generations=event.total_generations, population_size=event.population_size,
                   model=event.config.get("model"), settings=event.config.get("settings"))

    @hookimpl
    def lpb_unit_evaluated(self, event):
        self.write("unit_evaluated", generation=event.generation, unit=event.unit.id, fitness=event.unit.fitness,
                   scores=dict(event.unit.scores), items=event.items, done=event.done, total=event.total,
                   stage=event.stage)

    @hookimpl
    def lpb_mutation_applied(self, event):
        self.write("mutation_applied", generation=event.generation, operator=event.operator, parent=event.parent.id,
                   child=event.child.id, replaced=event.replaced, fitness=event.child.fitness,
                   prompts=dict(event.child.prompts), mutation_prompt=event.child.mutation_prompt)

    @hookimpl
    def lpb_generation_finished(self, event):
        record = event.record
        fitnesses = [u.fitness for u in record.population if u.fitness is not None]
        self.write("generation_finished", generation=record.generation, best_unit=record.best().id,
                   best=max(fitnesses), mean=round(sum(fitnesses) / len(fitnesses), 6), worst=min(fitnesses),
                   births=len(record.births), usage=record.usage.to_dict(), wall_seconds=round(record.wall_seconds, 3))

    @hookimpl
    def lpb_run_finished(self, event):
        summary = event.summary
        fitness = {k: summary.get(k) for k in ("best_train_fitness", "best_validation_fitness", "best_finals_fitness",
                                            "best_test_fitness")}
        self.write("run_finished", stopped_because=summary["stopped_because"],
                   generations_completed=summary["generations_completed"], best_unit=summary["best_unit"]["id"],
                   **fitness)
        if self.handle is not None:
            self.handle.close()
            self.handle = None


class WandbLogger:
    """Weights & Biases: the config at start, fitness per generation, and at the end the summary, the top
    prompts and the operator table. A resumed breed continues the same W&B run (its id is kept in the
    run directory)."""

    name = "wandb"

    def __init__(self, settings):
        try:
            import wandb
        except ImportError:
            raise InputError("command line", "wandb is not installed; pip install 'llama-day-care[wandb]'",
                             "--use-wandb") from None
        self.wandb, self.project, self.run = wandb, settings.wandb_project, None

    @hookimpl
    def lpb_run_started(self, event):
        id_file = event.run_dir / WANDB_FILE
        run_id = files.read_json(id_file)["run_id"] if id_file.exists() else None
        self.run = self.wandb.init(project=self.project, id=run_id, resume="allow" if run_id else None,
                                   config=event.config, name=f"{event.config['settings']['task']}/{event.run_dir.name}")
        if run_id is None:
            files.write_json_atomic(id_file, {"run_id": self.run.id, "project": self.project})

    @hookimpl
    def lpb_generation_finished(self, event):
        record = event.record
        fitnesses = [u.fitness for u in record.population]
        self.run.log({"generation": record.generation, "best_fitness": max(fitnesses),
                      "mean_fitness": sum(fitnesses) / len(fitnesses), "worst_fitness": min(fitnesses),
                      "llm_calls": record.usage.llm_calls, "prompt_tokens": record.usage.prompt_tokens,
                      "completion_tokens": record.usage.completion_tokens}, step=record.generation)

    @hookimpl
    def lpb_run_finished(self, event):
        from lpb_plugins.run_data import load_run, operator_table, top_prompts

        summary = event.summary
        for key in ("best_train_fitness", "best_validation_fitness", "best_finals_fitness", "best_test_fitness",
                    "initial_best_test_fitness",
                    "stopped_because", "llm_calls", "wall_seconds", "cost_usd"):
            self.run.summary[key] = summary.get(key)
        held_out = summary.get("held_out") or {}
        for comparison in held_out.get("comparisons", []):
            self.run.summary[f"held_out_vs_{'_'.join(comparison['b_roles'])}"] = comparison["sentence"]
        constant = held_out.get("constant_answer")
        if constant:
            self.run.summary["held_out_vs_constant_answer"] = (
                f"{constant['answer']}: {constant['comparison']['sentence']}")
        # This process is the breed, and it has ended: its files are final even while it holds the run's lock.
        run = attrs.evolve(load_run(event.run_dir), running=False)
        columns = ["rank", "id", "prompt", "train_fitness", "validation_fitness", "held_out_fitness", "operator",
                   "born", "mutation_prompt"]
        rows = [[row["rank"], row["id"], "\n".join(row["prompts"].values()), row["train_fitness"],
                 row["validation_fitness"], row["held_out_fitness"], row["operator"], row["born"],
                 row["mutation_prompt"]] for row in top_prompts(run)]
        operators = [[row["operator"], row["children"], row["contests_entered"], row["wins"], row["win_rate"]]
                     for row in operator_table(run)]
        self.run.log({"top_prompts": self.wandb.Table(columns=columns, data=rows),
                      "operators": self.wandb.Table(columns=["operator", "children", "contests_entered", "wins",
                                                             "win_rate"], data=operators)})
        self.run.finish()


@hookimpl
def lpb_register_loggers(register):
    register(ConsoleLogger)
    register(EventLog)
    register(WandbLogger)
