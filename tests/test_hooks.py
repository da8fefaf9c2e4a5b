"""One test per hook, named after it (test_plugins.py requires it): each exercised by a plugin object
the way a third-party package would, in one shared breed with a plugin of every kind."""

import json
import shutil
import subprocess
import sys

import attrs
import pytest

from lpb_core.events import GenerationFinished, MutationApplied, RunFinished, RunStarted, UnitEvaluated
from lpb_core.hookspecs import hookimpl
from lpb_core.llm import ModelHandle
from lpb_core.operators import MUTATE, Mutation
from lpb_core.run import breed
from lpb_core.settings import BreedSettings
from lpb_core.units import Contest
from tests.conftest import FIXTURES

POPULATION, GENERATIONS = 4, 2


class UpperCase:
    name = "upper_case"
    stage = MUTATE
    templates = ()

    async def mutate(self, ctx):
        return Mutation(prompts={"task_prompt": ctx.parent.prompts["task_prompt"].upper() + "!"},
                        notes={"generation": ctx.generation})


class LengthScorer:
    """Fitness is the share of answers longer than `min_length` characters."""

    name = "long_answers"
    params_schema = {"type": "object", "properties": {"min_length": {"type": "integer"}},
                     "additionalProperties": False}

    def __init__(self, min_length=3):
        self.min_length = min_length

    def is_correct(self, answer, gold):
        return len(answer) > self.min_length

    def score(self, answers, golds):
        return sum(map(self.is_correct, answers, golds)) / len(answers)


class NeighbourSlots:
    """Slot 0 meets slot 1, slot 2 meets slot 3, ...: the earlier slot wins a tie."""

    name = "neighbour_slots"

    def contests(self, population, rng):
        pairs = zip(population[0::2], population[1::2])
        return [Contest(winner=(a if a.fitness >= b.fitness else b).id, loser=(b if a.fitness >= b.fitness else a).id,
                        competitors=(a.id, b.id)) for a, b in pairs]


class SpyFilter:
    name = "spy_filter"
    calls = []

    def distinct(self, prompts):
        self.calls.append(list(prompts))
        return list(dict.fromkeys(prompts))


class ListLogger:
    name = "list"
    events = []

    def __init__(self, settings):
        self.events.append(("built", settings.task))

    @hookimpl
    def lpb_generation_finished(self, event):
        self.events.append(("generation", event.record.generation))


class EchoBackend:
    """Serves the name 'echo' with LMQL's random model underneath."""

    name = "echo"
    opened = []

    def accepts(self, model_name):
        return model_name == "echo"

    def open(self, model_name, settings):
        from lpb_plugins import random_model_adapter
        from lpb_plugins.lmql_inprocess import shared_inprocess_model

        random_model_adapter.install()
        model, close = shared_inprocess_model("random", seed=1, tokenizer="gpt2")
        self.opened.append(model_name)
        return ModelHandle(description="echo model", models=(model,), count_tokens=lambda text: len(text.split()),
                           close=close)


class Extensions:
    @hookimpl
    def lpb_register_mutation_operators(self, register):
        register(UpperCase())

    @hookimpl
    def lpb_register_fitness_scorers(self, register):
        register(LengthScorer)

    @hookimpl
    def lpb_register_selection_strategies(self, register):
        register(NeighbourSlots())

    @hookimpl
    def lpb_register_similarity_filters(self, register):
        register(SpyFilter())

    @hookimpl
    def lpb_register_loggers(self, register):
        register(ListLogger)

    @hookimpl
    def lpb_register_model_backends(self, register):
        register(EchoBackend())


class Recorder:
    def __init__(self):
        self.events = []

    @hookimpl
    def lpb_run_started(self, event):
        self.events.append(event)

    @hookimpl
    def lpb_unit_evaluated(self, event):
        self.events.append(event)

    @hookimpl
    def lpb_mutation_applied(self, event):
        self.events.append(event)

    @hookimpl
    def lpb_generation_finished(self, event):
        self.events.append(event)

    @hookimpl
    def lpb_run_finished(self, event):
        self.events.append(event)

    def of(self, kind):
        return [e for e in self.events if isinstance(e, kind)]


@attrs.frozen
class Run:
    summary: dict
    events: Recorder
    generations: list  # the generation files, parsed


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    """One debug-mode breed (operators in turn) on the 'echo' backend with every plugin kind above."""
    day_care = tmp_path_factory.mktemp("hooks") / "day_care"
    shutil.copytree(FIXTURES / "tiny_day_care", day_care)
    task_file = day_care / "sentiment" / "task_description.json"
    task = json.loads(task_file.read_text())
    task["fitness_scorer"] = {"type": "long_answers", "min_length": 7}
    task_file.write_text(json.dumps(task))
    for spy in (SpyFilter.calls, ListLogger.events, EchoBackend.opened):
        spy.clear()
    recorder = Recorder()
    settings = BreedSettings(
        task="sentiment", day_care_dir=day_care, model_name_or_path="echo", population_size=POPULATION,
        evolution_generations=GENERATIONS, fitness_batch_size=4, debug_mode=True,
        operators=["upper_case", "eda_mutation"], selection_strategy="neighbour_slots", similarity_filter="spy_filter",
        loggers=["list"])
    summary = breed(settings, extra_plugins=[Extensions(), recorder])
    run_dir = day_care / "sentiment" / "DEBUG"
    generations = [json.loads((run_dir / f"generation_{n:03d}.json").read_text()) for n in range(GENERATIONS + 1)]
    return Run(summary, recorder, generations)


