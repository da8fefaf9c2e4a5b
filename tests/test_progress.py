"""Live progress: a bar per generation in a terminal (run under a pseudo-terminal), plain lines in a pipe,
nothing with --quiet."""

import fcntl
import os
import re
import select
import shutil
import struct
import subprocess
import sys
import termios

from lpb_core.run import breed
from lpb_core.settings import BreedSettings
from lpb_plugins.loggers import ConsoleLogger
from tests.conftest import FIXTURES

# Minibatches of 3 of the tiny suite's 4 training items: each generation draws another, so the survivors
# are scored again and the progress totals below count them.
ARGS = ["--model-name-or-path", "random", "--task", "sentiment", "--population-size", "4",
        "--evolution-generations", "1", "--fitness-batch-size", "3", "--seed", "4"]
GENERATION_LINE = re.compile(r"^generation (\d)/1: best \d\.\d{3} mean \d\.\d{3} \(u\d{4}\) \| \d+ LLM calls", re.M)


def breed_command(tmp_path, *extra):
    day_care = tmp_path / "day_care"
    shutil.copytree(FIXTURES / "tiny_day_care", day_care)
    return [sys.executable, "-m", "lpb_core", "breed", "--day-care-dir", str(day_care), *ARGS, *extra]


def test_a_terminal_shows_a_progress_bar_per_generation(tmp_path):
    leader, follower = os.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # 40 rows, 120 columns
    process = subprocess.Popen(breed_command(tmp_path), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=follower)
    os.close(follower)
    screen = b""
    while True:  # read the terminal until the breed closes it
        ready, _, _ = select.select([leader], [], [], 300)
        assert ready, "the breed went silent"
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: every writer has closed the terminal
            break
        if not chunk:
            break
        screen += chunk
    os.close(leader)
    assert process.wait(timeout=60) == 0
    text = screen.decode("utf-8", "replace")
    # tqdm's bar: "generation 1/1:  50%|█████     | 3/6 [00:01<00:01, 2.10unit/s, best 0.750 mean 0.500]"
    bars = re.findall(r"generation (\d)/1: +(\d+)%\|[^|]*\| (\d+)/(\d+) \[(\d\d:\d\d)<(\d\d:\d\d|\?), [^,\]]+, "
                      r"best (\d\.\d{3}) mean (\d\.\d{3})\]", text)
    assert {g for g, *_ in bars} == {"0", "1"}, text
    for generation, percent, done, total, elapsed, eta, best, mean in bars:
        assert 0 < int(done) <= int(total) and float(mean) <= float(best)
    assert any(eta != "?" for *_, eta, _, _ in bars)  # an ETA once the rate is known
    # Generation 1 scores the population (4 units), then its children: the total grows once they are due.
    assert {int(total) for g, _, _, total, *_ in bars if g == "1"} == {4, 6}
    assert "\r" in text
    # What stays on the screen: each line as its last carriage return left it. The bars are gone (they clear
    # themselves), and the generation lines remain.
    screen_lines = [line.split("\r")[-1] for line in text.replace("\r\n", "\n").split("\n")]
    assert [int(g) for g in GENERATION_LINE.findall("\n".join(screen_lines))] == [0, 1]
    assert not any("%|" in line for line in screen_lines)


def test_a_pipe_gets_plain_lines_and_quiet_gets_none(tmp_path, lpb):
    piped = subprocess.run(breed_command(tmp_path), capture_output=True, text=True, timeout=300)
    assert piped.returncode == 0, piped.stderr
    assert [int(g) for g in GENERATION_LINE.findall(piped.stderr)] == [0, 1]
    assert "\r" not in piped.stderr and "%|" not in piped.stderr and "\x1b" not in piped.stderr
    for line in piped.stderr.splitlines():  # the run's first line, switched-off operators, one per generation,
        # then one as each stage after the last generation starts
        assert line.startswith(("Breeding task", "  operator ", "generation ", "  choosing the winner: ",
                                "  held-out test: ")), line
    assert re.search(r"^  choosing the winner: \d+ evaluations\.\.\.\n  held-out test: \d+ evaluations\.\.\.$",
                     piped.stderr, re.M), piped.stderr

    quiet = lpb(*breed_command(tmp_path / "q")[3:], "--evolution-generations", "0", "--quiet")
    assert quiet.exit_code == 0 and quiet.stderr == ""
    assert "Best prompt" in quiet.stdout


def test_a_long_generation_in_a_pipe_gets_a_line_every_heartbeat(day_care, monkeypatch, capsys):
    monkeypatch.setattr(ConsoleLogger, "heartbeat_seconds", 0.0)  # every unit is "30 s later"
    breed(BreedSettings(task="sentiment", day_care_dir=day_care, model_name_or_path="random", population_size=4,
                        evolution_generations=1, fitness_batch_size=3, loggers=("console",)))
    lines = capsys.readouterr().err.splitlines()
    heartbeats = [line for line in lines if re.match(r"  generation \d/1: \d+/\d+ units scored, \d+s so far, "
                                                     r"best \d\.\d{3} mean \d\.\d{3}$", line)]
    assert [h.split(":")[0] for h in heartbeats] == ["  generation 0/1"] * 4 + ["  generation 1/1"] * 6
    assert heartbeats[-1].startswith("  generation 1/1: 6/6 units scored")
    # After the last generation the final and the held-out test keep the lines coming.
    final = [line for line in lines if re.match(r"  choosing the winner: \d+/\d+ evaluations scored, \d+s so far$", line)]
    held_out = [line for line in lines if re.match(r"  held-out test: \d+/\d+ evaluations scored, \d+s so far$", line)]
    assert final and final[-1].split(":")[1].split()[0].split("/")[0] == final[-1].split("/")[1].split()[0]
    assert held_out and lines.index(final[-1]) < lines.index(held_out[0])
