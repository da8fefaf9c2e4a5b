"""Built-in near-duplicate filter for the EDA operators: cheap, offline, no model needed."""

from __future__ import annotations

import math
from collections import Counter

from lpb_core.hookspecs import hookimpl


def _trigrams(text: str) -> Counter:
    text = " ".join(text.lower().split())
    return Counter(text[i:i + 3] for i in range(max(1, len(text) - 2)))


def trigram_cosine(a: str, b: str) -> float:
    """Cosine similarity of character trigram counts; catches copies that differ in case, spacing or a word."""
    x, y = _trigrams(a), _trigrams(b)
    dot = sum(count * y[gram] for gram, count in x.items())
    norm = math.sqrt(sum(v * v for v in x.values())) * math.sqrt(sum(v * v for v in y.values()))
    return dot / norm if norm else 0.0


class TrigramCosineFilter:
    """Drops a prompt whose trigram cosine with an earlier kept prompt reaches 0.95 (the paper's threshold,
    which it applied to BERT embeddings)."""

    name = "trigram_cosine"
    threshold = 0.95

    def distinct(self, prompts: list[str]) -> list[str]:
        kept: list[str] = []
        for prompt in prompts:
            if all(trigram_cosine(prompt, other) < self.threshold for other in kept):
                kept.append(prompt)
        return kept


class ExactDuplicateFilter:
    """Drops only prompts identical after case and spacing are normalised."""

    name = "exact"

    def distinct(self, prompts: list[str]) -> list[str]:
        seen, kept = set(), []
        for prompt in prompts:
            key = " ".join(prompt.lower().split())
            if key not in seen:
                seen.add(key)
                kept.append(prompt)
        return kept


@hookimpl
def lpb_register_similarity_filters(register):
    register(TrigramCosineFilter())
    register(ExactDuplicateFilter())
