import pytest

from lpb_core.files import schema_errors
from lpb_core.plugins import load_plugins
from lpb_plugins.scorers import Accuracy, BinaryFBeta, ExactMatch, Numeric, Regex, find_label


def test_exact_match_normalises_case_space_and_punctuation():
    scorer = ExactMatch()
    assert scorer.is_correct("  Paris. ", "paris")
    assert not scorer.is_correct("Paris, France", "paris")
    assert not ExactMatch(lowercase=False).is_correct("PARIS", "Paris")
    assert scorer.score(["a", "b", "c", "d"], ["a", "x", "c", "y"]) == 0.5


def test_accuracy_reads_the_first_label_in_free_text():
    scorer = Accuracy(labels=["positive", "negative"])
    assert scorer.is_correct("The sentiment is Positive!", "positive")
    assert not scorer.is_correct("Negative, though parts were positive", "positive")
    assert not scorer.is_correct("I cannot tell", "negative")  # unreadable counts as wrong
    assert find_label("it is very much so, not at all", ["very much so", "not at all"]) == "very much so"


def test_binary_fbeta_matches_hand_computed_f1_and_weights_recall():
    scorer = BinaryFBeta(positive_label="yes", negative_label="no")
    answers = ["yes", "yes", "no", "no", "maybe"]
    golds = ["yes", "no", "yes", "no", "yes"]
    # tp=1 fp=1 fn=2: F1 = 2*1 / (2*1 + 2 + 1)
    assert scorer.score(answers, golds) == pytest.approx(2 / 5)
    recall_heavy = BinaryFBeta(positive_label="yes", negative_label="no", beta=2.0)
    assert recall_heavy.score(answers, golds) == pytest.approx(5 * 1 / (5 * 1 + 4 * 2 + 1))
    assert scorer.score(["no"], ["no"]) == 0.0


def test_numeric_takes_the_last_number_with_tolerance():
    scorer = Numeric(tolerance=0.01)
    assert scorer.is_correct("3 apples plus 4 makes 7", "7")
    assert scorer.is_correct("The total is 1,234.005", 1234)
    assert not scorer.is_correct("no idea", "7")
    assert not scorer.is_correct("7 or maybe 8", "7")
    # gold numbers as JSON gives them, exponents and fractions are read whole
    exact = Numeric(tolerance=0)
    assert exact.is_correct("0.00001", 0.00001) and exact.is_correct("1e-5", 1e-05) and not exact.is_correct("-5", 1e-05)
    assert exact.is_correct("about 1e22 stars", 1e22) and exact.is_correct("1000", "1e3")
    assert exact.is_correct("0.75", "3/4") and exact.is_correct("3 / 4", 0.75) and exact.value_of("1/0") is None


def test_regex_substitutes_the_gold_label():
    scorer = Regex(pattern=r"\banswer is {gold}\b")
    assert scorer.is_correct("So the answer is C.", "C")
    assert not scorer.is_correct("So the answer is CD", "C")
    assert not Regex(pattern="{gold}", ignore_case=False).is_correct("c", "C")


@pytest.mark.parametrize("name,params,bad_field", [
    ("accuracy", {}, "$.labels"),
    ("accuracy", {"labels": ["only"]}, "$.labels"),
    ("binary_fbeta", {"positive_label": "yes", "negative_label": "no", "beta": 0}, "$.beta"),
    ("numeric", {"tolerance": "small"}, "$.tolerance"),
    ("regex", {"pattern": "x", "flags": 2}, "$.flags"),
    ("exact_match", {"lowercase": "yes"}, "$.lowercase"),
])
def test_every_scorer_validates_its_parameters(name, params, bad_field):
    """lpb_register_fitness_scorers: each registered scorer carries a schema for its own parameters."""
    scorer_class = load_plugins().scorers.get(name)
    errors = schema_errors(params, scorer_class.params_schema, "task_description.json")
    assert [e.field for e in errors] == [bad_field]
