"""`lpb report`: report.html, report.md and fitness.png from a run's files, on finished, running, interrupted
and budget-stopped runs, and the significance sentence checked against scipy."""

import fcntl
import json

import pytest
from scipy.stats import binomtest

from lpb_core.rundir import LOCK_FILE
from lpb_plugins.run_data import held_out_report, load_run, report_data
from tests.report_checks import check_report, md_table

N_ITEMS = 48


def edit_summary(run_dir, **changes):
    path = run_dir / "summary.json"
    summary = {**json.loads(path.read_text()), **changes}
    path.write_text(json.dumps(summary))
    return summary


def test_report_writes_html_md_and_png_whose_numbers_match_the_run_files(lpb, finished_run, monkeypatch):
    import lpb_core.llm

    def no_model(*args, **kwargs):
        raise AssertionError("lpb report must not open a model")

    monkeypatch.setattr(lpb_core.llm, "open_model", no_model)
    monkeypatch.setattr(lpb_core.llm.LanguageModel, "__init__", no_model)
    result = lpb("report", finished_run)
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [str(finished_run / n) for n in ("fitness.png", "report.html", "report.md")]
    markdown, page = check_report(finished_run)
    summary = json.loads((finished_run / "summary.json").read_text())
    assert summary["held_out"]["units"], "the run scored its winner and best initial unit on held-out items"
    text = " ".join(page.text)
    assert "finished" in text and summary["best_unit"]["id"] in text


