"""Each registration hook, exercised by a plugin object the way a third-party package would."""

import json

from lpb_core.hookspecs import hookimpl
from lpb_core.llm import ModelHandle
from lpb_core.operators import MUTATE, Mutation
from lpb_core.run import breed
from lpb_core.settings import BreedSettings


def settings(day_care, **changes):
    base = dict(task="sentiment", day_care_dir=day_care, model_name_or_path="random", population_size=4,
                evolution_generations=1, fitness_batch_size=4, loggers=())
    return BreedSettings(**{**base, **changes})


class UpperCase:
    name = "upper_case"
    stage = MUTATE
    templates = ()

    async def mutate(self, ctx):
        return Mutation(prompts={"task_prompt": ctx.parent.prompts["task_prompt"].upper() + "!"})


class LengthScorer:
    """Fitness is the share of answers longer than `min_length` characters: a scorer a plugin adds."""

    name = "long_answers"
    params_schema = {"type": "object", "properties": {"min_length": {"type": "integer"}},
                     "additionalProperties": False}

    def __init__(self, min_length=3):
        self.min_length = min_length

    def is_correct(self, answer, gold):
        return len(answer) > self.min_length

    def score(self, answers, golds):
        return sum(map(self.is_correct, answers, golds)) / len(answers)


class Calls:
    events = []


class ListLogger:
    name = "list"

    def __init__(self, settings):
        Calls.events.append(("built", settings.task))

    @hookimpl
    def lpb_generation_finished(self, event):
        Calls.events.append(("generation", event.record.generation))


class Extensions:
    @hookimpl
    def lpb_register_mutation_operators(self, register):
        register(UpperCase())

    @hookimpl
    def lpb_register_fitness_scorers(self, register):
        register(LengthScorer)

    @hookimpl
    def lpb_register_loggers(self, register):
        register(ListLogger)


def test_plugin_operator_scorer_and_logger_take_part_in_a_run(day_care):
    task_file = day_care / "sentiment" / "task_description.json"
    task = json.loads(task_file.read_text())
    task["fitness_scorer"] = {"type": "long_answers", "min_length": 7}
    task_file.write_text(json.dumps(task))
    Calls.events.clear()
    summary = breed(settings(day_care, operators=["upper_case"], loggers=["list"]), extra_plugins=[Extensions()])
    generation = json.loads((day_care / "sentiment" / "RUN_0" / "generation_001.json").read_text())
    children = {b["child"] for b in generation["births"]}
    for unit in generation["population"]:
        if unit["id"] in children:
            assert unit["operator"] == "upper_case" and unit["prompts"]["task_prompt"].endswith("!")
    # "positive" has 8 characters, "negative" too: both longer than 7, so every answer counts.
    assert summary["best_train_fitness"] == 1.0
    assert Calls.events == [("built", "sentiment"), ("generation", 0), ("generation", 1)]


class EchoBackend:
    """lpb_register_model_backends: a backend serving the name 'echo' with LMQL's random model underneath."""

    name = "echo"
    opened = []

    def accepts(self, model_name):
        return model_name == "echo"

    def open(self, model_name, settings):
        import lmql

        from lpb_plugins import random_model_adapter
        from lpb_plugins.lmql_inprocess import shared_inprocess_model

        random_model_adapter.install()
        model, close = shared_inprocess_model("random", seed=1, tokenizer="gpt2")
        self.opened.append(model_name)
        return ModelHandle(description="echo model", models=(model,), count_tokens=lambda text: len(text.split()),
                           close=close)


class BackendPlugin:
    @hookimpl
    def lpb_register_model_backends(self, register):
        register(EchoBackend())


def test_plugin_model_backend_serves_its_model_names(day_care):
    summary = breed(settings(day_care, model_name_or_path="echo", evolution_generations=0),
                    extra_plugins=[BackendPlugin()])
    assert EchoBackend.opened == ["echo"]
    assert summary["model"] == "echo model"
    assert summary["prompt_tokens"] > 0


def test_plugins_add_subcommands_to_the_cli():
    """lpb_register_commands: `lpb serve` arrives through the hook; so can any plugin's command."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "lpb_core", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "serve" in result.stdout
    help_text = subprocess.run([sys.executable, "-m", "lpb_core", "serve", "--help"], capture_output=True, text=True)
    assert "--port" in help_text.stdout and "--server-batch-size" in help_text.stdout and "--quiet" in help_text.stdout
