"""What every ``lpb`` command shares: the option spelling, the default day care, and how errors are reported."""

from __future__ import annotations

import functools
import sys
import traceback
from importlib import resources
from pathlib import Path

import click

from lpb_core.errors import InputError, PluginError
from lpb_core.interrupts import EXIT_CODES
from lpb_core.settings import BreedSettings

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
            sys.exit(EXIT_CODES[0])  # SIGINT's
        except Exception as exc:  # a one-line message is the contract; --verbose shows the rest
            if kwargs.get("verbose"):
                traceback.print_exc()
            click.echo(f"Error: {one_line(exc)}", err=True)
            sys.exit(1)

    return wrapper



def csv_names(ctx, param, value):
    return tuple(n.strip() for n in value.split(",") if n.strip()) if value else None
