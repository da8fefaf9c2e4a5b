"""The ``lpb`` command. Thin: each command builds settings and calls the library."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import shlex
import sys
import time
import traceback
from importlib import resources
from pathlib import Path

import attrs
import click

from lpb_core.errors import BreedError, InputError, PluginError, RunFailed, problems_in
from lpb_core.interrupts import Interrupted
from lpb_core.settings import DEFAULT_LOGGERS, FINALS_ITEMS, MIN_VALIDATION_ITEMS, BreedSettings
from lpb_core.units import COMPLETED, SEED

_DEFAULTS = BreedSettings(task="-", day_care_dir=".")


def default_day_care() -> Path:
    """The example day care that ships with lpb."""
    return Path(str(resources.files("lpb_core.default_day_care")))


def option(name: str, *extra_names: str, **kwargs):
    """An option spelled click's way (--population-size) that also accepts the seed's (--population_size)."""
    dashed = "--" + name.replace("_", "-").lower()
    spellings = [dashed, *extra_names]
    underscored = "--" + name
    if underscored not in spellings:
        spellings.append(underscored)
    if "default" not in kwargs and not kwargs.get("multiple") and not kwargs.get("required") \
            and hasattr(_DEFAULTS, name.lower()):
        kwargs["default"] = getattr(_DEFAULTS, name.lower())
        kwargs.setdefault("show_default", True)
    return click.option(*spellings, name.lower(), **kwargs)


def one_line(message) -> str:
    """A message kept to one line: line breaks from file names or values are shown escaped."""
    return str(message).replace("\r", "\\r").replace("\n", "\\n")


def report_errors(command):
    """Bad input: one line, exit 2. Anything else: one line, exit 1 (the traceback only with --verbose)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (InputError, PluginError) as exc:
            click.echo(f"Error: {one_line(exc)}", err=True)
            sys.exit(2)
        except click.UsageError:  # click prints it on one line and exits 2
            raise
        except KeyboardInterrupt:  # outside a breed (a breed reports its own, with the resume command)
            click.echo("Interrupted.", err=True)
            sys.exit(130)
        except Exception as exc:  # a one-line message is the contract; --verbose shows the rest
            if kwargs.get("verbose"):
                traceback.print_exc()
            click.echo(f"Error: {one_line(exc)}", err=True)
            sys.exit(1)

    return wrapper


_SHOWS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2: `lpb` alone prints the help


@contextlib.contextmanager
def _one_line_usage_errors():
    try:
        yield
    except _SHOWS_HELP:
        raise
    except click.UsageError as exc:
        exc.ctx = None  # click then prints only "Error: <message>", which names the option
        raise


class LpbGroup(click.Group):
    """A mistyped option is bad input like any other: one line naming it, exit 2 (no usage block)."""

    def make_context(self, *args, **kwargs):
        with _one_line_usage_errors():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx):
        with _one_line_usage_errors():
            return super().invoke(ctx)


@click.group(cls=LpbGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="llama-day-care")
def cli():
    """LLaMA Day Care: breed better prompts with PromptBreeder on LMQL."""


def csv_names(ctx, param, value):
    return tuple(n.strip() for n in value.split(",") if n.strip()) if value else None


@cli.command()
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
        resume = resume_command(attrs.evolve(settings, continue_run_number=failed.run_number))
        raise BreedError(f"{failed.reason}; the run is saved: resume with {resume}") from failed
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
    held_out = summary.get("held_out") or {}
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


# Which of a task's items `lpb eval` scores, as a breed with the same seed and splits divides them.
ITEM_SETS = ("test", "validation", "train", "all")


@cli.command(name="eval")
@option("task", default=None, help="Task folder inside the day care (default: the --run's task).")
@option("day_care_dir", type=click.Path(path_type=Path), default=None, show_default="the built-in example",
        help="Day care folder.")
@click.option("--prompt", "prompt_texts", multiple=True, help="A prompt to score (repeatable). The first prompt, "
              "taken in this order: --prompt, --prompts-file, --run, is the baseline every other one is compared with.")
@click.option("--prompts-file", "prompts_files", type=click.Path(path_type=Path), multiple=True,
              help="(Repeatable) JSON list of prompts (strings, or objects of prompt fields), or what `lpb best --format json` "
                   "prints.")
