"""End to end on the real embedded model (SmolLM2-135M-Instruct through llama.cpp)."""

import asyncio
import json
import shutil
import subprocess
import sys

import jsonschema
import pytest

from lpb_core.daycare import load_day_care, load_suite
from lpb_core.files import schema
from lpb_core.fitness import FitnessTest, Minibatch
from lpb_core.llm import LanguageModel
from lpb_core.plugins import load_plugins
from lpb_core.run import breed
from lpb_core.settings import BreedSettings
from lpb_core.units import Unit
from tests.conftest import REPO, SpyBackend, spies
from tests.report_checks import check_report

pytestmark = pytest.mark.embedded

ALL_MUTATING = ["zero_order_prompt_gen", "first_order_prompt_gen", "eda_mutation", "eda_rank_index_mutation",
                "lineage_mutation", "zero_order_hypermutation", "first_order_hypermutation", "lamarckian_mutation"]


@pytest.fixture
def built_in(tmp_path):
    target = tmp_path / "day_care"
    shutil.copytree(REPO / "day_care", target, ignore=shutil.ignore_patterns("RUN_*", "DEBUG", "__pycache__"))
    return target


def test_a_small_breed_on_the_embedded_model_and_its_report(built_in, lpb):
    summary = breed(BreedSettings(task="sentiment", day_care_dir=built_in, population_size=4, evolution_generations=1,
                                  fitness_batch_size=6, test_split=0.05, loggers=()))
    jsonschema.validate(summary, schema("summary"))
    assert summary["model"].startswith("smollm2 (SmolLM2-135M-Instruct.Q4_1.gguf, llama.cpp")
    assert summary["generations_completed"] == 1 and summary["stopped_because"] == "completed"
    assert 0.0 <= summary["best_train_fitness"] <= 1.0 and 0.0 <= summary["best_test_fitness"] <= 1.0
    assert summary["completion_tokens"] > 0 and summary["llm_seconds"] > 0
    record = json.loads((built_in / "sentiment" / "RUN_0" / "generation_001.json").read_text())
    assert all(u["prompts"]["task_prompt"].strip() for u in record["population"])
    assert len(record["births"]) == 2
    # The report of a real model's run: its numbers checked against the run's files.
    run_dir = built_in / "sentiment" / "RUN_0"
    assert lpb("report", run_dir).exit_code == 0
    markdown, _ = check_report(run_dir)
    assert "SmolLM2-135M-Instruct" in markdown
    # The winner is compared on the held-out items with the best initial unit, unless it is that unit.
    held_out = summary["held_out"]
    assert held_out["comparisons"] or [r for u in held_out["units"].values() for r in u["roles"]] == [
        "best", "initial_best"]


def test_debug_mode_runs_every_operator_on_the_embedded_model(built_in):
    summary = breed(BreedSettings(task="sentiment", day_care_dir=built_in, population_size=16, evolution_generations=1,
                                  fitness_batch_size=4, test_split=0.0, debug_mode=True, loggers=()))
    record = json.loads((built_in / "sentiment" / "DEBUG" / "generation_001.json").read_text())
    used = [b["operator"] for b in record["births"]]
    assert set(ALL_MUTATING) - {"lamarckian_mutation"} <= set(used)
    # The eighth contest is Lamarckian's turn; it hands over only when the winner has no correct working.
    units = {u["id"]: u for u in record["population"]}
    lamarckian_turn = record["births"][ALL_MUTATING.index("lamarckian_mutation")]
    assert lamarckian_turn["operator"] == "lamarckian_mutation" or not units[lamarckian_turn["contest"]["winner"]]["workings"]
    assert {p for b in record["births"] for p in b["post_operators"]} <= {"prompt_crossover", "context_shuffling"}
    assert summary["generations_completed"] == 1


