"""The user's own prompts in a breed: seeds in generation 0, the winner chosen on validation items,
held-out comparisons with those prompts, `lpb eval`, and a separate model that writes the prompts."""

import asyncio
import json
import re

import attrs
import pytest

from lpb_core.finals import choose_winner
from lpb_core.fitness import Minibatch, Split
from lpb_core.run import breed
from lpb_core.settings import BreedSettings
from tests.conftest import QUICK_RUN, SpyBackend, spies

MINE = "Is this review positive or negative?"
OTHER = "Judge the review."


def settings(day_care, **changes):
    base = dict(task="sentiment", day_care_dir=day_care, model_name_or_path="random", population_size=4,
                evolution_generations=2, fitness_batch_size=3, test_split=0.2, validation_split=0.25, loggers=())
    return BreedSettings(**{**base, **changes})


def generation(day_care, n, run=0):
    return json.loads((day_care / "sentiment" / f"RUN_{run}" / f"generation_{n:03d}.json").read_text())


def test_initial_prompts_become_seeded_units_of_generation_zero(day_care):
    task_file = day_care / "sentiment" / "task_description.json"
    task = json.loads(task_file.read_text())
    task["initial_prompts"] = [OTHER, {"task_prompt": "Positive or negative?"}]
    task_file.write_text(json.dumps(task))
    summary = breed(settings(day_care, initial_prompts=(MINE, OTHER)))  # OTHER twice: kept once
    units = generation(day_care, 0)["population"]
    seeded = [(u["id"], u["prompts"]["task_prompt"]) for u in units if u["operator"] == "seed"]
    assert seeded == [("u0000", OTHER), ("u0001", "Positive or negative?"), ("u0002", MINE)]
    # The task description itself takes the next place; the paper's initialisation has none left here.
    assert [(u["operator"], u["prompts"]["task_prompt"]) for u in units[3:]] == [("task_description", task["task_description"])]
    config = json.loads((day_care / "sentiment" / "RUN_0" / "config.json").read_text())
    assert config["settings"]["initial_prompts"] == [MINE, OTHER]
    held_out = summary["held_out"]["units"]
    assert {"u0000", "u0001", "u0002"} <= {i for i, u in held_out.items() if "seed" in u["roles"]}


def test_the_winner_is_chosen_on_validation_and_training_items_and_never_below_a_seed(day_care):
    summary = breed(settings(day_care, initial_prompts=(MINE,), evolution_generations=3, finalists=2))
    finalists = {f["id"]: f for f in summary["finalists"]}
    assert "u0000" in finalists  # the seed always competes in the final
    best = summary["best_unit"]["id"]
    assert summary["best_validation_fitness"] == finalists[best]["validation_fitness"]
    assert summary["best_finals_fitness"] == finalists[best]["finals_fitness"]
    assert summary["best_finals_fitness"] >= finalists["u0000"]["finals_fitness"]
    if best != "u0000":  # a bred prompt displaces the seed only by beating it on the validation items
        assert summary["best_validation_fitness"] > finalists["u0000"]["validation_fitness"]
    eligible = [f for f in finalists.values()
                if f["operator"] == "seed" or f["validation_fitness"] > finalists["u0000"]["validation_fitness"]]
    assert summary["best_finals_fitness"] == max(f["finals_fitness"] for f in eligible)
    assert summary["validation_items"] == 4 and summary["train_items"] == 4  # 8 left after the test items
    assert summary["finals_items"] == 8
    for f in finalists.values():  # finals fitness pools both sets, weighted by their item counts
        assert f["finals_fitness"] == round((f["validation_fitness"] + f["finals_train_fitness"]) / 2, 6)
    # Held-out items stay untouched by choosing: no validation item is a test item.
    held_out = summary["held_out"]
    assert len(held_out["items"]) == summary["test_items"] == 2
    for unit in held_out["units"].values():
        assert len(unit["correct"]["no_cot"]) == 2
    comparisons = {c["b"]: c for c in held_out["comparisons"]}
    assert "u0000" in comparisons or best == "u0000"
    for comparison in comparisons.values():
        assert comparison["a"] == best and 0.0 <= comparison["p_value"] <= 1.0
        assert " on 2 held-out items: " in comparison["sentence"]


