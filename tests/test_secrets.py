"""An API key in the environment reaches no file of the run, no log line, no event and no wandb payload."""

import logging
import sys
import types

import pytest

from lpb_core.hookspecs import hookimpl
from lpb_core.run import breed
from lpb_core.settings import BreedSettings

MARKER = "sk-lpb-secret-marker-5c1e9a"


class Recorder:
    """A logger that keeps a printable copy of every event it receives."""

    name = "recorder"
    received: list = []

    def __init__(self, settings):
        self.received.append(repr(settings))

    @hookimpl
    def lpb_run_started(self, event):
        self.received.append(repr(event))

    @hookimpl
    def lpb_unit_evaluated(self, event):
        self.received.append(repr(event))

    @hookimpl
    def lpb_mutation_applied(self, event):
        self.received.append(repr(event))

    @hookimpl
    def lpb_generation_finished(self, event):
        self.received.append(repr(event))

    @hookimpl
    def lpb_run_finished(self, event):
        self.received.append(repr(event))


class RecorderPlugin:
    @hookimpl
    def lpb_register_loggers(self, register):
        register(Recorder)


def fake_wandb(payloads: list) -> types.ModuleType:
    """Enough of wandb for the wandb logger, keeping everything it is given."""
    module = types.ModuleType("wandb")

    class Run:
        id = "fake-run-id"
        summary = {}

        def log(self, data, step=None):
            payloads.append(repr((data, step)))

        def finish(self):
            payloads.append(repr(self.summary))

    def init(**kwargs):
        payloads.append(repr(kwargs))
        return Run()

    def table(columns, data):
        payloads.append(repr((columns, data)))
        return (columns, data)

    module.init = init
    module.Table = table
    return module


def test_an_api_key_in_the_environment_is_written_nowhere(day_care, monkeypatch, capfd, caplog):
    monkeypatch.setenv("OPENAI_API_KEY", MARKER)
    payloads = []
    monkeypatch.setitem(sys.modules, "wandb", fake_wandb(payloads))
    Recorder.received = []
    settings = BreedSettings(task="sentiment", day_care_dir=day_care, model_name_or_path="random", population_size=4,
                             evolution_generations=2, fitness_batch_size=4, use_wandb=True, verbose=True,
                             loggers=("console", "recorder"))
    with caplog.at_level(logging.DEBUG):
        summary = breed(settings, extra_plugins=[RecorderPlugin()])

    run = day_care / "sentiment" / "RUN_0"
    files = [p for p in run.rglob("*") if p.is_file()]
    assert {"config.json", "summary.json", "generation_002.json", "cache.sqlite"} <= {p.name for p in files}
    output = capfd.readouterr()
    assert "generation 2/2" in output.err  # the console logger spoke
    assert len(Recorder.received) > 10 and payloads  # every event and the wandb calls were seen
    seen = {
        **{str(p): p.read_bytes().decode("utf-8", "replace") for p in files},
        "stdout": output.out, "stderr": output.err, "log records": caplog.text,
        "events": "\n".join(Recorder.received), "wandb": "\n".join(payloads), "summary": repr(summary),
    }
    assert [where for where, text in seen.items() if MARKER in text] == []


def test_the_scan_would_find_a_leak(day_care, monkeypatch):
    """The check above can fail: a key that does reach the run's files is found there."""
    monkeypatch.setenv("OPENAI_API_KEY", MARKER)
    import os

    settings = BreedSettings(task="sentiment", day_care_dir=day_care, model_name_or_path="random", population_size=2,
                             evolution_generations=0, fitness_batch_size=2, wandb_project=os.environ["OPENAI_API_KEY"],
                             loggers=())
    breed(settings)
    config = (day_care / "sentiment" / "RUN_0" / "config.json").read_text()
    assert MARKER in config


@pytest.mark.parametrize("model", ["openai/gpt-4o-mini"])
def test_a_hosted_model_handle_names_the_model_not_the_key(monkeypatch, model):
    monkeypatch.setenv("OPENAI_API_KEY", MARKER)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    import lmql

    from lpb_plugins import backends

    monkeypatch.setattr(backends, "_counter", lambda model: len)  # the real one would fetch OpenAI's tokenizer
    handle = backends.OpenAIBackend().open(model, BreedSettings(task="sentiment", day_care_dir=".", model_name_or_path=model))
    assert handle.identity == model and MARKER not in handle.description
    assert isinstance(handle.models[0], lmql.LLM)
