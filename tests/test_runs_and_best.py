"""events.jsonl through a kill -9, `lpb runs` (statuses and the command that resumes), and `lpb best`."""

import fcntl
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

import attrs
import lmql
import pytest

from lpb_core.rundir import EVENTS_FILE, LOCK_FILE
from lpb_plugins.run_data import read_events
from tests.conftest import FIXTURES

ARGS = ["--model-name-or-path", "random", "--task", "sentiment", "--population-size", "4",
        "--evolution-generations", "2", "--fitness-batch-size", "3", "--seed", "5"]


def lpb_command(*args):
    return [sys.executable, "-m", "lpb_core", *map(str, args)]


def kill_after_generation(day_care, generation):
    """Start a breed, SIGKILL it once generation_<generation>.json is written; returns the run directory."""
    run = day_care / "sentiment" / "RUN_0"
    process = subprocess.Popen(lpb_command("breed", "--day-care-dir", day_care, *ARGS), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while not (run / f"generation_{generation:03d}.json").exists():
        assert process.poll() is None, process.stdout.read()
        assert time.time() < deadline
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    return run


def test_events_survive_kill_and_lpb_runs_gives_the_command_that_resumes(tmp_path, lpb):
    day_care = tmp_path / "day_care"
    shutil.copytree(FIXTURES / "tiny_day_care", day_care)
    run = kill_after_generation(day_care, 1)
    assert not (run / "summary.json").exists()

    lines = (run / EVENTS_FILE).read_text().splitlines()
    events = [json.loads(line) for line in lines]  # every line whole and valid JSON
    assert events[0]["event"] == "run_started" and events[0]["total_generations"] == 2
    generations = sorted(int(p.stem.split("_")[1]) for p in run.glob("generation_*.json"))
    finished = [e["generation"] for e in events if e["event"] == "generation_finished"]
    assert finished[:len(generations)] == generations  # each written generation was logged right after
    for number in generations:  # and every child of it was logged before that
        record = json.loads((run / f"generation_{number:03d}.json").read_text())
        children = {b["child"] for b in record["births"]}
        applied = {e["child"] for e in events if e["event"] == "mutation_applied" and e["generation"] == number}
        assert children == applied
        scored = {e["unit"] for e in events if e["event"] == "unit_evaluated" and e["generation"] == number}
        assert {u["id"] for u in record["population"]} <= scored  # losers were scored too, then replaced

    result = lpb("runs", day_care, "--json")
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.stdout)
    assert row["status"] == "interrupted" and row["generations_done"] == generations[-1]
    assert row["generations_asked"] == 2 and row["model"] == "random"
    command = shlex.split(row["resume_command"])
    assert command[:2] == ["lpb", "breed"] and "--continue-run-number" in command
    text = lpb("runs", day_care).output
    assert f"sentiment/RUN_0: interrupted, generation {generations[-1]}/2, best so far {row['best_unit']}: training " \
           f"minibatch {row['best_train_fitness']:.3f}, random" in text and row["resume_command"] in text

    with open(run / EVENTS_FILE, "a") as log:  # as a crash in the middle of a write would leave it
        log.write('{"event": "unit_evalu')
    resumed = subprocess.run(lpb_command(*command[1:]), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "Resuming" in resumed.stderr
    [row] = json.loads(lpb("runs", day_care, "--json").stdout)
    assert row["status"] == "finished" and row["generations_done"] == 2 and row["resume_command"] is None
    assert row["best_held_out_fitness"] is not None
    assert (f"sentiment/RUN_0: finished, generation 2/2, winner {row['best_unit']}: validation "
            f"{row['best_validation_fitness']:.3f}, held-out {row['best_held_out_fitness']:.3f}, random"
            in lpb("runs", day_care).output)
    after = read_events(run / EVENTS_FILE)
    assert after[:len(events)] == events  # appended, never rewritten
    assert [e["event"] for e in after].count("run_started") == 2 and after[-1]["event"] == "run_finished"
    # the cut line is lost, not the resume's first event after it
    assert (run / EVENTS_FILE).read_text().count('{"event": "unit_evalu\n{"event": "run_started"') == 1


@pytest.mark.parametrize("name, content, expected", [
    ("generation_001.json", {}, "generation_001.json: $.generation: missing"),
    ("config.json", [], "config.json: $: expected an object, got a list"),
    ("summary.json", {"task": "sentiment"}, "summary.json: $.model: missing"),
])
def test_a_damaged_run_file_is_bad_input_naming_the_file_and_field(run_copy, lpb, name, content, expected):
    (run_copy / name).write_text(json.dumps(content))
    for command in (("best", run_copy), ("report", run_copy, "--json"), ("runs", run_copy.parent.parent),
                    ("eval", "--run", run_copy, "--model-name-or-path", "random")):
        result = lpb(*command)
        assert result.exit_code == 2, (command, result.output)
        assert expected in result.stderr and "Traceback" not in result.output, (command, result.stderr)


def test_a_breed_holding_the_run_lock_shows_as_running(run_copy, lpb):
    (run_copy / "summary.json").unlink()
    day_care = run_copy.parent.parent
    # A breeding process holds the lock (flock); the kernel releases it however the process ends.
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys; f = open(sys.argv[1], 'w'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); sys.stdin.read()",
                               str(run_copy / LOCK_FILE)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        [row] = json.loads(lpb("runs", day_care, "--task", "sentiment", "--json").stdout)
        assert row["status"] == "running" and row["resume_command"] is None
    finally:
        holder.kill()
        holder.wait()
    [row] = json.loads(lpb("runs", day_care, "--json").stdout)
    assert row["status"] == "interrupted"
    with open(run_copy / LOCK_FILE) as lock:  # looking never leaves the lock taken
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_a_budget_stop_resumes_without_the_budget_it_hit(tmp_path, lpb):
    day_care = tmp_path / "day_care"
    shutil.copytree(FIXTURES / "tiny_day_care", day_care)
    result = lpb("breed", "--day-care-dir", day_care, *ARGS, "--max-llm-calls", "30", "--max-tokens", "100000000",
                 "--quiet")
    assert result.exit_code == 0, result.output
    [row] = json.loads(lpb("runs", day_care, "--json").stdout)
    assert row["status"] == "stopped by budget"
    command = shlex.split(row["resume_command"])
    assert "--max-llm-calls" not in command and command[command.index("--max-tokens") + 1] == "100000000"
    assert lpb(*command[1:], "--quiet").exit_code == 0
    [row] = json.loads(lpb("runs", day_care, "--json").stdout)
    assert row["status"] == "finished" and row["generations_done"] == 2


def test_a_resume_needs_only_the_task_and_the_run_number(tmp_path, lpb):
    day_care = tmp_path / "day_care"
    shutil.copytree(FIXTURES / "tiny_day_care", day_care)
    first = lpb("breed", "--day-care-dir", day_care, *ARGS, "--initial-prompt", "Positive or negative?",
                "--max-llm-calls", "30", "--quiet")
    assert first.exit_code == 0, first.output
    [row] = json.loads(lpb("runs", day_care, "--json").stdout)
    assert row["status"] == "stopped by budget"
    # the model, population, seed and the user's prompt are the run's own: a changed one would be refused
    resumed = lpb("breed", "--day-care-dir", day_care, "--task", "sentiment", "--continue-run-number", "0", "--quiet")
    assert resumed.exit_code == 0, resumed.output
    [row] = json.loads(lpb("runs", day_care, "--json").stdout)
    assert row["status"] == "finished" and row["generations_done"] == row["generations_asked"] == 2
    again = lpb("breed", "--day-care-dir", day_care, "--task", "sentiment", "--continue-run-number", "0")
    assert again.exit_code == 0 and "all 2 generations are done, so only the final is made" in again.stderr


def test_a_bare_resume_keeps_the_runs_loggers_and_wandb_project(tmp_path):
    from lpb_core.cli_breed import with_run_settings
    from lpb_core.settings import BreedSettings

    run_dir = tmp_path / "day_care" / "sentiment" / "RUN_0"
    run_dir.mkdir(parents=True)
    saved = {"loggers": ["console", "events", "my_jsonl"], "use_wandb": True, "wandb_project": "mine",
             "max_llm_calls": 30}
    (run_dir / "config.json").write_text(json.dumps({"settings": {"task": "sentiment", **saved}, "model": "random",
                                                     "operators": []}))
    bare = BreedSettings(task="sentiment", day_care_dir=tmp_path / "day_care", continue_run_number=0)
    resumed = with_run_settings(bare, {"task", "continue_run_number"})
    assert (resumed.loggers, resumed.use_wandb, resumed.wandb_project) == (("console", "events", "my_jsonl"), True,
                                                                          "mine")
    assert resumed.max_llm_calls is None  # a budget is the resume's own: the run stopped on the old one
    quiet = with_run_settings(attrs.evolve(bare, loggers=("events",)), {"task", "continue_run_number", "quiet"})
    assert quiet.loggers == ("events", "my_jsonl")
    other = with_run_settings(attrs.evolve(bare, loggers=("console", "events", "csv")), {"task", "logger"})
    assert other.loggers == ("console", "events", "csv")


def test_a_resume_uses_the_operators_the_run_was_made_with(day_care):
    from lpb_core.errors import InputErrors
    from lpb_core.run import prepare
    from lpb_core.settings import BreedSettings

    run_dir = day_care / "sentiment" / "RUN_0"
    run_dir.mkdir()
    config = {"settings": {"task": "sentiment"}, "model": "random"}
    (run_dir / "config.json").write_text(json.dumps({**config, "operators": ["zero_order_prompt_gen",
                                                                             "context_shuffling"]}))
    resume = BreedSettings(task="sentiment", day_care_dir=day_care, continue_run_number=0, loggers=())
    prepared = prepare(resume)  # not every operator installed now, as a plugin installed since would add one
    assert [o.name for o in prepared.operators + prepared.post_operators] == ["zero_order_prompt_gen",
                                                                               "context_shuffling"]
    assert len(prepare(attrs.evolve(resume, continue_run_number=None)).operators) > 1
    (run_dir / "config.json").write_text(json.dumps({**config, "operators": ["zero_order_prompt_gen", "gone_op"]}))
    with pytest.raises(InputErrors) as refused:
        prepare(resume)
    assert f"{run_dir / 'config.json'}: $.operators: the run was made with operator 'gone_op'" in str(refused.value)


def test_a_resume_that_changes_a_setting_of_the_run_is_refused(tmp_path, lpb):
    day_care = tmp_path / "day_care"
    shutil.copytree(FIXTURES / "tiny_day_care", day_care)
    assert lpb("breed", "--day-care-dir", day_care, *ARGS, "--max-llm-calls", "30", "--quiet").exit_code == 0
    resumed = lpb("breed", "--day-care-dir", day_care, "--task", "sentiment", "--continue-run-number", "0",
                  "--population-size", "6", "--quiet")
    assert resumed.exit_code == 2
    assert resumed.output.strip().endswith("config.json: $.settings.population_size: this run was made with 4, not 6; "
                                           "a resumed run must use the same settings")
    resumed = lpb("breed", "--day-care-dir", day_care, "--task", "sentiment", "--continue-run-number", "0",
                  "--operators", "zero_order_prompt_gen", "--quiet")
    assert resumed.exit_code == 2 and "this run was made with the default, not ['zero_order_prompt_gen']" in \
        resumed.output


def test_best_prints_the_bare_prompt_and_json(lpb, finished_run):
    summary = json.loads((finished_run / "summary.json").read_text())
    text = lpb("best", finished_run)
    assert text.exit_code == 0 and text.stdout.startswith(summary["best_unit"]["prompts"]["task_prompt"] + "\n")
    assert text.stdout.count("\nExample ") == len(summary["best_unit"]["context"])
    data = json.loads(lpb("best", finished_run, "--format", "json").stdout)
    assert data["prompts"] == summary["best_unit"]["prompts"] and data["id"] == summary["best_unit"]["id"]
    assert data["context"] == summary["best_unit"]["context"]
    assert data["fitness"] == {"train": summary["best_train_fitness"], "validation": summary["best_validation_fitness"],
                               "finals": summary["best_finals_fitness"],
                               "held_out": summary["best_test_fitness"]}


def test_best_as_text_shows_the_worked_examples_the_winner_was_scored_with(lpb, run_copy):
    summary_file = run_copy / "summary.json"
    summary = json.loads(summary_file.read_text())
    summary["best_unit"]["context"] = [{"question": "Review: Loved it.", "reasoning": "", "answer": "positive"},
                                       {"question": "Review: Broke at once.", "reasoning": "It broke.", "answer": "negative"}]
    summary_file.write_text(json.dumps(summary))
    text = lpb("best", run_copy)
    assert text.exit_code == 0, text.output
    prompt = summary["best_unit"]["prompts"]["task_prompt"]
    assert text.stdout == (f"{prompt}\n\n--- and 2 worked example(s) from the training items, which the fitness template "
                           "shows with it ---\n\nExample 1:\nReview: Loved it.\n\npositive\n\n"
                           "Example 2:\nReview: Broke at once.\nIt broke.\nnegative\n")


def test_best_as_lmql_is_a_query_lmql_runs(lpb, finished_run):
    result = lpb("best", finished_run, "--format", "lmql")
    assert result.exit_code == 0, result.output
    code = result.stdout
    summary = json.loads((finished_run / "summary.json").read_text())
    assert repr(summary["best_unit"]["prompts"]["task_prompt"]) in code
    assert "\nargmax\n" in code  # the fitness decoder of the tiny day care
    # The usage its header gives, run as written.
    usage = [line[len("#   "):] for line in code.splitlines() if line.startswith("#   ")]
    script = "\n".join(usage).replace("open('best.lmql').read()", "code").replace("text=...", "text=review")
    script = script.replace("model=lmql.model(...)", "model=lmql.model('random', seed=1)")
    namespace = {"code": code, "review": "Loved every minute of it."}
    exec(compile(script.replace("\nquery(", "\nanswer = query("), "usage", "exec"), namespace)
    assert namespace["answer"] in ("positive", "negative")
    result = namespace["query"](text="Loved every minute of it.", model=lmql.model("random", seed=1))
    assert summary["best_unit"]["prompts"]["task_prompt"] in result.prompt


def test_a_run_started_with_a_relative_day_care_resumes_from_where_it_was_started(run_copy, lpb):
    day_care = run_copy.parent.parent
    config = json.loads((run_copy / "config.json").read_text())
    config["settings"]["day_care_dir"] = "day_care"  # as typed in the directory above it
    config["day_care"] = str(day_care)  # as resolved
    (run_copy / "config.json").write_text(json.dumps(config))
    (run_copy / "summary.json").unlink()
    [row] = json.loads(lpb("runs", day_care, "--json").stdout)
    command = shlex.split(row["resume_command"])
    assert command[:4] == ["cd", str(day_care.parent), "&&", "lpb"]
    assert command[command.index("--day-care-dir") + 1] == "day_care"


def test_the_run_file_schemas_know_every_field_a_breed_writes(finished_run):
    from lpb_core import files
    from lpb_core.units import Unit, Usage

    schema = files.schema("generation")
    # from_dict takes exactly these: a field added to Unit or Usage must be added to the schema
    assert set(schema["$defs"]["unit"]["properties"]) == {f.name for f in attrs.fields(Unit)}
    assert set(schema["properties"]["usage"]["properties"]) == {f.name for f in attrs.fields(Usage)}
    assert files.schema("unrecorded_usage")["properties"]["usage"] == schema["properties"]["usage"]
    generations = sorted(finished_run.glob("generation_*.json"))
    assert len(generations) == 4
    for path in generations:
        files.check(json.loads(path.read_text()), "generation", path)
    files.check(json.loads((finished_run / "config.json").read_text()), "run_config", finished_run)


def test_calls_made_after_the_last_generation_written_count_when_the_run_resumes(tmp_path, lpb):
    from lpb_core.rundir import UNRECORDED_FILE

    def queries(usage: dict) -> int:  # every query asked: the model's calls and the cache's answers
        return usage["llm_calls"] + usage["cache_hits"]

    def generation(day_care, number: int) -> dict:
        path = day_care / "sentiment" / "RUN_0" / f"generation_{number:03d}.json"
        return json.loads(path.read_text())["usage"]

    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    for day_care in (whole, stopped):
        shutil.copytree(FIXTURES / "tiny_day_care", day_care)
    assert lpb("breed", "--day-care-dir", whole, *ARGS, "--quiet").exit_code == 0
    # the same breed stopped by its budget in the middle of generation 2, then resumed without one
    first = generation(whole, 1)["llm_calls"]
    assert lpb("breed", "--day-care-dir", stopped, *ARGS, "--quiet", "--max-llm-calls", str(first + 5)).exit_code == 0
    run = stopped / "sentiment" / "RUN_0"
    spent = json.loads((run / "summary.json").read_text())
    recorded = generation(stopped, 1)
    assert not (run / "generation_002.json").exists()
    unrecorded = json.loads((run / UNRECORDED_FILE).read_text())["usage"]
    assert queries(unrecorded) == queries(spent) - queries(recorded) > 0  # generation 2's calls until the stop
    assert lpb("breed", "--day-care-dir", stopped, "--task", "sentiment", "--continue-run-number", "0",
               "--quiet").exit_code == 0
    # generation 2 was made again from its start: its totals hold both attempts
    assert queries(generation(stopped, 2)) == queries(generation(whole, 2)) + queries(unrecorded)
    assert not (run / UNRECORDED_FILE).exists() or json.loads((run / UNRECORDED_FILE).read_text())["usage"] != unrecorded


def test_best_of_an_unfinished_run_says_it_may_not_be_the_winner(run_copy, lpb):
    (run_copy / "summary.json").unlink()  # as a breed stopped before its end leaves it
    result = lpb("best", run_copy)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip()
    assert f"Warning: {run_copy} has not finished: this is the fittest unit of generation 3 on its minibatch, not " \
           "the run's winner" in result.stderr


def test_a_run_named_by_task_and_number_is_looked_for_in_the_built_in_day_care_unless_told(lpb):
    for command in ("best", "report"):
        result = lpb(command, "--task", "intent", "--run-number", "0")
        assert result.exit_code == 2, result.output
        assert "has no intent/RUN_0: give --day-care-dir for a run of your own day care" in result.stderr


def test_a_run_stopped_before_its_first_generation_says_so(run_copy, lpb):
    for path in [*run_copy.glob("generation_*.json"), run_copy / "summary.json", run_copy / "unrecorded_usage.json"]:
        path.unlink(missing_ok=True)
    text = lpb("runs", run_copy.parent.parent).stdout
    assert "sentiment/RUN_0: interrupted, no generation written yet (3 asked), no score yet, random" in text
    assert lpb("report", run_copy).exit_code == 0
    assert ("interrupted before the first generation was written. Model random (seed 2), population 4, no generation "
            "written yet, of 3.") in (run_copy / "report.md").read_text()
