"""The significance machinery, checked against values computed by hand."""

import math

import pytest

from lpb_core.stats import Accuracy, compare, comparison_measure, mcnemar_exact, wilson_interval


def test_wilson_interval_matches_the_textbook_value():
    # 8 of 10: centre (0.8 + 1.96²/20) / (1 + 1.96²/10), half-width from the Wilson formula.
    low, high = wilson_interval(8, 10)
    z = 1.959963984540054
    centre = (0.8 + z * z / 20) / (1 + z * z / 10)
    half = z * math.sqrt(0.8 * 0.2 / 10 + z * z / 400) / (1 + z * z / 10)
    assert (low, high) == pytest.approx((centre - half, centre + half))
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)


def test_wilson_interval_stays_inside_zero_and_one():
    assert wilson_interval(0, 20)[0] == 0.0 and wilson_interval(20, 20)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)
    # Every interval holds its own proportion exactly, none of 48 or all of 10 included (rounding once said not).
    for n in range(1, 200):
        for k in range(n + 1):
            low, high = wilson_interval(k, n)
            assert low <= k / n <= high, (k, n)


def test_mcnemar_exact_counts_only_discordant_items():
    # 6 items only A got right, 1 only B: p = 2 * P(X <= 1 | n=7, 1/2) = 2 * 8/128.
    a = [True] * 6 + [False] + [True] * 5 + [False] * 3
    b = [False] * 6 + [True] + [True] * 5 + [False] * 3
    assert mcnemar_exact(a, b) == pytest.approx(16 / 128)
    assert mcnemar_exact(a, a) == 1.0


def test_identical_prompts_are_not_significantly_different():
    outcomes = [True, False] * 20
    result = compare(outcomes, list(outcomes))
    assert result.p_value == 1.0 and result.verdict == "no significant difference"


def test_a_clear_win_is_significant_and_said_in_one_sentence():
    a = [True] * 44 + [False] * 4
    b = [True] * 29 + [False] * 19
    result = compare(a, b)
    assert result.p_value < 0.001 and result.verdict == "better"
    assert result.sentence("held-out items") == "0.917 vs 0.604 on 48 held-out items: better, p < 0.001"
    assert compare(b, a).verdict == "worse"


def test_paired_outcomes_must_cover_the_same_items():
    with pytest.raises(ValueError):
        mcnemar_exact([True], [True, False])


def test_accuracy_describes_itself_with_its_interval():
    assert Accuracy.of([True, True, False, True]).describe().startswith("0.750 [")


def test_comparisons_name_their_figures_only_beside_a_fitness_that_is_not_accuracy():
    outcomes = {"a": [True, True, False, False], "b": [True, False, False, False]}
    assert comparison_measure({"a": 0.5, "b": 0.25}, outcomes) == ""  # the accuracy scorer's fitness
    thirds = {"a": [True, False, False], "b": [False, False, True]}
    assert comparison_measure({"a": 0.333333, "b": 0.333333}, thirds) == ""  # as fitness.py rounds it
    assert comparison_measure({"a": 0.667, "b": 0.25}, outcomes) == "accuracy"  # F1 beside it
    result = compare(outcomes["a"], outcomes["b"])
    assert result.sentence("held-out items", "accuracy").startswith("accuracy 0.500 vs 0.250 on 4 held-out items: ")
    assert result.sentence("held-out items").startswith("0.500 vs 0.250 on 4 held-out items: ")
