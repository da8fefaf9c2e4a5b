import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from lpb_core.cli import cli

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).parent.parent

# A run small enough for LMQL's random model to finish in a few seconds.
QUICK_RUN = ["--model-name-or-path", "random", "--task", "sentiment", "--population-size", "4",
             "--evolution-generations", "2", "--fitness-batch-size", "4", "--test-split", "0.2"]


@pytest.fixture
def day_care(tmp_path) -> Path:
    """A private copy of the tiny test day care, so runs and breakages never touch the repository."""
    target = tmp_path / "day_care"
    shutil.copytree(FIXTURES / "tiny_day_care", target)
    return target


@pytest.fixture
def lpb():
    """Run the lpb CLI in-process; returns click's Result."""
    runner = CliRunner()

    def run(*args):
        return runner.invoke(cli, [str(a) for a in args], catch_exceptions=False)

    return run
