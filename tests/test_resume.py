"""A run killed with SIGKILL and resumed produces exactly the generations of an uninterrupted run."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

from tests.conftest import FIXTURES

ARGS = ["--model-name-or-path", "random", "--task", "sentiment", "--population-size", "4",
        "--evolution-generations", "4", "--fitness-batch-size", "4", "--seed", "3"]


def lpb_process(day_care, *extra):
    return subprocess.Popen([sys.executable, "-m", "lpb_core", "breed", "--day-care-dir", str(day_care), *ARGS,
                             *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def comparable(path):
    """A generation file without timings, which differ between any two runs. Queries made before the kill are
    served from the run's cache after it, so only calls and cache hits together are comparable."""
    data = json.loads(path.read_text())
    data.pop("wall_seconds")
    usage = data.pop("usage")
    data["queries"] = usage["llm_calls"] + usage["cache_hits"]
    return data


def test_resume_after_kill_reproduces_the_uninterrupted_run(tmp_path):
    whole, interrupted = tmp_path / "whole", tmp_path / "interrupted"
    for target in (whole, interrupted):
        shutil.copytree(FIXTURES / "tiny_day_care", target)

    assert lpb_process(whole).wait(timeout=300) == 0

    run = interrupted / "sentiment" / "RUN_0"
    process = lpb_process(interrupted)
    deadline = time.time() + 300
    while not (run / "generation_001.json").exists():
        assert process.poll() is None, process.stdout.read()
        assert time.time() < deadline
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    finished = sorted(p.name for p in run.glob("generation_*.json"))
    assert "generation_004.json" not in finished and not (run / "summary.json").exists()

    resumed = lpb_process(interrupted, "--continue-run-number", "0")
    output, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, output
    assert "Resuming" in output

    expected = sorted(p.name for p in (whole / "sentiment" / "RUN_0").glob("generation_*.json"))
    assert expected == [f"generation_00{n}.json" for n in range(5)]
    assert sorted(p.name for p in run.glob("generation_*.json")) == expected
    for name in expected:
        assert comparable(run / name) == comparable(whole / "sentiment" / "RUN_0" / name), name
    summary = json.loads((run / "summary.json").read_text())
    uninterrupted = json.loads((whole / "sentiment" / "RUN_0" / "summary.json").read_text())
    assert summary["best_unit"] == uninterrupted["best_unit"]
    assert summary["best_test_fitness"] == uninterrupted["best_test_fitness"]
