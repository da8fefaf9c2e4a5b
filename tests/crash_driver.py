"""Runs `lpb breed` and SIGKILLs it at a chosen moment: a test tool, never loaded by lpb itself.

    python tests/crash_driver.py MOMENT breed --day-care-dir ... (the usual lpb arguments)

MOMENT is one of:
  init      before the 3rd model call of the initial population (no generation written yet)
  mutation  before the 2nd mutation query of generation 2
  write     halfway through writing generation_002.json (half of it is on disk, in the temporary file)
  final     before the 3rd model call of the held-out scoring that follows the last generation

The moments are found through an event hook (a plugin passed to ``lpb_core.run.breed``) and by
wrapping ``LanguageModel.run`` and the file writer in this process only, so lpb needs no test hooks.
"""

from __future__ import annotations

import os
import signal
import sys
from collections import Counter

from lpb_core import cli, files, run
from lpb_core.daycare import FITNESS_TEMPLATE, INITIAL_TEMPLATE
from lpb_core.hookspecs import hookimpl
from lpb_core.llm import LanguageModel

MOMENT = sys.argv[1]
KILL_AT = {"init": ("init", 3), "mutation": ("mutation", 2), "final": ("final", 3)}
HALF_WRITTEN = ".generation_002.json."


def die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


class Killer:
    def __init__(self):
        self.finished = -1  # the last generation written
        self.total = None
        self.calls = Counter()

    @hookimpl
    def lpb_run_started(self, event):
        self.total = event.total_generations

    @hookimpl
    def lpb_generation_finished(self, event):
        self.finished = event.record.generation

    def phase(self, template_name: str) -> str | None:
        if self.finished == -1 and template_name == INITIAL_TEMPLATE:
            return "init"
        if self.finished == 1 and template_name != FITNESS_TEMPLATE:
            return "mutation"
        if self.finished == self.total:
            return "final"
        return None

    def before_call(self, template_name: str) -> None:
        phase = self.phase(template_name)
        self.calls[phase] += 1
        if KILL_AT.get(MOMENT) == (phase, self.calls[phase]):
            die()


killer = Killer()
real_run = LanguageModel.run


async def run_or_die(self, template, *args, **kwargs):
    killer.before_call(template.name)
    return await real_run(self, template, *args, **kwargs)


class HalfWriter:
    """A file that writes half of what it is given, makes that durable, and dies."""

    def __init__(self, handle):
        self.handle = handle

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def write(self, data):
        self.handle.write(data[: len(data) // 2])
        self.handle.flush()
        os.fsync(self.handle.fileno())
        die()


class HalfWritingOs:
    """The os module as lpb_core.files sees it, except that the chosen temporary file is cut off halfway."""

    def __getattr__(self, name):
        return getattr(os, name)

    @staticmethod
    def fdopen(fd, *args, **kwargs):
        handle = os.fdopen(fd, *args, **kwargs)
        target = os.readlink(f"/proc/self/fd/{fd}")  # opened from a file descriptor: no name of its own
        return HalfWriter(handle) if MOMENT == "write" and HALF_WRITTEN in os.path.basename(target) else handle


LanguageModel.run = run_or_die
files.os = HalfWritingOs()
real_breed = run.breed
run.breed = lambda settings, extra_plugins=(): real_breed(settings, extra_plugins=(*extra_plugins, killer))
sys.argv = ["lpb", *sys.argv[2:]]
cli.main()