def test_json_prints_the_report_data(lpb, finished_run):
    result = lpb("report", finished_run, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data == json.loads(json.dumps(report_data(load_run(finished_run))))
    summary = json.loads((finished_run / "summary.json").read_text())
    assert data["best"]["id"] == summary["best_unit"]["id"] and data["status"] == "finished"
    assert [r["best"] for r in data["fitness_per_generation"]] == [r["best"] for r in summary["fitness_per_generation"]]
    # The lineage reaches the winner from a unit of generation 0, each step made by the operator on record.
    line, nodes = [], data["lineage"]
    while nodes:  # the winner may have descendants among the top units (it is chosen on validation items)
        node = next(n for n in nodes if n["on_best_line"])
        line.append(node)
        nodes = node["children"] if node["id"] != summary["best_unit"]["id"] else []
    assert line[0]["generation"] == 0 and line[-1]["id"] == summary["best_unit"]["id"]
    assert [n["generation"] for n in line] == sorted(n["generation"] for n in line)
    top = data["top_prompts"][0]
    assert top["id"] == summary["best_unit"]["id"] and top["prompts"] == summary["best_unit"]["prompts"]
    if top["parent"]:
        added = " ".join(text for kind, text in top["diff"]["task_prompt"] if kind != "del")
        assert added.split() == top["prompts"]["task_prompt"].split()


def test_the_run_can_be_named_by_day_care_task_and_number(lpb, run_copy):
    day_care = run_copy.parent.parent
    result = lpb("report", "--day-care-dir", day_care, "--task", "sentiment", "--run-number", "0")
    assert result.exit_code == 0, result.output
    assert (run_copy / "report.html").exists() and (run_copy / "report.md").exists()
    assert lpb("report", "--task", "sentiment").exit_code == 2  # no run number: one line, exit 2
    missing = lpb("report", day_care / "sentiment" / "RUN_7")
    assert missing.exit_code == 2 and "not a run directory" in missing.output


def test_a_running_run_is_reported_from_its_files(lpb, run_copy):
    (run_copy / "summary.json").unlink()
    (run_copy / "generation_003.json").unlink()
    with open(run_copy / LOCK_FILE, "w") as lock:  # held as a breeding `lpb breed` holds it
        fcntl.flock(lock, fcntl.LOCK_EX)
        result = lpb("report", run_copy)
    assert result.exit_code == 0, result.output
    markdown = (run_copy / "report.md").read_text()
    assert "**running**: still running (generation 2 of 3 done)" in markdown
    assert "Not scored on held-out items: the run is still breeding" in markdown
    assert len(md_table(markdown, "generation")) == 3


def test_an_interrupted_run_and_a_budget_stop_are_reported_without_held_out_scores(lpb, run_copy):
    (run_copy / "summary.json").rename(run_copy / "summary.old")
    assert lpb("report", run_copy).exit_code == 0
    assert "**interrupted**: interrupted after generation 3" in (run_copy / "report.md").read_text()

    (run_copy / "summary.old").rename(run_copy / "summary.json")
    edit_summary(run_copy, stopped_because="budget: max_llm_calls (90) reached", held_out=None,
                 best_test_fitness=None, initial_best_test_fitness=None)
    assert lpb("report", run_copy).exit_code == 0
    markdown = (run_copy / "report.md").read_text()
    assert "**stopped by budget**: stopped early: budget: max_llm_calls (90) reached" in markdown
    assert "Not scored on held-out items: the run stopped early" in markdown


def constructed(best_right: int, other_right: int, only_other: int = 0) -> dict:
    """A held_out block in summary.json's format: the winner right on ``best_right`` of 48 items, the best initial
    unit on ``other_right``, with ``only_other`` items right for the initial unit alone."""
    best = [i < best_right for i in range(N_ITEMS)]
    other = [(i < other_right - only_other) or (best_right <= i < best_right + only_other) for i in range(N_ITEMS)]
    return {"items": list(range(N_ITEMS)), "variants": ["no_cot"],
            "units": {"u0021": {"roles": ["best"], "fitness": best_right / N_ITEMS, "correct": {"no_cot": best}},
                      "u0003": {"roles": ["initial_best"], "fitness": other_right / N_ITEMS,
                                "correct": {"no_cot": other}}},
            "comparisons": []}


def significance(run_copy, block):
    edit_summary(run_copy, held_out=block)
    report = held_out_report(load_run(run_copy))
    [comparison] = report["comparisons"]
    return report, comparison


def test_a_clear_win_is_significant_as_scipy_computes_it(run_copy, lpb):
    report, comparison = significance(run_copy, constructed(44, 29))
    assert comparison["sentence"] == "0.917 vs 0.604 on 48 held-out items: better, p < 0.001"
    # McNemar's exact test is a binomial test on the items only one of the two got right.
    expected = binomtest(comparison["b_only_correct"], comparison["a_only_correct"] + comparison["b_only_correct"], 0.5)
    # summary.json keeps p-values to 6 decimals.
    assert comparison["p_value"] == pytest.approx(expected.pvalue, abs=1e-6) and expected.pvalue < 0.001
    for unit in report["units"]:
        interval = binomtest(unit["correct"], unit["answers"]).proportion_ci(0.95, method="wilson")
        assert unit["interval"] == pytest.approx([interval.low, interval.high], rel=1e-9)
    assert lpb("report", run_copy).exit_code == 0
    assert "**0.917 vs 0.604 on 48 held-out items: better, p < 0.001**" in (run_copy / "report.md").read_text()


def test_identical_prompts_are_not_significant(run_copy):
    block = constructed(30, 30)
    block["units"]["u0003"]["correct"] = block["units"]["u0021"]["correct"]
    _, comparison = significance(run_copy, block)
    assert comparison["sentence"] == "0.625 vs 0.625 on 48 held-out items: no significant difference, p = 1.000"


def test_a_small_difference_is_not_significant_as_scipy_computes_it(run_copy):
    _, comparison = significance(run_copy, constructed(33, 30, only_other=4))  # 7 items for the winner alone, 4 not
    expected = binomtest(4, 11, 0.5).pvalue
    assert comparison["p_value"] == pytest.approx(expected, abs=1e-6) and expected > 0.05
    assert comparison["sentence"] == ("0.688 vs 0.625 on 48 held-out items: no significant difference, "
                                      f"p = {expected:.3f}")


def test_a_run_without_per_item_outcomes_says_it_was_not_compared(run_copy, lpb):
    edit_summary(run_copy, held_out=None, best_test_fitness=0.5, initial_best_test_fitness=0.5)
    assert lpb("report", run_copy).exit_code == 0
    markdown = (run_copy / "report.md").read_text()
    assert "Not scored on held-out items: this run recorded held-out scores but no per-item outcomes" in markdown
    check_report(run_copy)


def test_a_run_killed_before_its_first_generation_still_gets_a_report(run_copy, lpb):
    for path in run_copy.iterdir():
        if path.name != "config.json":
            path.unlink()
    result = lpb("report", run_copy)
    assert result.exit_code == 0, result.output
    assert not (run_copy / "fitness.png").exists()
    markdown = (run_copy / "report.md").read_text()
    assert "**interrupted**: interrupted before the first generation was written" in markdown
    assert "No generation has been written yet." in (run_copy / "report.html").read_text()
    assert lpb("best", run_copy).exit_code == 2  # nothing to hand over yet: one line, exit 2
