import shutil
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

import lpb_plugins.llama_cpp  # noqa: F401  (OpenMP's wait policy, set before any test loads llama.cpp)
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


# A run that reaches generation 2 in a few LMQL random-model calls.
SMALL_RUN = ["--model-name-or-path", "random", "--task", "sentiment", "--population-size", "2",
             "--evolution-generations", "2", "--fitness-batch-size", "2"]


@pytest.fixture
def install_plugin(tmp_path, monkeypatch, request):
    """Install a plugin package as pip lays one out: the module ``lpb_myplugins`` and the distribution
    ``lpb-myplugins 0.1.0`` whose ``lpb`` entry point ``myplugins`` names it. Returns the folder (for
    PYTHONPATH in subprocesses); the package is gone after the test."""
    site = tmp_path / "site-packages"

    def install(source: str) -> Path:
        site.mkdir()
        (site / "lpb_myplugins.py").write_text(textwrap.dedent(source))
        info = site / "lpb_myplugins-0.1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lpb-myplugins\nVersion: 0.1.0\n")
        (info / "entry_points.txt").write_text("[lpb]\nmyplugins = lpb_myplugins\n")
        sys.modules.pop("lpb_myplugins", None)
        request.addfinalizer(lambda: sys.modules.pop("lpb_myplugins", None))
        monkeypatch.syspath_prepend(str(site))
        return site

    return install
