"""The ``lpb`` command. Thin: each command builds settings and calls the library (``lpb breed`` in
:mod:`lpb_core.cli_breed`, ``lpb eval`` in :mod:`lpb_core.cli_eval`; plugins add others)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from pathlib import Path

import click

from lpb_core.cli_breed import breed
from lpb_core.cli_common import csv_names, default_day_care, one_line, option, report_errors
from lpb_core.cli_eval import eval_command
from lpb_core.errors import InputError, PluginError, problems_in
from lpb_core.interrupts import EXIT_CODES
from lpb_core.settings import DEFAULT_LOGGERS, BreedSettings


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


cli.add_command(breed)
cli.add_command(eval_command)


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
@option("test_suite", type=click.Path(path_type=Path), default=None, help="Held-out suite the breed will use.")
def validate(day_care_dir, task, fitness_test_suite, operators, disable_plugin, selection_strategy, similarity_filter,
             logger, test_suite):
    """Check a day care folder: every file against its schema, and the files against each other; and the plugins
    and options a breed would use."""
    _validate(day_care_dir or default_day_care(), task, fitness_test_suite, operators, disable_plugin,
              dict(selection_strategy=selection_strategy, similarity_filter=similarity_filter,
                   loggers=(*DEFAULT_LOGGERS, *logger), test_suite=test_suite))


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
    try:
        if not {"--verbose", "-v"} & set(sys.argv):
            quiet_shutdown_noise()
        add_plugin_commands()
        cli(prog_name="lpb")
    except KeyboardInterrupt:  # while lpb loads its libraries, before a command handles it
        click.echo("Interrupted.", err=True)
        code = EXIT_CODES[0]
    except SystemExit as stop:
        if stop.code not in EXIT_CODES:
            raise
        code = stop.code
    # Stopped by a signal, everything said and every file written: leave without Python's finalization, which
    # would free a model llama.cpp may still be loading in another thread (a segfault, measured).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
