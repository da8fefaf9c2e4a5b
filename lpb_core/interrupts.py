"""Ctrl-C and SIGTERM during a breed: stop at a safe point, never in the middle of a write.

While a breed runs, SIGINT and SIGTERM only record that a stop was asked for. Synchronous setup
checks at ``checkpoint()``; the async breed is cancelled at its next ``await``. Files are written by
synchronous code between awaits, so a write under way always completes; the finally blocks then
close the model and the query cache. A second signal stops at once (files are still written
atomically, so at worst the write under way is dropped, never left half done).
"""

from __future__ import annotations

import asyncio
import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)
EXIT_CODES = tuple(128 + signum for signum in SIGNALS)  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


class Interrupted(KeyboardInterrupt):
    """The breed was stopped by a signal. A KeyboardInterrupt, so no ``except Exception`` swallows it.

    ``run_dir`` and ``run_number`` name the run to resume, once one exists (``run.breed`` sets them).
    """

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
        self.run_dir = None
        self.run_number: int | None = None

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[SIGNALS.index(self.signum)]


class InterruptGuard:
    """Installs the stop-at-a-safe-point handlers for its ``with`` block, then restores the old ones."""

    def __init__(self):
        self.received: int | None = None
        self._task: asyncio.Task | None = None
        self._previous: dict = {}

    def __enter__(self) -> "InterruptGuard":
        if threading.current_thread() is threading.main_thread():  # Python runs handlers there only
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _on_signal(self, signum, frame=None) -> None:
        if self.received is not None:  # asked twice: the user wants out now
            raise Interrupted(signum)
        self.received = signum
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def checkpoint(self) -> None:
        """Between synchronous steps: stop here if a signal came."""
        if self.received is not None:
            raise Interrupted(self.received)

    async def run(self, function, *args):
        """Await ``function(*args)`` so that a signal cancels it at its next await and raises ``Interrupted``."""
        self.checkpoint()
        loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        # The loop's own handlers wake it at once, where a plain handler may wait for the next event.
        installed = list(self._previous)
        for signum in installed:
            loop.add_signal_handler(signum, self._on_signal, signum)
        try:
            return await function(*args)
        except asyncio.CancelledError:
            if self.received is None:
                raise
            raise Interrupted(self.received) from None
        finally:
            self._task = None
            for signum in installed:
                loop.remove_signal_handler(signum)  # resets to the default handler ...
                signal.signal(signum, self._on_signal)  # ... so ours goes back until the guard ends
