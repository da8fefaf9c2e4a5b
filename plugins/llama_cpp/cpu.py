"""Sharing the CPU: how many cores llama.cpp may use, and OpenMP threads that sleep instead of spinning.

llama.cpp's CPU backend synchronises its threads with OpenMP barriers after every operation of the graph
(hundreds per forward pass).  libgomp's default waiting is to spin for a while first.  When another
process holds a core, the spinning thread keeps its own core busy while the thread it waits for sits in
the run queue, and the Python interpreter thread that drives LMQL starves beside them: a busy neighbour
made a breed 9x slower instead of about 2x.  ``OMP_WAIT_POLICY=PASSIVE`` makes waiting threads sleep at
once.  libgomp reads it only when it is loaded (with llama.cpp's libraries, on ``import llama_cpp``), so
:func:`quiet_openmp` runs when this package is imported, before anything of lpb loads llama.cpp.
"""

from __future__ import annotations

import os
import warnings

__all__ = ["OPENMP_SETTINGS", "default_threads", "quiet_openmp", "usable_cores"]

# Set unless the environment already says otherwise.
OPENMP_SETTINGS = {"OMP_WAIT_POLICY": "PASSIVE"}


def usable_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def default_threads() -> tuple[int, int]:
    """llama.cpp threads for (decode steps of single tokens, steps with prompts): every usable core.

    LMQL's interpreter thread needs a core too, but only part of the time (about 70 ms of CPU per fitness
    call, where llama.cpp needs 250-450 ms): measured alone on 2 cores, batched fitness calls ran 1.4x
    faster with 2 llama.cpp threads than with 1 (benchmarks/README.md, "Throughput")."""
    cores = usable_cores()
    return cores, cores


def _openmp_loaded() -> bool:
    try:
        with open("/proc/self/maps") as maps:
            return "libgomp" in maps.read()
    except OSError:  # pragma: no cover - non-Linux
        return False


_warned = False


def quiet_openmp() -> None:
    """Put :data:`OPENMP_SETTINGS` into the environment (keeping the user's own), warning once if OpenMP was
    loaded before they could take effect."""
    global _warned
    missing = {k: v for k, v in OPENMP_SETTINGS.items() if k not in os.environ}
    if not missing:
        return
    os.environ.update(missing)
    if _openmp_loaded() and not _warned:
        _warned = True
        warnings.warn(f"OpenMP was loaded before lpb could set {', '.join(missing)}: llama.cpp's threads may "
                      "spin while they wait; set them in the environment to share the CPU gracefully")
