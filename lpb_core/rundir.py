"""The run directory: <day_care>/<task>/RUN_<n>/ with config.json, generation_NNN.json, summary.json."""

from __future__ import annotations

import re
from pathlib import Path

from lpb_core import files
from lpb_core.errors import InputError
from lpb_core.units import GenerationRecord

_RUN = re.compile(r"^RUN_(\d+)$")
_GENERATION = re.compile(r"^generation_(\d+)\.json$")


class RunDirectory:
    def __init__(self, path: Path, number: int | None):
        self.path = Path(path)
        self.number = number

    @classmethod
    def create(cls, task_folder: Path, debug: bool = False) -> "RunDirectory":
        """The next free RUN_<n> (or a fresh DEBUG folder); mkdir is the lock against a concurrent run."""
        if debug:
            path = task_folder / "DEBUG"
            if path.exists():
                for old in path.glob("*.json"):
                    old.unlink()
            path.mkdir(parents=True, exist_ok=True)
            return cls(path, None)
        task_folder.mkdir(parents=True, exist_ok=True)
        number = max((int(m.group(1)) for p in task_folder.iterdir() if (m := _RUN.match(p.name))), default=-1) + 1
        while True:
            try:
                (task_folder / f"RUN_{number}").mkdir()
                return cls(task_folder / f"RUN_{number}", number)
            except FileExistsError:
                number += 1

    @classmethod
    def existing(cls, task_folder: Path, number: int) -> "RunDirectory":
        path = task_folder / f"RUN_{number}"
        if not (path / "config.json").exists():
            raise InputError(path, "no such run to continue (config.json missing)", "--continue-run-number")
        return cls(path, number)

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.json"

    def write_config(self, config: dict) -> None:
        files.write_json_atomic(self.config_path, config)

    def read_config(self) -> dict:
        return files.read_json(self.config_path)

    def generation_path(self, generation: int) -> Path:
        return self.path / f"generation_{generation:03d}.json"

    def write_generation(self, record: GenerationRecord) -> Path:
        path = self.generation_path(record.generation)
        files.write_json_atomic(path, record.to_dict())
        return path

    def generations(self) -> list[GenerationRecord]:
        """Every finished generation, in order."""
        numbered = sorted((int(m.group(1)), p) for p in self.path.iterdir() if (m := _GENERATION.match(p.name)))
        return [GenerationRecord.from_dict(files.read_json(p)) for _, p in numbered]

    def write_summary(self, summary: dict) -> None:
        files.check(summary, "summary", self.summary_path)
        files.write_json_atomic(self.summary_path, summary)
