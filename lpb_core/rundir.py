"""The run directory: <day_care>/<task>/RUN_<n>/ with config.json, generation_NNN.json, summary.json and the rest
(README.md, "What a run leaves")."""

from __future__ import annotations

import fcntl
import os
import re
import socket
from pathlib import Path

from lpb_core import files
from lpb_core.errors import InputError, InputErrors
from lpb_core.units import GenerationRecord, Usage

RUN_NAME = re.compile(r"^RUN_(\d+)$")
_GENERATION = re.compile(r"^generation_(\d+)\.json$")
CONFIG_FILE = "config.json"  # written first: a folder with one is a run
SUMMARY_FILE = "summary.json"  # written when a breed ends
EVENTS_FILE = "events.jsonl"  # appended by the events logger
LOCK_FILE = "breed.lock"  # flock-ed by the breed working on the run
# What sessions spent after the last generation they wrote (interrupted, failed, or in the final): counted in
# the run's totals when it resumes, and folded into the next generation written.
UNRECORDED_FILE = "unrecorded_usage.json"


def run_path(task_folder: Path, number: int) -> Path:
    """Where RUN_<number> of a task lives."""
    return Path(task_folder) / f"RUN_{number}"


class RunDirectory:
    def __init__(self, path: Path, number: int | None):
        self.path = Path(path)
        self.number = number
        self._lock_fd: int | None = None

    @classmethod
    def create(cls, task_folder: Path, debug: bool = False) -> "RunDirectory":
        """The next free RUN_<n> (or a fresh DEBUG folder), locked for this breed (see ``lock``); a task folder
        where no run directory can be made (read-only, a full disk) is bad input naming it."""
        try:
            return cls._create(task_folder, debug)
        except PermissionError as exc:
            raise InputError(task_folder, f"cannot make a run directory here: {exc.strerror} (runs are written "
                             "inside the task's folder: make it writable, or copy the day care somewhere "
                             "writable and pass --day-care-dir)") from None

    @classmethod
    def _create(cls, task_folder: Path, debug: bool) -> "RunDirectory":
        if debug:
            path = task_folder / "DEBUG"
            path.mkdir(parents=True, exist_ok=True)
            run = cls(path, None)
            run.lock()
            for old in path.glob("*.json"):
                old.unlink()
            return run
        task_folder.mkdir(parents=True, exist_ok=True)
        number = max((int(m.group(1)) for p in task_folder.iterdir() if (m := RUN_NAME.match(p.name))), default=-1) + 1
        while True:
            try:
                run_path(task_folder, number).mkdir()  # mkdir claims the number against a concurrent new run
                break
            except FileExistsError:
                number += 1
        run = cls(run_path(task_folder, number), number)
        run.lock()
        return run

    @classmethod
    def existing(cls, task_folder: Path, number: int) -> "RunDirectory":
        """RUN_<number> to resume, locked for this breed: refused while another breed holds it."""
        path = run_path(task_folder, number)
        if not (path / CONFIG_FILE).exists():
            raise InputError(path, "no such run to continue (config.json missing)", "--continue-run-number")
        run = cls(path, number)
        run.lock()
        return run

    def __enter__(self) -> "RunDirectory":
        return self

    def __exit__(self, *exc_info) -> None:
        self.unlock()

    def lock(self) -> None:
        """Claim this run for one breed; a second one is refused. Call ``unlock`` when done.

        An OS file lock (flock) rather than a pid file: the kernel drops it when the process ends,
        however it ends (SIGKILL included), so a killed breed never blocks its resume, and there is no
        pid that may have been reused, nor a host name to compare on a shared disk (Linux maps flock to
        POSIX locks on NFS). The pid and host written into the file only make the refusal readable.
        """
        fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise InputError(self.path, f"another lpb breed is breeding this run ({holder}); wait for it to end "
                             "or stop it, then resume", "--continue-run-number") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        self._lock_fd = fd
        # Leftovers of an atomic write cut short by a crash; nobody else writes here now.
        for stale in self.path.glob(".*.tmp"):
            stale.unlink(missing_ok=True)

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def summary_path(self) -> Path:
        return self.path / SUMMARY_FILE

    def write_config(self, config: dict) -> None:
        files.write_json_atomic(self.config_path, config)

    def read_config(self) -> dict:
        return _checked(self.config_path, "run_config")

    def read_summary(self) -> dict | None:
        """summary.json, or None before the breed has ended."""
        return _checked(self.summary_path, "summary") if self.summary_path.exists() else None

    def generation_path(self, generation: int) -> Path:
        return self.path / f"generation_{generation:03d}.json"

    def write_generation(self, record: GenerationRecord) -> Path:
        path = self.generation_path(record.generation)
        files.write_json_atomic(path, record.to_dict())
        (self.path / UNRECORDED_FILE).unlink(missing_ok=True)  # the record's totals include it now
        return path

    def read_unrecorded(self) -> tuple[Usage, float]:
        """Usage and wall seconds spent after the last generation written, by sessions that ended since."""
        path = self.path / UNRECORDED_FILE
        if not path.exists():
            return Usage(), 0.0
        data = _checked(path, "unrecorded_usage")
        return Usage(**data["usage"]), data["wall_seconds"]

    def write_unrecorded(self, usage: Usage, wall_seconds: float) -> None:
        files.write_json_atomic(self.path / UNRECORDED_FILE, {"usage": usage.to_dict(),
                                                              "wall_seconds": round(wall_seconds, 3)})

    def _generation_files(self) -> list[Path]:
        numbered = sorted((int(m.group(1)), p) for p in self.path.iterdir() if (m := _GENERATION.match(p.name)))
        return [p for _, p in numbered]

    def generations(self) -> list[GenerationRecord]:
        """Every finished generation, in order."""
        return [GenerationRecord.from_dict(_checked(p, "generation")) for p in self._generation_files()]

    def latest_generation(self) -> GenerationRecord | None:
        """The last finished generation (None before generation 0 is written), without reading the others."""
        found = self._generation_files()
        return GenerationRecord.from_dict(_checked(found[-1], "generation")) if found else None

    def write_summary(self, summary: dict) -> None:
        files.check(summary, "summary", self.summary_path)
        files.write_json_atomic(self.summary_path, summary)


def _checked(path: Path, schema_name: str) -> dict:
    """A run file as its schema says it is: a hand-edited or damaged one is bad input naming file and field."""
    data = files.read_json(path)
    try:
        files.check(data, schema_name, path)
    except InputErrors as exc:  # lpb validate checks day cares, not runs
        raise InputErrors(exc.errors, lister=None) from None
    return data
