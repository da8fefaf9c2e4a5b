"""Built-in fitness scorers, looked up by the ``fitness_scorer.type`` of task_description.json."""

from __future__ import annotations

import re
import string

from lpb_core.errors import InputError
from lpb_core.hookspecs import hookimpl


def _normalise(text: str, lowercase: bool = True, strip_punctuation: bool = True) -> str:
    text = " ".join(str(text).split())
    if lowercase:
        text = text.lower()
    if strip_punctuation:
        text = text.translate(str.maketrans("", "", string.punctuation)).strip()
    return text


class PerItemScorer:
    """Fitness is the share of items answered correctly."""

    def score(self, answers, golds) -> float:
        return sum(map(self.is_correct, answers, golds)) / len(answers) if answers else 0.0


class ExactMatch(PerItemScorer):
    """Correct when the normalised answer equals the normalised gold label."""

    name = "exact_match"
    params_schema = {
        "type": "object",
        "properties": {"lowercase": {"type": "boolean"}, "strip_punctuation": {"type": "boolean"}},
        "additionalProperties": False,
    }

    def __init__(self, lowercase: bool = True, strip_punctuation: bool = True):
        self.lowercase, self.strip_punctuation = lowercase, strip_punctuation

    def is_correct(self, answer: str, gold) -> bool:
        return _normalise(answer, self.lowercase, self.strip_punctuation) == \
            _normalise(gold, self.lowercase, self.strip_punctuation)


def find_label(answer: str, labels) -> str | None:
    """The label a free-text answer commits to: the first label word that occurs in it."""
    words = _normalise(answer).split()
    wanted = {_normalise(label): label for label in labels}
    for word in words:
        if word in wanted:
            return wanted[word]
    text = _normalise(answer)
    for norm, label in wanted.items():  # labels of several words
        if " " in norm and norm in text:
            return label
    return None


class Accuracy(PerItemScorer):
    """Share of items whose answer names the gold label (the first label found in the answer counts)."""

    name = "accuracy"
    params_schema = {
        "type": "object",
        "required": ["labels"],
        "properties": {"labels": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 2,
                                  "uniqueItems": True}},
        "additionalProperties": False,
    }

    def __init__(self, labels):
        self.labels = list(labels)

    def label_of(self, answer: str) -> str | None:
        return find_label(answer, self.labels)

    def can_read(self, answer: str) -> bool:
        return self.label_of(answer) is not None

    def is_correct(self, answer: str, gold) -> bool:
        found = self.label_of(answer)
        return found is not None and _normalise(found) == _normalise(gold)


class BinaryFBeta(Accuracy):
    """F-beta of the positive label over a two-label task (the seed's scorer); unreadable answers count as negative."""

    name = "binary_fbeta"
    params_schema = {
        "type": "object",
        "required": ["positive_label", "negative_label"],
        "properties": {
            "beta": {"type": "number", "exclusiveMinimum": 0},
            "positive_label": {"type": "string", "minLength": 1},
            "negative_label": {"type": "string", "minLength": 1},
        },
        "additionalProperties": False,
    }

    def __init__(self, positive_label: str, negative_label: str, beta: float = 1.0):
        super().__init__([positive_label, negative_label])
        self.positive, self.beta = positive_label, beta

    def score(self, answers, golds) -> float:
        predicted = [_normalise(self.label_of(a) or "") == _normalise(self.positive) for a in answers]
        actual = [_normalise(g) == _normalise(self.positive) for g in golds]
        tp = sum(p and a for p, a in zip(predicted, actual))
        fp = sum(p and not a for p, a in zip(predicted, actual))
        fn = sum(a and not p for p, a in zip(predicted, actual))
        b2 = self.beta ** 2
        denominator = (1 + b2) * tp + b2 * fn + fp
        return (1 + b2) * tp / denominator if denominator else 0.0


class Numeric(PerItemScorer):
    """The last number in the answer (1,234.5, 1e-5 and 3/4 read whole) equals the gold number within ``tolerance``
    (GSM8K style)."""

    name = "numeric"
    params_schema = {
        "type": "object",
        "properties": {"tolerance": {"type": "number", "minimum": 0}},
        "additionalProperties": False,
    }
    # a decimal with thousands separators, an exponent (1e-5) or a fraction (3/4)
    _NUMBER = re.compile(r"-?(?:\d[\d,]*(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?(?:\s*/\s*\d+(?:\.\d+)?)?")

    def __init__(self, tolerance: float = 1e-6):
        self.tolerance = tolerance

    def value_of(self, text) -> float | None:
        if isinstance(text, (int, float)) and not isinstance(text, bool):  # a gold number as JSON gives it
            return float(text)
        found = self._NUMBER.findall(str(text))
        if not found:
            return None
        numerator, _, denominator = found[-1].replace(",", "").partition("/")
        try:
            value = float(numerator)
            return value / float(denominator) if denominator else value
        except (ValueError, ZeroDivisionError):
            return None

    def can_read(self, answer: str) -> bool:
        return self.value_of(answer) is not None

    def is_correct(self, answer: str, gold) -> bool:
        got, want = self.value_of(answer), self.value_of(gold)
        return got is not None and want is not None and abs(got - want) <= self.tolerance


class Regex(PerItemScorer):
    """Correct when ``pattern`` (with the gold label substituted for ``{gold}``) matches the answer."""

    name = "regex"
    params_schema = {
        "type": "object",
        "required": ["pattern"],
        "properties": {"pattern": {"type": "string", "minLength": 1}, "ignore_case": {"type": "boolean"}},
        "additionalProperties": False,
    }

    def __init__(self, pattern: str, ignore_case: bool = True):
        self.pattern, self.flags = pattern, re.IGNORECASE if ignore_case else 0
        try:  # a broken pattern is found now, before any answer is scored
            re.compile(pattern.replace("{gold}", "gold"), self.flags)
        except re.error as exc:
            raise InputError(f"pattern is not a regular expression: {exc}") from None

    def is_correct(self, answer: str, gold) -> bool:
        pattern = self.pattern.replace("{gold}", re.escape(str(gold)))
        return re.search(pattern, str(answer), self.flags) is not None


@hookimpl
def lpb_register_fitness_scorers(register):
    for scorer in (ExactMatch, Accuracy, BinaryFBeta, Numeric, Regex):
        register(scorer)