def test_a_seed_ahead_of_the_winner_on_validation_items_alone_is_said(lpb, day_care, monkeypatch):
    import lpb_core.run
    from lpb_core.cli_breed import seeds_ahead_on_validation

    def finalist(unit_id, operator, validation, finals):
        return {"id": unit_id, "operator": operator, "train_fitness": 0.5, "finals_train_fitness": None,
                "validation_fitness": validation, "finals_fitness": finals}

    # As in a recorded app_reviews final: of the user's two good prompts, the one best on all 100 items trails
    # the other on the 30 validation items alone.
    summary = {"best_unit": {"id": "u0000"}, "best_validation_fitness": 0.767, "best_finals_fitness": 0.79,
               "validation_items": 30, "finals_items": 100,
               "finalists": [finalist("u0031", "lamarckian_mutation", 0.7, 0.73),
                             finalist("u0000", "seed", 0.767, 0.79), finalist("u0002", "seed", 0.8, 0.77),
                             finalist("u0001", "seed", 0.5, 0.5), finalist("u0009", "initial", 0.9, 0.7)]}
    assert seeds_ahead_on_validation(summary) == [
        "your prompt u0002 scored higher on the 30 validation items alone (0.800 vs 0.767); the winner leads on "
        "all 100 items the final compares (0.790 vs 0.770)"]
    # Without validation items (--validation-split 0) there is nothing to say.
    assert seeds_ahead_on_validation({**summary, "best_validation_fitness": None}) == []
    # lpb breed says it under the winner's fitness.
    summary.update(best_unit={"id": "u0000", "born": 0, "operator": "seed", "prompts": {"task_prompt": "x"}}, best_train_fitness=0.6, best_test_fitness=None, held_out=None, stopped_because="completed",
                   run_dir="RUN_0")
    monkeypatch.setattr(lpb_core.run, "breed", lambda settings: summary)
    result = lpb("breed", "--day-care-dir", day_care, *QUICK_RUN)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[lines.index("  task_prompt: x") + 2] == "  " + seeds_ahead_on_validation(summary)[0]
    # A winner shown to beat one label every time gets no advice.
    summary["held_out"] = {"comparisons": [], "constant_answer": {
        "answer": "sports", "comparison": {"verdict": "better", "sentence": "0.650 vs 0.336 on 140 held-out items"}}}
    result = lpb("breed", "--day-care-dir", day_care, *QUICK_RUN)
    assert "  against answering 'sports' every time: 0.650 vs 0.336 on 140 held-out items" in result.output
    assert "Not shown to beat that" not in result.output


class TableFitness:
    """Fitness read from a table of (unit id, item set) -> fitness; records what was scored."""

    def __init__(self, table):
        self.table, self.scored = table, []

    async def evaluate(self, unit, batch: Minibatch, model):
        self.scored.append((unit.id, batch.id, batch.indices))
        return attrs.evolve(unit, fitness=self.table[unit.id, batch.id])


def test_finalists_are_compared_on_validation_and_training_items_pooled():
    from lpb_core.units import SEED, GenerationRecord, Unit

    def unit(uid, fitness, operator="initial"):
        return Unit(id=uid, prompts={"task_prompt": uid}, mutation_prompt="", fitness=fitness, operator=operator)

    first, second = unit("u0000", 0.5, SEED), unit("u0001", 0.4, SEED)
    bred = unit("u0005", 0.9, "zero_order_prompt_gen")
    history = [GenerationRecord(0, [first, second, unit("u0002", 0.3)], minibatch=()),
               GenerationRecord(1, [bred, unit("u0006", 0.2)], minibatch=())]
    # The second seed is one validation answer below the first and well above it on the training items;
    # the bred unit tops its minibatch and validation but not the pool.
    table = {("u0000", "validation"): 0.7, ("u0000", "finals_train"): 0.5, ("u0001", "validation"): 0.6,
             ("u0001", "finals_train"): 0.9, ("u0005", "validation"): 0.75, ("u0005", "finals_train"): 0.4}
    fitness = TableFitness(table)
    items = Split(train=tuple(range(40)), validation=tuple(range(40, 50)), test=(50,), finals_train=tuple(range(30)))
    winner, results = asyncio.run(choose_winner(history, fitness, None, items, count=1))
    assert winner.id == "u0001"
    pooled = {f.unit.id: f.finals_fitness for f in results}
    assert pooled == {"u0005": 0.4875, "u0000": 0.55, "u0001": 0.825}  # weighted 30:10
    assert {f.unit.id: f.validation_fitness for f in results}["u0005"] == 0.75
    assert {(uid, batch) for uid, batch, _ in fitness.scored} == set(table)
    batches = {batch: indices for _, batch, indices in fitness.scored}
    assert batches == {"validation": items.validation, "finals_train": items.finals_train}  # never the test item
    # Top of the pool but only level with the first seed on validation items: the seeds keep the final.
    table.update({("u0005", "validation"): 0.7, ("u0005", "finals_train"): 1.0})
    assert asyncio.run(choose_winner(history, TableFitness(table), None, items, count=1))[0].id == "u0001"
    table[("u0005", "validation")] = 0.8
    assert asyncio.run(choose_winner(history, TableFitness(table), None, items, count=1))[0].id == "u0005"