def test_hook_lpb_register_mutation_operators(run):
    births = [b for g in run.generations[1:] for b in g["births"]]
    assert [b["operator"] for b in births] == ["upper_case", "eda_mutation"] * GENERATIONS  # in turn (debug mode)
    for generation in run.generations[1:]:
        units = {u["id"]: u for u in generation["population"]}
        for birth in generation["births"]:
            if birth["operator"] == "upper_case":
                assert units[birth["child"]]["prompts"]["task_prompt"].endswith("!")
                # Mutation.notes are recorded with the birth, under the operator's name.
                assert birth["notes"] == {"upper_case": {"generation": generation["generation"]}}


def test_hook_lpb_register_fitness_scorers(run):
    # "positive" and "negative" have 8 characters, longer than min_length 7: every answer counts.
    assert run.summary["best_train_fitness"] == 1.0
    assert all(u["fitness"] == 1.0 for g in run.generations for u in g["population"])


def test_hook_lpb_register_selection_strategies(run):
    for previous, generation in zip(run.generations, run.generations[1:]):
        slots = [u["id"] for u in previous["population"]]
        competitors = [tuple(b["contest"]["competitors"]) for b in generation["births"]]
        assert competitors == [(slots[0], slots[1]), (slots[2], slots[3])]
        assert all(b["contest"]["winner"] == b["contest"]["competitors"][0] for b in generation["births"])  # ties


def test_hook_lpb_register_similarity_filters(run):
    assert len(SpyFilter.calls) == GENERATIONS  # eda_mutation made one child per generation
    assert all(len(prompts) == POPULATION for prompts in SpyFilter.calls)


def test_hook_lpb_register_loggers(run):
    assert ListLogger.events == [("built", "sentiment")] + [("generation", n) for n in range(GENERATIONS + 1)]


def test_hook_lpb_register_model_backends(run):
    assert EchoBackend.opened == ["echo"]
    assert run.summary["model"] == "echo model" and run.summary["prompt_tokens"] > 0


def test_hook_lpb_register_commands():
    """`lpb serve` arrives through the hook, in a real `lpb` process."""
    result = subprocess.run([sys.executable, "-m", "lpb_core", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "serve" in result.stdout
    help_text = subprocess.run([sys.executable, "-m", "lpb_core", "serve", "--help"], capture_output=True, text=True)
    assert "--port" in help_text.stdout and "--server-batch-size" in help_text.stdout and "--quiet" in help_text.stdout


def test_hook_lpb_run_started(run):
    started = run.events.events[0]
    assert isinstance(started, RunStarted) and run.events.of(RunStarted) == [started]
    assert started.resumed_after is None and started.population_size == POPULATION
    assert started.total_generations == GENERATIONS and started.config["model"] == "echo model"


def test_hook_lpb_unit_evaluated(run):
    evaluated = run.events.of(UnitEvaluated)
    # Generation 0 scores every unit; later ones rescore the population on a new minibatch, then the children.
    breeding = [e for e in evaluated if e.stage == "generation"]
    assert [e.generation for e in breeding].count(0) == POPULATION
    assert all(e.unit.fitness is not None and e.items == 4 and 1 <= e.done <= e.total for e in breeding)
    # Then the final: each finalist on the validation items and on the final's training items, then the
    # held-out test of the winner, the initial best and the seeds; all after the last generation.
    after = evaluated[len(breeding):]
    assert breeding == evaluated[:len(breeding)] and {e.generation for e in after} == {GENERATIONS}
    final = [e for e in after if e.stage == "final"]
    held_out = [e for e in after if e.stage == "held_out"]
    assert after == final + held_out
    assert len(final) == 2 * len(run.summary["finalists"]) and [e.done for e in final] == list(range(1, len(final) + 1))
    assert len(held_out) == len(run.summary["held_out"]["units"]) and {e.total for e in held_out} == {len(held_out)}


def test_hook_lpb_mutation_applied(run):
    applied = run.events.of(MutationApplied)
    assert len(applied) == GENERATIONS * POPULATION // 2  # one child per contest
    assert all(e.child.parents == (e.parent.id,) and e.child.operator == e.operator for e in applied)
    assert all(e.replaced != e.parent.id for e in applied)


def test_hook_lpb_generation_finished(run):
    finished = run.events.of(GenerationFinished)
    assert [e.record.generation for e in finished] == list(range(GENERATIONS + 1))
    written = [json.loads(json.dumps(e.record.to_dict()))["population"] for e in finished]
    assert written == [g["population"] for g in run.generations]


def test_hook_lpb_run_finished(run):
    assert run.events.events[-1] == RunFinished(run_dir=run.events.events[-1].run_dir, summary=run.summary)
    for event in run.events.events:  # every event is frozen
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            setattr(event, attrs.fields(type(event))[0].name, None)
