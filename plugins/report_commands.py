"""``lpb report``, ``lpb runs`` and ``lpb best``: looking at runs from their files, added through the plugin hook.

Thin: the data comes from ``run_data``, the pictures and pages from ``report_render``, the pasteable
prompt from ``best_prompt``. Heavy imports (matplotlib, the day care loader) wait until a command runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from lpb_core.hookspecs import hookimpl


def run_dir_argument(run_dir, day_care_dir, task, run_number) -> Path:
    """RUN_DIR, or the run that --day-care-dir, --task and --run-number name."""
    from lpb_plugins.run_data import run_path

    if run_dir is not None:
        if task or run_number is not None:
            raise click.UsageError("give either RUN_DIR or --task and --run-number, not both")
        return run_dir
    if not task or run_number is None:
        raise click.UsageError("give RUN_DIR, or --task and --run-number (with --day-care-dir for your own day care)")
    from lpb_core.cli_common import default_day_care
    from lpb_core.errors import InputError

    path = run_path(day_care_dir or default_day_care(), task, run_number)
    if day_care_dir is None and not path.is_dir():  # most runs are in the user's own day care
        raise InputError("command line", f"the built-in day care ({default_day_care()}) has no {task}/{path.name}: "
                         "give --day-care-dir for a run of your own day care", "--day-care-dir")
    return path


def run_options(command):
    """RUN_DIR, or --day-care-dir/--task/--run-number: the two ways to name a run."""
    command = click.option("--run-number", "--run_number", type=click.IntRange(0), default=None,
                           help="With --task: RUN_<n> of that task.")(command)
    command = click.option("--task", default=None, help="With --run-number: the task folder.")(command)
    command = click.option("--day-care-dir", "--day_care_dir", type=click.Path(path_type=Path, file_okay=False),
                           default=None, help="Day care folder (default: the built-in example).")(command)
    return click.argument("run_dir", type=click.Path(path_type=Path, file_okay=False), required=False)(command)


@hookimpl
def lpb_register_commands(cli):
    from lpb_core.cli_common import report_errors

    @cli.command()
    @run_options
    @click.option("--json", "as_json", is_flag=True, help="Print the report's data as JSON instead of writing files.")
    def report(run_dir, day_care_dir, task, run_number, as_json):
        """Write report.html, report.md and fitness.png into a run directory (finished, stopped or running)."""
        _report(run_dir, day_care_dir, task, run_number, as_json)

    @report_errors
    def _report(run_dir, day_care_dir, task, run_number, as_json):
        from lpb_plugins.run_data import load_run, report_data

        path = run_dir_argument(run_dir, day_care_dir, task, run_number)
        data = report_data(load_run(path))
        if as_json:
            click.echo(json.dumps(data, indent=2, ensure_ascii=False))
            return
        from lpb_plugins.report_render import render

        for written in render(data, path):
            click.echo(str(written))

    @cli.command()
    @click.argument("day_care_dir", type=click.Path(path_type=Path, file_okay=False), required=False)
    @click.option("--task", default=None, help="Only this task's runs.")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    def runs(day_care_dir, task, as_json):
        """Every run with its status, progress, best fitness, model and the command that resumes it."""
        from lpb_core.cli_common import default_day_care

        _runs(day_care_dir or default_day_care(), task, as_json)

    @report_errors
    def _runs(day_care_dir, task, as_json):
        from lpb_plugins.run_status import describe_runs

        rows = describe_runs(day_care_dir, task)
        if as_json:
            click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
            return
        if not rows:
            click.echo(f"No runs in {day_care_dir}" + (f" for task {task!r}" if task else ""))
        for row in rows:
            done, held_out = row["generations_done"], row["best_held_out_fitness"]
            held_out = f", held-out {held_out:.3f}" if held_out is not None else ""
            if row["best_validation_fitness"] is not None:  # chosen on the validation items: the figure to show
                best = f"winner {row['best_unit']}: validation {row['best_validation_fitness']:.3f}"
            elif row["best_train_fitness"] is not None:  # a minibatch's score, the last generation's fittest
                best = f"{'winner' if held_out else 'best so far'} {row['best_unit']}: training minibatch " \
                       f"{row['best_train_fitness']:.3f}"
            else:
                best = "no score yet"
            generations = (f"generation {done}/{row['generations_asked']}" if done is not None
                           else f"no generation written yet ({row['generations_asked']} asked)")
            click.echo(f"{row['task']}/RUN_{row['run_number']}: {row['status']}, {generations}, {best}{held_out}, "
                       f"{row['model']}")
            if row["resume_command"]:
                click.echo(f"  resume: {row['resume_command']}")

    @cli.command()
    @run_options
    @click.option("--format", "form", type=click.Choice(("text", "json", "lmql")), default="text", show_default=True,
                  help="The bare prompt, JSON with few-shot context and fitness, or the fitness test as an LMQL query.")
    def best(run_dir, day_care_dir, task, run_number, form):
        """Print a run's winning prompt, ready to paste."""
        _best(run_dir, day_care_dir, task, run_number, form)

    @report_errors
    def _best(run_dir, day_care_dir, task, run_number, form):
        from lpb_plugins import best_prompt
        from lpb_plugins.run_data import load_run

        run = load_run(run_dir_argument(run_dir, day_care_dir, task, run_number))
        if run.ended is None and run.generations:  # the final chooses among several: this may not be the one
            click.echo(f"Warning: {run.path} has not finished: this is the fittest unit of generation "
                       f"{run.done_generations} on its minibatch, not the run's winner", err=True)
        formats = {"text": best_prompt.as_text, "json": best_prompt.as_json, "lmql": best_prompt.as_lmql}
        click.echo(formats[form](run))