def test_a_finalist_still_in_the_last_generation_is_taken_as_it_stands_there():
    from lpb_core.finals import finalists
    from lpb_core.units import SEED, GenerationRecord, Unit

    seed = Unit(id="u0000", prompts={"task_prompt": MINE}, mutation_prompt="", fitness=1.0, scored_on="g0",
                operator=SEED)
    survived = attrs.evolve(seed, fitness=0.75, scored_on="g2")
    history = [GenerationRecord(0, [seed], minibatch=()), GenerationRecord(2, [survived], minibatch=())]
    assert finalists(history, count=1) == [survived]  # as the best of the last generation, and as the seed


def test_a_bred_prompt_displaces_the_users_only_by_beating_them_on_validation_items():
    from lpb_core.finals import Finalist, eligible
    from lpb_core.units import SEED, Unit

    def finalist(uid, operator, validation, pooled):
        unit = Unit(id=uid, prompts={"task_prompt": uid}, mutation_prompt="", fitness=0.5, operator=operator)
        return Finalist(unit, validation, None, pooled)

    seeds = [finalist("u0000", SEED, 0.7, 0.66), finalist("u0001", SEED, 0.5, 0.8)]
    tied = finalist("u0009", "initial", 0.7, 0.69)  # level with the best seed on validation: not enough
    below = finalist("u0031", "lamarckian_mutation", 0.633, 0.73)  # ahead on the pool only, where it was bred
    above = finalist("u0040", "eda_mutation", 0.733, 0.6)
    assert [f.unit.id for f in eligible(seeds + [tied, below, above])] == ["u0000", "u0001", "u0040"]
    # Without the user's prompts every finalist may win.
    assert eligible([tied, below, above]) == [tied, below, above]


def test_without_validation_items_the_fittest_of_the_last_generation_wins(day_care):
    summary = breed(settings(day_care, validation_split=0.0))
    assert summary["validation_items"] == 0 and summary["finalists"] == []
    last = generation(day_care, 2)
    fittest = max(last["population"], key=lambda u: u["fitness"])
    assert summary["best_unit"]["id"] == fittest["id"]


def test_seed_prompts_that_cannot_work_are_bad_input(lpb, day_care):
    result = lpb("breed", "--day-care-dir", day_care, *QUICK_RUN, *["--initial-prompt", "x"] * 1,
                 "--initial-prompt", "y", "--initial-prompt", "z", "--initial-prompt", "w", "--initial-prompt", "v")
    assert result.exit_code == 2
    assert result.output.strip() == ("Error: command line: --population-size: 5 initial prompts do not fit a "
                                     "population of 4")
    task_file = day_care / "sentiment" / "task_description.json"
    task = json.loads(task_file.read_text())
    task["initial_prompts"] = [{"system_prompt": "Be brief."}]
    task_file.write_text(json.dumps(task))
    result = lpb("breed", "--day-care-dir", day_care, *QUICK_RUN)
    assert result.exit_code == 2
    assert f"{task_file}: $.initial_prompts[0].system_prompt: unknown prompt field" in result.output
    task["initial_prompts"] = [""]
    task_file.write_text(json.dumps(task))
    result = lpb("breed", "--day-care-dir", day_care, *QUICK_RUN)
    assert result.exit_code == 2 and f"{task_file}: $.initial_prompts[0]" in result.output
    assert not list((day_care / "sentiment").glob("RUN_*"))


