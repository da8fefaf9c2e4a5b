"""Ctrl-C and SIGTERM stop a breed cleanly with the command that resumes it; one run is bred by one process."""

import asyncio
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lpb_core.cli_breed import interrupted_message
from lpb_core.cli_common import default_day_care
from lpb_core.interrupts import InterruptGuard, Interrupted
from lpb_core.settings import BreedSettings

ARGS = ["--model-name-or-path", "random", "--task", "sentiment", "--population-size", "4",
        "--fitness-batch-size", "4", "--seed", "5"]


def lpb_process(day_care, *extra):
    return subprocess.Popen([sys.executable, "-m", "lpb_core", "breed", "--day-care-dir", str(day_care), *ARGS,
                             *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, process) -> None:
    deadline = time.time() + 900
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.time() < deadline
        time.sleep(0.05)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_saves_and_prints_the_command_that_resumes(day_care, signum):
    run = day_care / "sentiment" / "RUN_0"
    process = lpb_process(day_care, "--evolution-generations", "30", "--test-split", "0.3")
    wait_for(run / "generation_001.json", process)
    process.send_signal(signum)
    _, err = process.communicate(timeout=900)

    assert process.returncode == 128 + signum, err
    assert "Traceback" not in err
    message, command = err.strip().splitlines()[-2:]
    assert message.startswith(f"Interrupted by {signal.Signals(signum).name}") and str(run) in message
    command = command.strip()
    assert command == shlex.join([
        "lpb", "breed", "--model-name-or-path", "random", "--day-care-dir", str(day_care), "--task", "sentiment",
        "--population-size", "4", "--evolution-generations", "30", "--seed", "5", "--fitness-batch-size", "4",
        "--test-split", "0.3", "--continue-run-number", "0"])
    saved = sorted(run.glob("generation_*.json"))
    for path in run.glob("*.json"):
        json.loads(path.read_text())
    assert not list(run.glob(".*.tmp")) and not (run / "summary.json").exists()

    # The printed command, pasted, resumes the run (here with fewer generations, to finish soon).
    argv = shlex.split(command)[1:]
    argv[argv.index("--evolution-generations") + 1] = str(len(saved))
    resumed = subprocess.run([sys.executable, "-m", "lpb_core", *argv], capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr
    assert f"Resuming {run} after generation {len(saved) - 1}" in resumed.stderr
    assert sorted(run.glob("generation_*.json"))[: len(saved)] == saved
    assert json.loads((run / "summary.json").read_text())["generations_completed"] == len(saved)


def test_a_second_breed_of_the_same_run_is_refused_and_a_killed_one_does_not_block(day_care, lpb):
    run = day_care / "sentiment" / "RUN_0"
    first = lpb_process(day_care, "--evolution-generations", "30")
    wait_for(run / "generation_000.json", first)

    second = lpb("breed", "--day-care-dir", day_care, *ARGS, "--evolution-generations", "30",
                 "--continue-run-number", "0")
    assert second.exit_code == 2, second.output
    (line,) = second.output.strip().splitlines()
    assert line.startswith(f"Error: {run}: --continue-run-number: another lpb breed is breeding this run")
    assert f"pid {first.pid}" in line

    first.send_signal(signal.SIGKILL)
    first.wait()
    done = len(list(run.glob("generation_*.json")))
    resumed = lpb("breed", "--day-care-dir", day_care, *ARGS, "--evolution-generations", done,
                  "--continue-run-number", "0")
    assert resumed.exit_code == 0, resumed.output
    assert (run / "summary.json").exists()


def test_the_write_under_way_completes_before_the_breed_stops(tmp_path):
    target = tmp_path / "record.json"

    async def breed():
        await asyncio.sleep(0)
        os.kill(os.getpid(), signal.SIGINT)
        target.write_text("written")  # synchronous, like every write of a run: the signal does not cut it
        await asyncio.sleep(30)  # the breed is cancelled at its next await
        target.write_text("too late")

    with InterruptGuard() as guard, pytest.raises(Interrupted) as stopped:
        asyncio.run(guard.run(breed))
    assert stopped.value.signum == signal.SIGINT and stopped.value.exit_code == 130
    assert target.read_text() == "written"


def test_a_signal_between_synchronous_steps_stops_at_the_next_checkpoint():
    steps = []
    with InterruptGuard() as guard, pytest.raises(Interrupted) as stopped:
        os.kill(os.getpid(), signal.SIGTERM)
        steps.append("finished")  # a handler that only records: the step in progress goes on
        guard.checkpoint()
        steps.append("never")
    assert steps == ["finished"] and stopped.value.exit_code == 143
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the guard put the old handler back


def test_an_interrupt_before_the_run_existed_says_to_start_again():
    settings = BreedSettings(task="sentiment", day_care_dir=default_day_care(), continue_run_number=None)
    message = interrupted_message(Interrupted(signal.SIGINT), settings)
    assert message.splitlines() == ["Interrupted by SIGINT; no run had started. Start again with:",
                                    "  lpb breed --task sentiment"]


@pytest.mark.embedded
def test_ctrl_c_while_the_model_loads_exits_130_not_a_segfault():
    # Python's finalization used to free the model under llama.cpp's loading thread: exit -11 (measured 4 of 4
    # times with the signal 2.5 to 3.5 s after the start). The signal is sent just after llama.cpp's engine thread
    # starts (the process's fourth thread, after numpy's and LMQL's).
    # Ctrl-C as at a terminal: a test run started in the background inherits SIGINT ignored, and Python then
    # installs no KeyboardInterrupt for it
    process = subprocess.Popen([sys.executable, "-m", "lpb_core", "eval", "--task", "sentiment", "--prompt", "Mood?"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while len(os.listdir(f"/proc/{process.pid}/task")) < 4:
        assert process.poll() is None and time.time() < deadline, process.communicate()
        time.sleep(0.01)
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 130, err
    assert err.strip().splitlines()[-1] == "Interrupted." and "Traceback" not in err
