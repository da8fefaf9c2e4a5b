import json
import re
import subprocess
import sys

import jsonschema

from lpb_core.files import schema
from tests.conftest import QUICK_RUN

SEED_ARGUMENTS = [
    "model_name_or_path", "day_care_dir", "task", "decoder_options_override", "fitness_test_suite", "is_async",
    "client_batch_size", "server_batch_size", "population_size", "initial_prompts_per_unit", "evolution_generations",
    "num_eda_samples", "num_lamarckian_reasonings", "chunk_size", "test_CoT", "test_noCoT", "verbose", "seed",
    "continue_run_number", "debug_mode", "use_wandb", "wandb_project",
]


def test_breed_help_shows_every_seed_argument_in_both_spellings(lpb):
    result = lpb("breed", "--help")
    assert result.exit_code == 0
    assert len(SEED_ARGUMENTS) == 22
    for name in SEED_ARGUMENTS:
        assert f"--{name}" in result.output, name
        assert f"--{name.replace('_', '-').lower()}" in result.output, name


def test_seed_underscore_spelling_is_accepted(lpb, day_care):
    result = lpb("breed", "--day_care_dir", day_care, "--model_name_or_path", "random", "--task", "sentiment",
                 "--population_size", "2", "--evolution_generations", "0", "--fitness-batch-size", "2",
                 "--test_noCoT")
    assert result.exit_code == 0, result.output
    summary = json.loads((day_care / "sentiment" / "RUN_0" / "summary.json").read_text())
    assert summary["population_size"] == 2 and summary["generations_completed"] == 0


def test_breed_writes_a_readable_run_directory(lpb, day_care):
    result = lpb("breed", "--day-care-dir", day_care, *QUICK_RUN)
    assert result.exit_code == 0, result.output
    run = day_care / "sentiment" / "RUN_0"
    assert sorted(p.name for p in run.iterdir()) == [
        "breed.lock", "cache.sqlite", "config.json", "events.jsonl", "generation_000.json", "generation_001.json",
        "generation_002.json", "summary.json", "unrecorded_usage.json"]  # the final's calls, for a resume
    summary = json.loads((run / "summary.json").read_text())
    jsonschema.validate(summary, schema("summary"))
    assert summary["model"].startswith("random")
    assert summary["llm_calls"] > 0 and summary["prompt_tokens"] > 0 and summary["completion_tokens"] > 0
    assert summary["best_unit"]["prompts"]["task_prompt"]
    config = json.loads((run / "config.json").read_text())
    assert config["settings"]["population_size"] == 4
    assert {"lpb-operators", "lpb-scorers"} <= {p["name"] for p in config["plugins"]}
    assert all(p["version"] for p in config["plugins"])
    generation = json.loads((run / "generation_002.json").read_text())
    assert len(generation["population"]) == 4
    assert all(u["fitness"] is not None for u in generation["population"])
    # The CLI ends with the best prompt and where the run is.
    assert "Best prompt" in result.output and str(run) in result.output
    assert re.search(r"Fitness: \d\.\d{3}", result.output)


def test_second_run_gets_the_next_number(lpb, day_care):
    for _ in range(2):
        assert lpb("breed", "--day-care-dir", day_care, *QUICK_RUN[:-4], "--evolution-generations", "0").exit_code == 0
    assert (day_care / "sentiment" / "RUN_1" / "summary.json").exists()


def test_debug_mode_writes_to_the_debug_folder_and_cycles_operators(lpb, day_care):
    result = lpb("breed", "--day-care-dir", day_care, *QUICK_RUN, "--debug-mode",
                 "--operators", "zero_order_prompt_gen,first_order_prompt_gen,eda_mutation,lineage_mutation")
    assert result.exit_code == 0, result.output
    debug = day_care / "sentiment" / "DEBUG"
    births = [b for n in (1, 2) for b in json.loads((debug / f"generation_00{n}.json").read_text())["births"]]
    assert [b["operator"] for b in births] == ["zero_order_prompt_gen", "first_order_prompt_gen",
                                               "eda_mutation", "lineage_mutation"]
    assert not list((day_care / "sentiment").glob("RUN_*"))


def test_plugins_lists_builtins_as_json(lpb):
    result = lpb("plugins", "--json")
    assert result.exit_code == 0
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert rows["lpb-selection"]["registers"]["selection_strategies"] == ["binary_tournament", "tournament_elitism"]
    assert rows["lpb-operators"]["distribution"] == "llama-day-care"
    assert len(rows["lpb-operators"]["registers"]["mutation_operators"]) == 10


def test_disabled_plugin_is_left_out(lpb):
    rows = {row["name"] for row in json.loads(lpb("plugins", "--json", "-p", "lpb-loggers").output)}
    assert "lpb-loggers" not in rows and "lpb-operators" in rows


def test_selection_strategy_is_swapped_by_name(lpb, day_care):
    result = lpb("breed", "--day-care-dir", day_care, *QUICK_RUN, "--selection-strategy", "tournament_elitism",
                 "--population-size", "6")
    assert result.exit_code == 0, result.output
    generation = json.loads((day_care / "sentiment" / "RUN_0" / "generation_001.json").read_text())
    assert all(len(b["contest"]["competitors"]) == 3 for b in generation["births"])


def test_validate_reports_ok_for_the_shipped_day_care(lpb):
    result = lpb("validate")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok:")
    assert "answer_quality" in result.output and "sentiment" in result.output


def test_run_files_are_written_atomically_and_readable(tmp_path, monkeypatch):
    import os

    import pytest

    from lpb_core.files import write_json_atomic

    target = tmp_path / "summary.json"
    write_json_atomic(target, {"ok": 1})
    assert oct(target.stat().st_mode & 0o777) == "0o644"

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        write_json_atomic(target, {"ok": 2})
    assert json.loads(target.read_text()) == {"ok": 1}  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temporary file left behind


def test_background_task_leftovers_are_silent_without_verbose():
    # What a served model's client leaves behind at the end of a run, in a fresh interpreter as lpb runs.
    script = """
import asyncio, gc, sys
from lpb_core.cli import quiet_shutdown_noise
if sys.argv[1] == "quiet":
    quiet_shutdown_noise()

async def forever():
    await asyncio.sleep(3600)

class Pause:
    def __await__(self):
        yield

async def coroutine_that_ignores_close():
    try:
        await Pause()
    except GeneratorExit:
        await Pause()

loop = asyncio.new_event_loop()
task = loop.create_task(forever())
loop.run_until_complete(asyncio.sleep(0))
stuck = coroutine_that_ignores_close()
stuck.send(None)
loop.close()
del task, stuck
gc.collect()
"""
    loud = subprocess.run([sys.executable, "-c", script, "loud"], capture_output=True, text=True, timeout=60)
    assert "Task was destroyed but it is pending" in loud.stderr and "ignored GeneratorExit" in loud.stderr
    quiet = subprocess.run([sys.executable, "-c", script, "quiet"], capture_output=True, text=True, timeout=60)
    assert quiet.returncode == 0 and quiet.stderr == ""
