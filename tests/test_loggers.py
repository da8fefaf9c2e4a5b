"""The built-in loggers: console progress, and Weights & Biases through a stand-in wandb module."""

import sys
import types

import pytest

from lpb_core.errors import InputError
from lpb_core.run import breed
from lpb_core.settings import BreedSettings


class FakeRun:
    def __init__(self):
        self.logged, self.summary, self.finished = [], {}, False

    def log(self, data, step=None):
        self.logged.append((step, data))

    def finish(self):
        self.finished = True


@pytest.fixture
def fake_wandb(monkeypatch):
    module = types.ModuleType("wandb")
    module.runs = []

    def init(project, config, name, resume):
        run = FakeRun()
        run.project, run.config = project, config
        module.runs.append(run)
        return run

    module.init = init
    monkeypatch.setitem(sys.modules, "wandb", module)
    return module


def test_use_wandb_logs_config_generations_and_summary(day_care, fake_wandb):
    summary = breed(BreedSettings(task="sentiment", day_care_dir=day_care, model_name_or_path="random",
                                  population_size=4, evolution_generations=2, fitness_batch_size=4, loggers=(),
                                  use_wandb=True, wandb_project="lpb-tests"))
    [run] = fake_wandb.runs
    assert run.project == "lpb-tests" and run.config["settings"]["population_size"] == 4
    assert [step for step, _ in run.logged] == [0, 1, 2]
    assert all({"best_fitness", "mean_fitness", "llm_calls"} <= set(data) for _, data in run.logged)
    assert run.summary["best_test_fitness"] == summary["best_test_fitness"] and run.finished


def test_use_wandb_without_wandb_installed_stops_before_anything_is_written(day_care, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # makes `import wandb` fail
    with pytest.raises(InputError) as error:
        breed(BreedSettings(task="sentiment", day_care_dir=day_care, model_name_or_path="random", use_wandb=True))
    assert "pip install 'llama-day-care[wandb]'" in str(error.value)
    assert not list((day_care / "sentiment").glob("RUN_*"))


def test_console_progress_is_printed_per_generation(lpb, day_care):
    from tests.conftest import QUICK_RUN

    result = lpb("breed", "--day-care-dir", day_care, *QUICK_RUN, "--verbose")
    assert result.exit_code == 0, result.output
    for line in ("generation 0/2: best", "generation 1/2: best", "generation 2/2: best"):
        assert line in result.output
    assert " <- " in result.output and " by " in result.output  # verbose: every mutation