@click.option("--run", "run_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="A run directory: score its winner, best initial unit and seeded prompts, with its settings.")
@click.option("--items", type=click.Choice(ITEM_SETS), default="test", show_default=True,
              help="Which of the task's items, as a breed with the same seed and splits divides them.")
@click.option("--suite", type=click.Path(path_type=Path), default=None,
              help="Score on every item of this suite file instead (new data).")
@option("model_name_or_path", default=None, show_default="smollm2, or the --run's model", help="Model to score with.")
@option("seed", type=int, default=None, show_default="0, or the --run's", help="Seed that fixed the split.")
@option("test_split", type=click.FloatRange(0, 0.9), default=None, help="As for lpb breed.")
@option("validation_split", type=click.FloatRange(0, 0.9), default=None, help="As for lpb breed.")
@option("test_suite", type=click.Path(path_type=Path), default=None, help="As for lpb breed.")
@option("fitness_test_suite", type=click.Path(path_type=Path), default=None, help="As for lpb breed.")
@option("decoder_options_override", default=None, help="As for lpb breed.")
@option("test_CoT", is_flag=True, default=None, help="Score with reasoning before the answer.")
@option("test_noCoT", "--test-no-cot", is_flag=True, default=None, help="Score the direct answer.")
@option("n_threads", type=click.IntRange(1), default=None, help="llama.cpp threads.")
@option("endpoint", multiple=True, help="host:port of an `lpb serve` model server (repeatable).")
@option("api_base", default=None, help="As for lpb breed.")
@option("tokenizer", default=None, help="As for lpb breed.")
@option("max_retries", type=click.IntRange(0), default=None, help="As for lpb breed.")
@option("request_timeout", type=click.FloatRange(0, min_open=True), default=None, help="As for lpb breed.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with every item's answer and outcome).")
@option("verbose", "-v", is_flag=True, default=False, help="Tracebacks on errors.")
def eval_command(**options):
    """Score prompts on a task's held-out items, with a 95 % interval and paired comparisons."""
    _eval(**options)


@report_errors
def _eval(task, day_care_dir, prompt_texts, prompts_files, run_dir, items, suite, as_json, verbose, test_cot,
          test_nocot, endpoint, **options):
    from lpb_core import files
    from lpb_core.daycare import load_day_care
    from lpb_core.evaluate import evaluate, prompt_units, run_units, settings_of_run

    given = (("--suite", suite), ("--test-suite", options.get("test_suite")),
             ("--fitness-test-suite", options.get("fitness_test_suite")), *(("--prompts-file", p) for p in prompts_files))
    missing = [error for error in (files.missing_file(path, option) for option, path in given) if error]
    if missing:
        raise missing[0]
    changes = {k: v for k, v in options.items() if v is not None}
    changes.update(test_cot=test_cot, test_no_cot=test_nocot, endpoints=endpoint or None, task=task,
                   day_care_dir=day_care_dir)
    if run_dir is not None:
        settings = settings_of_run(run_dir, **changes)
    elif task is None:
        raise click.UsageError("give --task (or --run)")
    else:
        changes["day_care_dir"] = day_care_dir or default_day_care()
        settings = BreedSettings(**{k: v for k, v in changes.items() if v is not None})
    field = load_day_care(settings.day_care_dir).for_task(settings.task).breeder.prompt_fields[0]
    candidates = prompt_units(prompt_texts, field, "--prompt", "command line", "--prompt")
    for prompts_file in prompts_files:
        listed = files.read_json(prompts_file)
        listed = [listed] if isinstance(listed, dict) and "prompts" in listed else listed  # lpb best --format json
        if not isinstance(listed, list) or not listed:
            raise InputError(prompts_file, "expected a JSON list of prompts (or lpb best's JSON)", "$")
        candidates += prompt_units(listed, field, prompts_file.name, str(prompts_file), "$")
    if run_dir is not None:
        candidates += run_units(run_dir)
    said = []

    def warn(warning: str) -> None:
        click.echo(f"Warning: {warning}", err=True)
        said.append(warning)

    result = evaluate(settings, candidates, items, suite, progress=None if as_json else eval_progress(), warn=warn)
    for warning in result["warnings"][len(said):]:  # those only scoring could tell (failed calls)
        warn(warning)
    if as_json:
        click.echo(json.dumps(result, indent=2, ensure_ascii=False))
        return
    which = f"all {result['item_count']}" if result["items"] == "all" else f"{result['item_count']} {result['items']}"
    click.echo(f"{len(result['prompts'])} prompt(s) on {which} items of task {result['task']!r}, {result['model']}:")
    for number, row in enumerate(result["prompts"], 1):
        low, high = row["interval_95"]
        text = " | ".join(row["prompts"].values())
        extra = f" + {row['context']} example{'s' * (row['context'] != 1)}" if row["context"] else ""
        click.echo(f"  {number}. {row['accuracy']:.3f} [{low:.3f}, {high:.3f}]  {row['label']}{extra}: {text}")
        if row["unreadable"]:  # a prompt the model answers off-format looks merely bad without this
            click.echo(f"     {row['unreadable']} of {len(row['answers'])} answers were unreadable to the scorer "
                       "(scored as wrong; --json lists every answer)")
    for number, comparison in enumerate(result["comparisons"], 2):
        click.echo(f"  {number} vs 1: {comparison['sentence']}")
    constant = result.get("constant_answer")
    if constant:
        at_most = [str(n) for n, row in enumerate(result["prompts"], 1) if row["accuracy"] <= constant["accuracy"]]
        click.echo(f"  Answering {constant['answer']!r} every time scores {constant['accuracy']:.3f} on these items"
                   + (f"; no better: {', '.join(at_most)}" if at_most else ""))


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


def eval_progress():
    """A line on stderr as each prompt is scored: against a slow server, minutes pass before the table."""
    started = time.monotonic()

    def tell(unit, items: int, done: int, total: int) -> None:
        click.echo(f"  scored {done}/{total} prompts on {items} items, {time.monotonic() - started:.0f}s", err=True)

    return tell


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


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--disable-plugin", "-p", multiple=True, help="Plugin name to leave out.")
def plugins(as_json, disable_plugin):
    """List installed plugins and the names each registers."""
    _plugins(as_json, disable_plugin)


@report_errors
def _plugins(as_json, disable_plugin):
    """Broken plugins are listed with what is wrong, and make the exit code 2."""
    from lpb_core.plugins import describe, load_plugins

    rows = describe(load_plugins(disable_plugin, strict=False))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        for row in rows:
            source = f"{row['distribution']} {row['version']}" if row["distribution"] else "not from a distribution"
            click.echo(f"{row['name']} ({source}){'' if row['ok'] else ' BROKEN'}")
            for kind, names in row["registers"].items():
                click.echo(f"  {kind}: {', '.join(names)}")
            if not row["registers"] and row["hooks"]:
                click.echo(f"  hooks: {', '.join(row['hooks'])}")
            for problem in row["problems"]:
                click.echo(f"  broken: {problem}")
    if not all(row["ok"] for row in rows):
        sys.exit(2)


@cli.command()
@click.argument("day_care_dir", type=click.Path(path_type=Path), required=False)
@click.option("--task", default=None, help="Check only this task (default: every task).")
@click.option("--fitness-test-suite", "--fitness_test_suite", type=click.Path(path_type=Path), default=None)
@click.option("--operators", default=None, callback=csv_names, help="Operators that must be usable.")
@click.option("--disable-plugin", "-p", multiple=True)
@option("selection_strategy", help="Selection strategy the breed will use.")
@option("similarity_filter", help="Near-duplicate filter the breed will use.")
@option("logger", multiple=True, help="Extra logger the breed will enable (repeatable).")
def validate(day_care_dir, task, fitness_test_suite, operators, disable_plugin, selection_strategy, similarity_filter,
             logger):
    """Check a day care folder: every file against its schema, and the files against each other; and the plugins
    and options a breed would use."""
    _validate(day_care_dir or default_day_care(), task, fitness_test_suite, operators, disable_plugin,
              dict(selection_strategy=selection_strategy, similarity_filter=similarity_filter,
                   loggers=(*DEFAULT_LOGGERS, *logger)))


@report_errors
def _validate(day_care_dir, task, fitness_test_suite, operators, disable_plugin, breed_options):
    from lpb_core.daycare import load_day_care
    from lpb_core.run import prepare

    problems: list[Exception] = []
    try:
        tasks = [task] if task else load_day_care(day_care_dir, keep_going=True).task_names()
    except InputError as exc:
        tasks, problems = [], problems_in(exc)
    if not tasks and not problems:
        problems.append(InputError(day_care_dir, "no task folder with a task_description.json"))
    warnings = []
    for name in tasks:
        try:
            warnings += prepare(BreedSettings(task=name, day_care_dir=day_care_dir, fitness_test_suite=fitness_test_suite,
                                              operators=operators, disabled_plugins=disable_plugin,
                                              **breed_options)).warnings
        except (InputError, PluginError) as exc:
            problems.extend(problems_in(exc))
    for warning in warnings:
        click.echo(f"Warning: {warning}", err=True)
    if problems:
        for problem in dict.fromkeys(map(one_line, problems)):
            click.echo(f"Error: {problem}", err=True)
        sys.exit(2)
    click.echo(f"ok: {day_care_dir} ({', '.join(tasks)})")


def add_plugin_commands() -> None:
    """Let plugins add subcommands (like `lpb serve`); a broken plugin must not hide the built-in commands,
    so `lpb plugins` and `lpb validate` can still say what is wrong. A plugin whose command hook fails is
    reported here; one that cannot be loaded, by the commands that need plugins."""
    from lpb_core.plugins import get_plugin_manager

    manager = get_plugin_manager()
    before = {name: len(found) for name, found in manager.problems.items()}
    manager.call_registration("lpb_register_commands", cli=cli)
    for name, found in manager.problems.items():
        for problem in found[before.get(name, 0):]:
            click.echo(f"Warning: {problem}", err=True)


def quiet_shutdown_noise() -> None:
    """Without --verbose, for the whole process: no asyncio error logs and no unraisable-exception reports. What
    they show is what LMQL's and aiohttp's background tasks leave behind when a run ends or fails ("Task was
    destroyed but it is pending!", a coroutine that ignored GeneratorExit): nothing a user can act on, printed
    after the one line that says what happened. lpb's own errors reach the user through that line."""
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    sys.unraisablehook = lambda unraisable: None


def main():
    if not {"--verbose", "-v"} & set(sys.argv):
        quiet_shutdown_noise()
    add_plugin_commands()
    cli(prog_name="lpb")
