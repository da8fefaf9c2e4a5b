"""A run killed with SIGKILL, at any moment, and resumed produces exactly the run an uninterrupted one does."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import FIXTURES

ARGS = ["--model-name-or-path", "random", "--task", "sentiment", "--population-size", "4",
        "--evolution-generations", "3", "--fitness-batch-size", "2", "--seed", "3"]
CRASH_DRIVER = Path(__file__).parent / "crash_driver.py"
GENERATIONS = [f"generation_00{n}.json" for n in range(4)]


def lpb_process(day_care, *extra, driver=()):
    command = [*driver, "breed"] if driver else ["-m", "lpb_core", "breed"]
    return subprocess.Popen([sys.executable, *command, "--day-care-dir", str(day_care), *ARGS, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def comparable(path):
    """A generation file without timings, which differ between any two runs. Queries made before the kill are
    served from the run's cache after it, so only calls and cache hits together are comparable."""
    data = json.loads(path.read_text())
    data.pop("wall_seconds")
    usage = data.pop("usage")
    data["queries"] = usage["llm_calls"] + usage["cache_hits"]
    return data


def assert_every_file_valid(run):
    """Every JSON file a person or a resume would read parses (temporary files are hidden, and not read)."""
    for path in run.glob("*.json"):
        json.loads(path.read_text())


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    whole = tmp_path_factory.mktemp("whole")
    shutil.copytree(FIXTURES / "tiny_day_care", whole, dirs_exist_ok=True)
    process = lpb_process(whole)
    output, _ = process.communicate(timeout=900)
    assert process.returncode == 0, output
    run = whole / "sentiment" / "RUN_0"
    assert sorted(p.name for p in run.glob("generation_*.json")) == GENERATIONS
    return run


def resume_and_compare(day_care, uninterrupted):
    run = day_care / "sentiment" / "RUN_0"
    finished = list(run.glob("generation_*.json"))
    resumed = lpb_process(day_care, "--continue-run-number", "0")
    output, _ = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, output
    assert ("Resuming" in output) == bool(finished)
    assert sorted(p.name for p in run.glob("generation_*.json")) == GENERATIONS
    for name in GENERATIONS:
        assert comparable(run / name) == comparable(uninterrupted / name), name
    summary = json.loads((run / "summary.json").read_text())
    whole = json.loads((uninterrupted / "summary.json").read_text())
    assert summary["best_unit"] == whole["best_unit"]
    assert summary["best_test_fitness"] == whole["best_test_fitness"]
    assert summary["initial_best_test_fitness"] == whole["initial_best_test_fitness"]
    assert_every_file_valid(run)
    assert not list(run.glob(".*.tmp"))  # leftovers of the killed write are cleared on resume


def test_resume_after_kill_reproduces_the_uninterrupted_run(tmp_path, uninterrupted):
    interrupted = tmp_path / "interrupted"
    shutil.copytree(FIXTURES / "tiny_day_care", interrupted)
    run = interrupted / "sentiment" / "RUN_0"
    process = lpb_process(interrupted)
    deadline = time.time() + 900
    while not (run / "generation_001.json").exists():
        assert process.poll() is None, process.stdout.read()
        assert time.time() < deadline
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    finished = sorted(p.name for p in run.glob("generation_*.json"))
    assert "generation_003.json" not in finished and not (run / "summary.json").exists()
    resume_and_compare(interrupted, uninterrupted)


# moment (see tests/crash_driver.py) -> the generations on disk when the process dies
CRASHES = {
    "init": [],
    "mutation": GENERATIONS[:2],
    "write": GENERATIONS[:2],
    "final": GENERATIONS,
}


@pytest.mark.parametrize("moment", list(CRASHES))
def test_kill_at_a_chosen_moment_then_resume(tmp_path, uninterrupted, moment):
    day_care = tmp_path / "day_care"
    shutil.copytree(FIXTURES / "tiny_day_care", day_care)
    run = day_care / "sentiment" / "RUN_0"
    process = lpb_process(day_care, driver=[str(CRASH_DRIVER), moment])
    output, _ = process.communicate(timeout=900)
    assert process.returncode == -signal.SIGKILL, output
    assert sorted(p.name for p in run.glob("generation_*.json")) == CRASHES[moment]
    assert (run / "config.json").exists() and not (run / "summary.json").exists()
    assert_every_file_valid(run)
    if moment == "write":  # the half-written file never took the generation file's name
        (half,) = run.glob(".generation_002.json.*.tmp")
        with pytest.raises(json.JSONDecodeError):
            json.loads(half.read_text())
    resume_and_compare(day_care, uninterrupted)
