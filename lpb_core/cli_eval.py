"""``lpb eval``: score prompts on a task's items, with intervals and paired comparisons."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from lpb_core.cli_common import default_day_care, option, report_errors
from lpb_core.errors import InputError
from lpb_core.settings import BreedSettings


# Which of a task's items `lpb eval` scores, as a breed with the same seed and splits divides them.
ITEM_SETS = ("test", "validation", "train", "all")


@click.command(name="eval")
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
    if result["measure"]:  # a breed reports the scorer's fitness (F1, partial credit): say which figure is which
        click.echo("  accuracy (share of right answers) with its 95 % interval, then the scorer's fitness, which a "
                   "breed reports")
    for number, row in enumerate(result["prompts"], 1):
        low, high = row["interval_95"]
        text = " | ".join(row["prompts"].values())
        extra = f" + {row['context']} example{'s' * (row['context'] != 1)}" if row["context"] else ""
        fitness = f" fitness {row['fitness']:.3f}" if result["measure"] else ""
        click.echo(f"  {number}. {row['accuracy']:.3f} [{low:.3f}, {high:.3f}]{fitness}  {row['label']}{extra}: {text}")
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



def eval_progress():
    """A line on stderr as each prompt is scored: against a slow server, minutes pass before the table."""
    started = time.monotonic()

    def tell(unit, items: int, done: int, total: int) -> None:
        click.echo(f"  scored {done}/{total} prompts on {items} items, {time.monotonic() - started:.0f}s", err=True)

    return tell