def score(task_name, prompts, items=20):
    day_care = load_day_care(REPO / "day_care").for_task(task_name)
    task = day_care.task(task_name)
    plugins = load_plugins()
    scorer = plugins.scorers.get(task.scorer_type)(**task.scorer_params)
    test = FitnessTest(day_care, task, scorer, load_suite(task.suite_path, task), ("no_cot",))

    async def go():
        handle = plugins.backends.get("llama.cpp").open("smollm2", BreedSettings(task=task_name, day_care_dir="."))
        model = LanguageModel(handle)
        return [(await test.evaluate(Unit(id="x", prompts={"task_prompt": p}, mutation_prompt="-"),
                                     Minibatch("b", tuple(range(items))), model)).fitness for p in prompts]

    return asyncio.run(go())


def test_the_instruction_matters_on_the_example_task():
    """The room breeding must find: on the same items, one instruction scores far better than another."""
    good, poor = score("sentiment", ["What is the sentiment of this review?",
                                     "Tell me how the writer feels, then say positive or negative."])
    assert good - poor >= 0.3, (good, poor)
    assert 0.0 < poor < good <= 1.0


def test_the_random_model_can_write_prompts_for_the_embedded_one(built_in):
    """--mutation-model: LMQL's random model writes the prompts, the embedded SmolLM2 takes the fitness tests."""
    smollm2, writer = SpyBackend("spy-smollm2", "llama.cpp"), SpyBackend("spy-random", "random")
    summary = breed(BreedSettings(task="sentiment", day_care_dir=built_in, population_size=4, evolution_generations=1,
                                  fitness_batch_size=4, test_split=0.05, model_name_or_path="spy-smollm2",
                                  mutation_model="spy-random", loggers=()), extra_plugins=[spies(smollm2, writer)])
    assert (summary["model"], summary["mutation_model"]) == ("spy-smollm2", "spy-random")
    # Fitness prompts show a review; the built-in prompt-writing templates never do.
    assert any("Review:" in text for text in smollm2.seen) and not any("Review:" in text for text in writer.seen)
    assert any("Instruction" in text for text in writer.seen)
    assert not any("Write the new instruction" in text or "Write an instruction" in text for text in smollm2.seen)


def strip_timings(value):
    if isinstance(value, dict):
        return {k: strip_timings(v) for k, v in value.items() if k not in ("wall_seconds", "llm_seconds")}
    if isinstance(value, list):
        return [strip_timings(v) for v in value]
    return value


def test_the_same_seed_gives_the_same_generations_beside_a_busy_neighbour(tmp_path):
    """The first run decodes its concurrent queries together (the default); the second runs one query at a
    time, in a context of its own, beside a CPU-bound process.  Every generation file is the same."""
    def run(name: str, neighbour: bool, **concurrency) -> dict:
        day_care = tmp_path / name
        shutil.copytree(REPO / "day_care", day_care, ignore=shutil.ignore_patterns("RUN_*", "DEBUG", "__pycache__"))
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if neighbour else None
        try:
            breed(BreedSettings(task="sentiment", day_care_dir=day_care, population_size=4, evolution_generations=1,
                                fitness_batch_size=6, test_split=0.05, seed=5, loggers=(), **concurrency))
        finally:
            if hog is not None:
                hog.kill()
                hog.wait()
        folder = day_care / "sentiment" / "RUN_0"
        return {p.name: strip_timings(json.loads(p.read_text())) for p in sorted(folder.glob("generation_*.json"))}

    idle = run("idle", neighbour=False)
    busy = run("busy", neighbour=True, is_async=True, client_batch_size=1)
    assert sorted(idle) == ["generation_000.json", "generation_001.json"]
    assert busy == idle


def test_server_batch_size_is_how_many_queries_the_in_process_model_decodes_together():
    backend = load_plugins().backends.get("llama.cpp")
    settings = BreedSettings(task="sentiment", day_care_dir=REPO / "day_care", server_batch_size=3)
    assert backend.open("smollm2", settings).concurrency == 3
    # without it: one place for each query run at once, else the engine's default
    assert backend.open("smollm2", BreedSettings(task="sentiment", day_care_dir=REPO / "day_care", is_async=True,
                                                 client_batch_size=5)).concurrency == 5
    assert backend.open("smollm2", BreedSettings(task="sentiment", day_care_dir=REPO / "day_care")).concurrency == 16
