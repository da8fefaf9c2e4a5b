"""Is one prompt really better than another? Confidence intervals and a paired test on item outcomes.

Both prompts are scored on the *same* items, so the honest test is paired: McNemar's exact test
looks only at the items where exactly one of the two was right. Accuracies get a Wilson score
interval, which behaves at 0 and 1 where the normal approximation does not.
"""

from __future__ import annotations

import math
from typing import Sequence

import attrs

Z_95 = 1.959963984540054  # two-sided 95 % quantile of the standard normal
SIGNIFICANCE_LEVEL = 0.05


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval for a proportion (95 % by default); (0, 1) when there are no items."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # It contains p; the clamps keep rounding from putting 0 of n a hair above its own lower bound.
    return min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half))


def mcnemar_exact(a: Sequence[bool], b: Sequence[bool]) -> float:
    """Two-sided exact McNemar p-value for paired outcomes (1.0 when no item tells them apart)."""
    if len(a) != len(b):
        raise ValueError(f"paired outcomes must cover the same items ({len(a)} vs {len(b)})")
    only_a = sum(1 for x, y in zip(a, b) if x and not y)
    only_b = sum(1 for x, y in zip(a, b) if y and not x)
    n = only_a + only_b
    if n == 0:
        return 1.0
    k = min(only_a, only_b)
    # P(X <= k) for X ~ Binomial(n, 1/2), doubled for two sides.
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


@attrs.frozen
class Accuracy:
    correct: int
    n: int

    @property
    def value(self) -> float:
        return self.correct / self.n if self.n else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.correct, self.n)

    @classmethod
    def of(cls, outcomes: Sequence[bool]) -> "Accuracy":
        return cls(sum(map(bool, outcomes)), len(outcomes))

    def describe(self) -> str:
        low, high = self.interval
        return f"{self.value:.3f} [{low:.3f}, {high:.3f}]"


@attrs.frozen
class Comparison:
    """Prompt A against prompt B on the same items."""

    a: Accuracy
    b: Accuracy
    p_value: float
    a_only: int  # items only A got right
    b_only: int

    @property
    def verdict(self) -> str:
        if self.p_value >= SIGNIFICANCE_LEVEL:
            return "no significant difference"
        return "better" if self.a_only > self.b_only else "worse"

    def sentence(self, what: str = "items", measure: str = "") -> str:
        """E.g. '0.917 vs 0.604 on 48 held-out items: better, p < 0.001'; ``measure`` names the figures when
        they could be taken for another (accuracy beside a scorer's F1)."""
        p = "p < 0.001" if self.p_value < 0.001 else f"p = {self.p_value:.3f}"
        named = f"{measure} " if measure else ""
        return f"{named}{self.a.value:.3f} vs {self.b.value:.3f} on {self.a.n} {what}: {self.verdict}, {p}"

    def to_dict(self) -> dict:
        return {"a_accuracy": self.a.value, "b_accuracy": self.b.value, "items": self.a.n, "a_only_correct": self.a_only,
                "b_only_correct": self.b_only, "p_value": round(self.p_value, 6), "verdict": self.verdict}


def comparison_measure(fitnesses: dict, outcomes: dict) -> str:
    """How comparisons of per-item outcomes name their figures beside these units' fitnesses: "" when every
    fitness is the share of right answers, else "accuracy" (a scorer of F1 or partial credit)."""
    # fitnesses are kept to 6 decimals (fitness.py): equal within that
    same = (fitnesses.get(u) is None or abs(fitnesses[u] - Accuracy.of(outcomes[u]).value) < 1e-6 for u in outcomes)
    return "" if all(same) else "accuracy"


def compare(a: Sequence[bool], b: Sequence[bool]) -> Comparison:
    """McNemar's exact test of ``a`` against ``b`` (per-item correctness on the same items, same order)."""
    p = mcnemar_exact(a, b)
    return Comparison(a=Accuracy.of(a), b=Accuracy.of(b), p_value=p,
                      a_only=sum(1 for x, y in zip(a, b) if x and not y),
                      b_only=sum(1 for x, y in zip(a, b) if y and not x))
