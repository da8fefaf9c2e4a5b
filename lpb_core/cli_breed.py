"""``lpb breed``: its options, the settings they make, the resume command, and what it prints at the end."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import attrs
import click

from lpb_core.cli_common import csv_names, default_day_care, option, report_errors
from lpb_core.errors import BreedError, BudgetTooSmall, RunFailed
from lpb_core.interrupts import Interrupted
from lpb_core.settings import DEFAULT_LOGGERS, FINALS_ITEMS, MIN_VALIDATION_ITEMS, BreedSettings
from lpb_core.units import COMPLETED, SEED


@click.command()
@option("model_name_or_path", help="Model: smollm2 (embedded), a .gguf path, openai/<model> (OpenAI, or a server "
        "with --api-base), or random.")
@option("day_care_dir", type=click.Path(path_type=Path), default=None, show_default="the built-in example",
        help="Day care folder (breeder.lmql, mutation_prompts.json, thinking_styles.json, <task>/).")
@option("task", required=True, help="Task folder inside the day care to breed prompts for.")
@option("decoder_options_override", help="LMQL decoder for all queries, e.g. 'argmax'; replaces the task's.")
@option("fitness_test_suite", type=click.Path(path_type=Path), default=None,
        show_default="<task>/fitness_test_suite.json", help="Fitness suite: items with template fields and gold_<task>.")
@option("is_async", is_flag=True, help="Run up to --client-batch-size queries concurrently.")
@option("client_batch_size", type=click.IntRange(1), help="Concurrent queries when --is-async.")
@option("server_batch_size", type=click.IntRange(1), show_default="16 for in-process llama.cpp",
        help="Queries the in-process model decodes together in one batch (more wait for a free place); a served "
             "model's is set by lpb serve --server-batch-size.")
@option("population_size", type=click.IntRange(2), help="Units in the population.")
@option("initial_prompts_per_unit", type=click.IntRange(1),
        help="Candidate prompts generated per unit at start; the unit keeps the fittest.")
@option("evolution_generations", type=click.IntRange(0), help="Generations of tournaments.")
@option("num_eda_samples", type=click.IntRange(1), help="Prompts shown to EDA and lineage mutations.")
@option("num_lamarckian_reasonings", type=click.IntRange(1), help="Correct workings shown to Lamarckian mutation.")
@option("chunk_size", type=click.IntRange(1), default=None, help="Tokens LMQL generates speculatively per call.")
@option("test_CoT", is_flag=True, help="Score prompts with reasoning before the answer.")
@option("test_noCoT", "--test-no-cot", is_flag=True, help="Score prompts on the direct answer (the default).")
@option("verbose", "-v", is_flag=True, help="Print every mutation; tracebacks on errors.")
@option("seed", type=int, help="Random seed; the same seed gives the same run.")
@option("continue_run_number", type=click.IntRange(0), default=None,
        help="Resume RUN_<n> after its last generation, with the run's own settings for every option not given.")
@option("debug_mode", is_flag=True, help="Cycle through every operator in turn; write to <task>/DEBUG.")
@option("use_wandb", is_flag=True, help="Log to Weights & Biases (pip install 'llama-day-care[wandb]').")
@option("wandb_project", help="Weights & Biases project.")
@option("selection_strategy", help="Registered selection strategy (see lpb plugins).")
@option("similarity_filter", help="Registered near-duplicate filter for the EDA operators.")
@option("operators", default=None, callback=csv_names, help="Comma-separated operators to use (default: all).")
@option("disable_plugin", "-p", multiple=True, help="Plugin name to leave out of this run (repeatable).")
@option("logger", multiple=True, help="Extra logger to enable by name (repeatable), beside the console's progress "
        "(unless --quiet) and events.jsonl.")
@option("fitness_batch_size", type=click.IntRange(0), help="Training items per fitness evaluation (0: all).")
@option("test_split", type=click.FloatRange(0, 0.9), help="Share of the suite held out for the final test score.")
@option("n_threads", type=click.IntRange(1), default=None, show_default="every core this process may use",
        help="llama.cpp threads for local GGUF models.")
@option("endpoint", multiple=True,
        help="host:port of an `lpb serve` model server (repeatable; queries are spread over them).")
@option("test_suite", type=click.Path(path_type=Path), default=None,
        help="Held-out test items in their own file (instead of --test-split).")
@option("max_llm_calls", type=click.IntRange(1), default=None, help="Stop after this many model calls (resumable).")
@option("max_tokens", type=click.IntRange(1), default=None, help="Stop after this many prompt + completion tokens.")
@option("max_cost", type=click.FloatRange(0, min_open=True), default=None,
        help="Stop once the estimated spend reaches this many US dollars (hosted models with known prices).")
@option("initial_prompt", multiple=True,
        help="Your own prompt, put into generation 0 beside the generated ones (repeatable).")
@click.option("--task-description-unit/--no-task-description-unit", default=True, show_default=True,
              help="Put the task description itself into generation 0 as one unit's prompt.")
@option("mutation_model", default=None, show_default="the model being optimised",
        help="Model that writes the prompts (same forms as --model-name-or-path).")
@option("validation_split", type=click.FloatRange(0, 0.9),
        help=f"Share of the training items kept back from the search, but at least {MIN_VALIDATION_ITEMS} items "
             f"(half of them when there are fewer than {2 * MIN_VALIDATION_ITEMS}); the finalists are compared on "
             f"them pooled with training items (up to {FINALS_ITEMS} items in all); a bred prompt beats your "
             "--initial-prompt ones only by scoring higher on them alone. 0: the last generation's fittest wins.")
@option("finalists", type=click.IntRange(1),
        help="Fittest units of the last generation compared on the validation and training items (with the "
             "best initial unit and your own prompts).")
@option("api_base", default=None, show_default="$OPENAI_BASE_URL, else OpenAI",
        help="Base URL of an OpenAI-compatible server (vLLM, llama.cpp, Ollama, ...) for openai/<model>.")
@option("tokenizer", default=None, help="The served model's tokenizer: a .gguf file or a Hugging Face tokenizer folder.")
@option("max_retries", type=click.IntRange(0), help="Retries of a request after a timeout, lost connection, 429 or 5xx.")
@option("request_timeout", type=click.FloatRange(0, min_open=True), help="Seconds one model request may take.")
@click.option("--cache/--no-cache", default=True, show_default=True,
              help="Reuse results of deterministic queries, kept in the run directory.")
@click.option("--quiet", "-q", is_flag=True, help="No progress on stderr (events.jsonl is still written).")
def breed(**options):
    """Breed prompts for a task and print the best one."""
    context = click.get_current_context()
    given = {name for name in options if context.get_parameter_source(name) not in
             (click.core.ParameterSource.DEFAULT, click.core.ParameterSource.DEFAULT_MAP)}
    _breed(given, **options)


# Options of `lpb breed` whose settings field has another name (every other option is named as its field).
_FIELD_OF_OPTION = {"disable_plugin": "disabled_plugins", "logger": "loggers", "test_nocot": "test_no_cot",
                    "endpoint": "endpoints", "initial_prompt": "initial_prompts"}


def settings_from_options(**options) -> BreedSettings:
    """The settings `lpb breed` runs with, from its parsed options."""
    quiet = options.pop("quiet", False)
    fields = {_FIELD_OF_OPTION.get(k, k): v for k, v in options.items() if v is not None}
    fields["loggers"] = (*DEFAULT_LOGGERS[quiet:], *fields.get("loggers", ()))
    fields.setdefault("day_care_dir", default_day_care())
    return BreedSettings(**fields)


def resume_command(settings: BreedSettings) -> str:
    """The `lpb breed` command line that gives exactly these settings (options left at their defaults are left out)."""
    words = ["lpb", "breed"]
    # --continue-run-number last, where a reader looks for it
    for param in sorted(breed.params, key=lambda p: p.name == "continue_run_number"):
        if param.name == "quiet":  # progress is for the person at the terminal, not part of the run
            continue
        field = _FIELD_OF_OPTION.get(param.name, param.name)
        value = getattr(settings, field)
        if field == "loggers":
            value = tuple(v for v in value if v not in DEFAULT_LOGGERS)
        if field == "day_care_dir" and value == default_day_care():
            continue
        if isinstance(value, tuple) and not param.multiple:  # comma-separated, like --operators
            value = ",".join(value)
        default = param.default() if callable(param.default) else param.default
        if value in (default, None, (), "") or (param.is_flag and not value and not param.secondary_opts):
            continue
        if param.is_flag:
            words.append(param.opts[0] if value else param.secondary_opts[0])
        elif param.multiple:
            words += [w for v in value for w in (param.opts[0], str(v))]
        else:
            words += [param.opts[0], str(value)]
    return shlex.join(words)


def with_run_settings(settings: BreedSettings, given: set[str]) -> BreedSettings:
    """For --continue-run-number: each setting not given on the command line as the run was made with, so
    ``lpb breed --task T --continue-run-number N`` alone resumes RUN_N. What a resume may change (budgets,
    threads...) stays as given or defaulted, except what the run was asked for: its number of generations, its
    loggers and W&B project (console output follows --quiet as given)."""
    from lpb_core.rundir import RunDirectory, run_path
    from lpb_core.settings import RESUMABLE_CHANGES

    number = settings.continue_run_number
    run = RunDirectory(run_path(Path(settings.day_care_dir) / settings.task, number), number)
    if not run.config_path.is_file():
        return settings  # the breed says there is no such run
    saved = run.read_config().get("settings", {})
    given_fields = {_FIELD_OF_OPTION.get(name, name) for name in given}
    kept = {k: v for k, v in BreedSettings.known(saved).items() if k not in given_fields
            and (k not in RESUMABLE_CHANGES or k in ("evolution_generations", "use_wandb", "wandb_project"))}
    if "loggers" not in given_fields:
        kept["loggers"] = tuple(dict.fromkeys([*settings.loggers, *(name for name in saved.get("loggers", ())
                                                                   if name not in DEFAULT_LOGGERS)]))
    return attrs.evolve(settings, **kept)


@report_errors
def _breed(given, **options):
    from lpb_core.run import breed as run_breed

    settings = settings_from_options(**options)
    if settings.continue_run_number is not None:
        settings = with_run_settings(settings, given)
    try:
        summary = run_breed(settings)
    except Interrupted as stop:
        click.echo(interrupted_message(stop, settings), err=True)
        sys.exit(stop.exit_code)
    except RunFailed as failed:
        if failed.run_number is None:  # --debug-mode: nothing to resume
            raise
        if getattr(failed.cause, "hook", None) == "lpb_run_finished":  # summary.json is written: nothing to resume
            raise BreedError(f"{failed.reason}; the run itself finished: {failed.run_dir}") from failed
        resumed = attrs.evolve(settings, continue_run_number=failed.run_number)
        if isinstance(failed.cause, BudgetTooSmall):  # the same budget would stop it at the same place
            resume = resume_command(attrs.evolve(resumed, max_llm_calls=None, max_tokens=None, max_cost=None))
            raise BreedError(f"{failed.reason}; the run is saved: resume with a larger budget (or none), "
                             f"{resume}") from failed
        raise BreedError(f"{failed.reason}; the run is saved: resume with {resume_command(resumed)}") from failed
    if "console" not in settings.loggers:  # --quiet drops the progress, not what may be wrong with the data
        from lpb_core.rundir import RunDirectory

        for warning in RunDirectory(Path(summary["run_dir"]), None).read_config().get("warnings", ()):
            click.echo(f"Warning: {warning}", err=True)
    best = summary["best_unit"]
    click.echo(f"\nBest prompt ({best['id']}, born in generation {best['born']} by {best['operator']}):")
    for field, text in best["prompts"].items():
        click.echo(f"  {field}: {text}")
    click.echo(f"Fitness: {fitness_line(summary)}")
    for line in seeds_ahead_on_validation(summary):
        click.echo(f"  {line}")
    if summary["stopped_because"] == COMPLETED and not summary.get("test_items"):
        why = "--test-split 0" if not settings.test_split else \
            f"the suite is too small for --test-split {settings.test_split} to keep one back"
        click.echo(f"  Not scored on held-out items ({why}): nothing here shows how it does on items it was not "
                   "chosen on.")
    held_out = summary.get("held_out") or {}
    # Answers the scorer cannot read look like a merely bad prompt without this line (a template whose labels
    # differ from the scorer's makes every answer unreadable).
    unreadable = (held_out.get("units", {}).get(best["id"]) or {}).get("unreadable")
    if unreadable:
        answers = sum(len(c) for c in held_out["units"][best["id"]]["correct"].values())
        click.echo(f"  {unreadable} of its {answers} held-out answers were unreadable to the scorer (scored as wrong; "
                   f"lpb eval --run {shlex.quote(summary['run_dir'])} --json lists them)")
    for comparison in held_out.get("comparisons", []):
        against = " and ".join(role.replace("_", " ") for role in comparison["b_roles"])
        click.echo(f"  against the {against} ({comparison['b']}): {comparison['sentence']}")
    constant = held_out.get("constant_answer")
    if constant:
        click.echo(f"  against answering {constant['answer']!r} every time: {constant['comparison']['sentence']}")
        if constant["comparison"]["verdict"] != "better":
            seeded = any(SEED in unit["roles"] for unit in held_out.get("units", {}).values())
            advice = ("Try other prompts of your own (lpb eval compares them first)" if seeded else
                      "Seed the breed with prompts of your own (--initial-prompt; lpb eval compares them first)")
            click.echo(f"  Not shown to beat that: the model may not be following these prompts. {advice}, breed "
                       "longer, or try a larger model.")
    if summary["stopped_because"] != COMPLETED:
        click.echo(f"Stopped early ({summary['stopped_because']}) after generation {summary['generations_completed']};"
                   " raise the budget and add --continue-run-number to go on.")
    click.echo(f"Run directory: {summary['run_dir']}")
    click.echo(f"See the run: lpb report {shlex.quote(summary['run_dir'])}")


def interrupted_message(stop: Interrupted, settings: BreedSettings) -> str:
    if stop.run_number is not None:
        return (f"Interrupted by {stop.signal_name}; the run is saved in {stop.run_dir}. Resume with:"
                f"\n  {resume_command(attrs.evolve(settings, continue_run_number=stop.run_number))}")
    why = "debug runs are not resumed" if stop.run_dir is not None else "no run had started"
    return (f"Interrupted by {stop.signal_name}; {why}. Start again with:\n"
            f"  {resume_command(attrs.evolve(settings, continue_run_number=None))}")



def fitness_line(summary: dict) -> str:
    """Training, validation and held-out fitness of the winner, as far as they were measured."""
    parts = [f"{summary['best_train_fitness']:.3f} on a training minibatch"]
    if summary.get("best_finals_fitness") is not None:
        parts.append(f"{summary['best_finals_fitness']:.3f} on {summary['finals_items']}"
                     f" training and validation items ({summary['best_validation_fitness']:.3f} on the "
                     f"{summary['validation_items']} validation items)")
    if summary.get("best_test_fitness") is not None:
        parts.append(f"{summary['best_test_fitness']:.3f} on {summary['test_items']} held-out items")
    return ", ".join(parts)



def seeds_ahead_on_validation(summary: dict) -> list[str]:
    """A line for each of the user's prompts that beat the winner on the validation items alone. Only another of
    the user's prompts can be that winner (``finals.eligible``); those are compared on the validation items
    pooled with training items, which tell them apart better (benchmarks/README.md)."""
    won, lines = summary.get("best_validation_fitness"), []
    for finalist in summary.get("finalists") or ():
        if (finalist["operator"] == SEED and won is not None and finalist["validation_fitness"] is not None
                and finalist["validation_fitness"] > won):
            lines.append(f"your prompt {finalist['id']} scored higher on the {summary['validation_items']} validation "
                         f"items alone ({finalist['validation_fitness']:.3f} vs {won:.3f}); the winner leads on all "
                         f"{summary['finals_items']} items the final compares ({summary['best_finals_fitness']:.3f} "
                         f"vs {finalist['finals_fitness']:.3f})")
    return lines

