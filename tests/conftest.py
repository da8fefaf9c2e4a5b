import shutil
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

import lpb_plugins.llama_cpp  # noqa: F401  (OpenMP's wait policy, set before any test loads llama.cpp)
from lpb_core.cli import add_plugin_commands, cli

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
    """Run the lpb CLI in-process, with the commands plugins add, as `lpb` has them; returns click's Result."""
    add_plugin_commands()
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


class SpyBackend:
    """A registered backend under another name, remembering every text it was asked to count: each call's
    whole prompt and its answers, so a test can tell which model received which queries."""

    def __init__(self, name: str, delegate: str):
        self.name, self.delegate, self.seen = name, delegate, []

    def accepts(self, model_name):
        return model_name == self.name

    def open(self, model_name, settings):
        import attrs

        from lpb_core.plugins import load_plugins

        backend = load_plugins().backends.get(self.delegate)
        handle = backend.open("smollm2" if self.delegate == "llama.cpp" else self.delegate, settings)
        count = handle.count_tokens

        def counting(text):
            self.seen.append(text)
            return count(text)

        return attrs.evolve(handle, description=self.name, count_tokens=counting)


def spies(*backends: SpyBackend):
    """A plugin registering the given spy backends."""
    from lpb_core.hookspecs import hookimpl

    class Spies:
        @hookimpl
        def lpb_register_model_backends(self, register):
            for backend in backends:
                register(backend)

    return Spies()


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> Path:
    """One small finished random-model run (events logged), shared by the tests that only read it."""
    from lpb_core.run import breed
    from lpb_core.settings import BreedSettings

    day_care = tmp_path_factory.mktemp("finished") / "day_care"
    shutil.copytree(FIXTURES / "tiny_day_care", day_care)
    breed(BreedSettings(task="sentiment", day_care_dir=day_care, model_name_or_path="random", population_size=4,
                        evolution_generations=3, fitness_batch_size=4, test_split=0.2, seed=2, loggers=("events",)))
    return day_care / "sentiment" / "RUN_0"


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    """A private copy of the finished run, to break or rewrite."""
    target = tmp_path / "day_care" / "sentiment" / "RUN_0"
    shutil.copytree(finished_run, target, ignore=shutil.ignore_patterns("report.*", "fitness.png"))
    return target