def test_eval_scores_prompts_with_intervals_and_paired_comparisons(lpb, day_care):
    result = lpb("eval", "--day-care-dir", day_care, "--task", "sentiment", "--model-name-or-path", "random",
                 "--prompt", MINE, "--prompt", OTHER, "--items", "all", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["item_count"] == 10 and [p["label"] for p in report["prompts"]] == ["--prompt 1", "--prompt 2"]
    from lpb_plugins.scorers import Accuracy

    scorer = Accuracy(labels=["positive", "negative"])  # the task's
    for row in report["prompts"]:
        assert len(row["correct"]) == len(row["answers"]) == 10
        assert row["accuracy"] == sum(row["correct"]) / 10
        assert row["correct"] == [scorer.is_correct(a, g) for a, g in zip(row["answers"], golds(day_care, row))]
        assert row["unreadable"] == sum(not scorer.can_read(a) for a in row["answers"])
        low, high = row["interval_95"]
        assert 0.0 <= low <= row["accuracy"] <= high <= 1.0
    (comparison,) = report["comparisons"]
    assert comparison["a"] == "--prompt 2" and comparison["b"] == "--prompt 1"
    assert comparison["sentence"].startswith(f"{report['prompts'][1]['accuracy']:.3f} vs ")
    # One label every time, scored on the same items: the floor a prompt must rise above.
    constant = report["constant_answer"]
    gold = golds(day_care, report["prompts"][0])
    assert constant["correct"] == [g == constant["answer"] for g in gold]
    assert constant["accuracy"] == max(gold.count("positive"), gold.count("negative")) / len(gold)

    text = lpb("eval", "--day-care-dir", day_care, "--task", "sentiment", "--model-name-or-path", "random",
               "--prompt", MINE, "--prompt", OTHER)
    assert text.exit_code == 0, text.output
    assert "2 prompt(s) on 2 test items of task 'sentiment'" in text.output
    assert "2 vs 1: " in text.output and "[" in text.output
    # Progress on stderr as each prompt is scored (a served model can take minutes); none with --json.
    assert re.findall(r"^  scored (\d)/2 prompts on 2 items, \d+s$", text.stderr, re.M) == ["1", "2"]
    assert "scored" not in result.stderr
    floor = json.loads(lpb("eval", "--day-care-dir", day_care, "--task", "sentiment", "--model-name-or-path", "random",
                           "--prompt", MINE, "--prompt", OTHER, "--json").output)
    constant, rows = floor["constant_answer"], floor["prompts"]
    at_most = [str(n) for n, row in enumerate(rows, 1) if row["accuracy"] <= constant["accuracy"]]
    assert (f"  Answering {constant['answer']!r} every time scores {constant['accuracy']:.3f} on these items"
            + (f"; no better: {', '.join(at_most)}" if at_most else "")) in text.output.splitlines()
    unreadable = json.loads(lpb("eval", "--day-care-dir", day_care, "--task", "sentiment", "--model-name-or-path",
                                "random", "--prompt", MINE, "--json").output)["prompts"][0]["unreadable"]
    assert (f"{unreadable} of 2 answers were unreadable to the scorer" in text.output) == (unreadable > 0)


def test_eval_says_its_figures_are_accuracy_when_the_scorer_reports_another_fitness(lpb, day_care):
    description = day_care / "sentiment" / "task_description.json"
    args = ("eval", "--day-care-dir", day_care, "--task", "sentiment", "--model-name-or-path", "random", "--prompt",
            "Mood?", "--prompt", "Is it good?", "--items", "all")
    plain = lpb(*args)
    assert json.loads(lpb(*args, "--json").output)["measure"] == "" and "accuracy" not in plain.output
    data = json.loads(description.read_text())
    data["fitness_scorer"] = {"type": "binary_fbeta", "positive_label": "positive", "negative_label": "negative"}
    description.write_text(json.dumps(data))
    report = json.loads(lpb(*args, "--json").output)
    rows = report["prompts"]
    assert any(abs(row["fitness"] - row["accuracy"]) > 1e-6 for row in rows)  # F1 is not the share of right answers
    assert report["measure"] == "accuracy" and report["comparisons"][0]["sentence"].startswith("accuracy ")
    text = lpb(*args).output.splitlines()
    assert "  accuracy (share of right answers) with its 95 % interval, then the scorer's fitness, which a breed " \
           "reports" in text
    low, high = rows[1]["interval_95"]
    assert (f"  2. {rows[1]['accuracy']:.3f} [{low:.3f}, {high:.3f}] fitness {rows[1]['fitness']:.3f}  --prompt 2: "
            "Is it good?") in text


def golds(day_care, row) -> list[str]:
    """The gold labels of the items a row of ``lpb eval --json --items all`` was scored on, in order."""
    items = json.loads((day_care / "sentiment" / "fitness_test_suite.json").read_text())
    return [item["gold_sentiment"] for item in items]


def test_eval_of_a_run_reproduces_its_held_out_scores(lpb, day_care):
    summary = breed(settings(day_care, initial_prompts=(MINE,)))
    run_dir = day_care / "sentiment" / "RUN_0"
    result = lpb("eval", "--run", run_dir, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    held_out = summary["held_out"]
    assert report["item_count"] == len(held_out["items"])
    by_id = {row["label"].rsplit("(", 1)[1].rstrip(")"): row for row in report["prompts"]}
    assert set(by_id) == set(held_out["units"])
    for unit_id, unit in held_out["units"].items():
        assert by_id[unit_id]["fitness"] == unit["fitness"]
        assert by_id[unit_id]["correct"] == unit["correct"]["no_cot"]
    (run_dir / "summary.json").unlink()  # as a run stopped before its end leaves it
    result = lpb("eval", "--run", run_dir)
    assert result.exit_code == 2 and f"{run_dir}: --run: the run has not finished" in result.output


def test_eval_needs_something_to_score(lpb, day_care):
    result = lpb("eval", "--day-care-dir", day_care, "--task", "sentiment", "--model-name-or-path", "random")
    assert result.exit_code == 2
    assert "nothing to score" in result.output


def test_eval_with_no_items_of_the_kind_asked_names_the_split_that_left_none(lpb, day_care):
    result = lpb("eval", "--day-care-dir", day_care, "--task", "sentiment", "--model-name-or-path", "random",
                 "--prompt", "Mood?", "--test-split", "0")
    assert result.exit_code == 2
    assert "no test items to score with these split settings (--test-split 0.0); choose other --items" in result.stderr


@pytest.mark.parametrize("option", ["--suite", "--test-suite", "--fitness-test-suite", "--prompts-file"])
def test_eval_names_the_option_whose_file_is_missing(lpb, day_care, option):
    result = lpb("eval", "--day-care-dir", day_care, "--task", "sentiment", "--model-name-or-path", "random",
                 "--prompt", "Positive or negative?", option, "nofile.json")
    assert result.exit_code == 2
    assert result.output.strip() == f"Error: command line: {option}: no file at 'nofile.json'"


def test_a_separate_mutation_model_writes_the_prompts(day_care):
    task_model, writer = SpyBackend("spy-task", "random"), SpyBackend("spy-writer", "random")
    summary = breed(settings(day_care, model_name_or_path="spy-task", mutation_model="spy-writer"),
                    extra_plugins=[spies(task_model, writer)])
    assert summary["model"] == "spy-task" and summary["mutation_model"] == "spy-writer"
    # Fitness prompts show a review; the prompt-writing templates of the tiny day care never do, and have
    # markers of their own.
    markers = ("Instruction:", "Hint:", "Mutant:", "Descending order of score", "Advice:", "Improved:")
    assert any("Review:" in text for text in task_model.seen)
    assert not any(marker in text for text in task_model.seen for marker in markers)
    assert any("Instruction:" in text for text in writer.seen)
    assert not any("Review:" in text for text in writer.seen)


def test_an_unknown_mutation_model_is_bad_input(lpb, day_care):
    result = lpb("breed", "--day-care-dir", day_care, *QUICK_RUN, "--mutation-model", "no-such-model")
    assert result.exit_code == 2
    assert "command line: --mutation-model: no model backend accepts 'no-such-model'" in result.output


def test_generation_zero_holds_the_task_description_unless_asked_not_to(day_care):
    description = json.loads((day_care / "sentiment" / "task_description.json").read_text())["task_description"]
    breed(settings(day_care, evolution_generations=0))
    units = generation(day_care, 0)["population"]
    assert [u["operator"] for u in units] == ["task_description", "initial", "initial", "initial"]
    assert units[0]["prompts"]["task_prompt"] == description
    breed(settings(day_care, evolution_generations=0, task_description_unit=False))
    assert [u["operator"] for u in generation(day_care, 0, run=1)["population"]] == ["initial"] * 4
    # A seed that is the description already is not added twice; seeds that fill the population leave no room.
    breed(settings(day_care, evolution_generations=0, initial_prompts=(description,)))
    assert [u["operator"] for u in generation(day_care, 0, run=2)["population"]] == ["seed", "initial", "initial",
                                                                                        "initial"]
    breed(settings(day_care, evolution_generations=0, initial_prompts=("a", "b", "c", "d")))
    assert [u["operator"] for u in generation(day_care, 0, run=3)["population"]] == ["seed"] * 4


def test_eval_takes_what_lpb_best_prints_and_a_list_of_prompts(lpb, day_care, tmp_path):
    breed(settings(day_care))
    best = lpb("best", day_care / "sentiment" / "RUN_0", "--format", "json")
    assert best.exit_code == 0, best.output
    best_file = tmp_path / "best.json"
    best_file.write_text(best.output)
    listed = tmp_path / "prompts.json"
    listed.write_text(json.dumps([MINE, {"task_prompt": OTHER}]))
    result = lpb("eval", "--day-care-dir", day_care, "--task", "sentiment", "--model-name-or-path", "random",
                 "--prompts-file", best_file, "--prompts-file", listed, "--items", "all", "--json")
    assert result.exit_code == 0, result.output
    assert [row["label"] for row in json.loads(result.output)["prompts"]] == [
        "best.json 1", "prompts.json 1", "prompts.json 2"]
    for path, count in ((best_file, 1), (listed, 2)):
        result = lpb("eval", "--day-care-dir", day_care, "--task", "sentiment", "--model-name-or-path", "random",
                     "--prompts-file", path, "--items", "all", "--json")
        assert result.exit_code == 0, result.output
        rows = json.loads(result.output)["prompts"]
        assert len(rows) == count
    winner = json.loads(best.output)
    assert rows and json.loads(lpb("eval", "--day-care-dir", day_care, "--task", "sentiment", "--model-name-or-path",
                                   "random", "--prompts-file", best_file, "--json").output)["prompts"][0][
        "prompts"] == winner["prompts"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"not": "prompts"}))
    result = lpb("eval", "--day-care-dir", day_care, "--task", "sentiment", "--prompts-file", bad)
    assert result.exit_code == 2 and f"{bad}: $: expected a JSON list of prompts" in result.output
    bad.write_text("[]")
    result = lpb("eval", "--day-care-dir", day_care, "--task", "sentiment", "--prompts-file", bad)
    assert result.exit_code == 2 and f"{bad}: $: expected a JSON list of prompts" in result.output
    # A prompt field the task does not have is blamed on the file that sets it.
    bad.write_text(json.dumps(["Fine.", {"taskprompt": "x"}]))
    result = lpb("eval", "--day-care-dir", day_care, "--task", "sentiment", "--prompts-file", bad)
    assert result.exit_code == 2 and f"{bad}: $[1].taskprompt: 'taskprompt' is not a prompt field" in result.output


def test_a_budget_that_runs_out_while_choosing_the_winner_stops_cleanly_and_resumes(day_care):
    full = breed(settings(day_care))
    last = generation(day_care, 2)["usage"]["llm_calls"]
    assert full["llm_calls"] > last + 1  # the final scoring made calls of its own
    stopped = breed(settings(day_care, max_llm_calls=last + 1))
    assert stopped["stopped_because"].startswith("budget: max_llm_calls") and "choosing the winner" in \
        stopped["stopped_because"]
    assert stopped["held_out"] is None and stopped["generations_completed"] == 2
    resumed = breed(settings(day_care, continue_run_number=1))
    assert resumed["stopped_because"] == "completed" and resumed["best_test_fitness"] is not None
