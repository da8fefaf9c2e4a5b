"""Built-in loggers: ``console`` (progress on stderr, on by default) and ``wandb`` (``--use-wandb``)."""

from __future__ import annotations

import sys

import click

from lpb_core.errors import InputError
from lpb_core.hookspecs import hookimpl


def short(text: str, width: int = 90) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


class ConsoleLogger:
    """Progress a person can follow: a line per generation, a live counter while units are scored."""

    name = "console"

    def __init__(self, settings):
        self.verbose = settings.verbose
        self.live = sys.stderr.isatty()

    def say(self, text: str) -> None:
        click.echo(text, err=True)

    @hookimpl
    def lpb_run_started(self, event):
        settings = event.config["settings"]
        if event.resumed_after is not None:
            self.say(f"Resuming {event.run_dir} after generation {event.resumed_after}")
        self.say(f"Breeding task {settings['task']!r} on {event.config['model']}: population {event.population_size}, "
                 f"{event.total_generations} generations, run directory {event.run_dir}")
        for name, why in event.config.get("disabled_operators", {}).items():
            self.say(f"  operator {name} is off: {why}")
        for name, dropped in event.config.get("unenforced_constraints", {}).items():
            self.say(f"  {name}: the model cannot enforce {' and '.join(dropped)}; the answer is generated short "
                     "and read by the scorer")

    @hookimpl
    def lpb_unit_evaluated(self, event):
        line = (f"  generation {event.generation}: scored {event.done}/{event.total} units on {event.items} items "
                f"(last {event.unit.id}: {event.unit.fitness:.3f})")
        if self.live:
            click.echo("\r" + line, err=True, nl=event.done == event.total)
        elif self.verbose:
            self.say(line)

    @hookimpl
    def lpb_mutation_applied(self, event):
        if self.verbose:
            field = next(iter(event.child.prompts), None)
            self.say(f"  {event.child.id} <- {event.parent.id} by {event.operator} "
                     f"(replaces {event.replaced}): {short(event.child.prompts.get(field, ''))}")

    @hookimpl
    def lpb_generation_finished(self, event):
        record, best = event.record, event.record.best()
        fitnesses = [u.fitness for u in record.population]
        self.say(f"generation {record.generation}/{event.total_generations}: best {best.fitness:.3f} "
                 f"mean {sum(fitnesses) / len(fitnesses):.3f} ({best.id}) | {record.usage.llm_calls} LLM calls, "
                 f"{record.wall_seconds:.1f}s")


class WandbLogger:
    """Weights & Biases: the config at start, fitness per generation, the summary at the end."""

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
        self.run = self.wandb.init(project=self.project, config=event.config, name=event.run_dir.name,
                                   resume="allow")

    @hookimpl
    def lpb_generation_finished(self, event):
        record = event.record
        fitnesses = [u.fitness for u in record.population]
        self.run.log({"generation": record.generation, "best_fitness": max(fitnesses),
                      "mean_fitness": sum(fitnesses) / len(fitnesses), "llm_calls": record.usage.llm_calls,
                      "prompt_tokens": record.usage.prompt_tokens,
                      "completion_tokens": record.usage.completion_tokens}, step=record.generation)

    @hookimpl
    def lpb_run_finished(self, event):
        for key in ("best_train_fitness", "best_test_fitness", "initial_best_test_fitness", "wall_seconds"):
            self.run.summary[key] = event.summary.get(key)
        self.run.finish()


@hookimpl
def lpb_register_loggers(register):
    register(ConsoleLogger)
    register(WandbLogger)
