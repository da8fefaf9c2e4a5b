"""Choosing a token from one row of logits under an LMQL mask: argmax or a seeded sample, and its logprobs.

Pure numpy, no llama.cpp: the engine hands each sequence's logits row here, whatever batch it came from.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = ["allowed_from_mask", "bias_from_mask", "choose", "logprobs", "seeded_noise"]


def allowed_from_mask(mask, n_vocab: int) -> Optional[np.ndarray]:
    """LMQL logits mask (0 = allowed, float32.min = banned; a boolean array; an id or id list) -> a boolean
    array of the allowed ids, or None when every token is allowed."""
    if mask is None:
        return None
    if isinstance(mask, (int, np.integer)) or np.isscalar(mask):
        allowed = np.zeros(n_vocab, dtype=bool)
        allowed[int(mask)] = True
    elif isinstance(mask, list):
        allowed = np.zeros(n_vocab, dtype=bool)
        allowed[np.asarray(mask, dtype=np.int64)] = True
    else:
        m = np.asarray(mask)
        allowed = m if m.dtype == bool else m > -1e20
        if len(allowed) < n_vocab:
            allowed = np.concatenate([allowed, np.zeros(n_vocab - len(allowed), dtype=bool)])
        allowed = allowed[:n_vocab]
    return None if allowed.all() else allowed


def bias_from_mask(mask, n_vocab: int) -> Optional[np.ndarray]:
    """The mask (see :func:`allowed_from_mask`) as an additive bias (``-inf`` on banned ids), or None when
    every token is allowed."""
    allowed = allowed_from_mask(mask, n_vocab)
    if allowed is None:
        return None
    bias = np.zeros(n_vocab, dtype=np.float32)
    bias[~allowed] = -np.inf
    return bias


def choose(scores: np.ndarray, temperature: float, top_k: int, top_p: float, noise) -> int:
    """Argmax at temperature 0, else a sample from the (top-k, top-p truncated) softmax.

    The sample is the Gumbel-max one: the likeliest token once ``noise(n)`` (``n`` standard Gumbel numbers,
    one per token) is added to the scaled scores.  A seeded caller makes the noise a function of (seed,
    position), so the token never depends on timing; and since the noise is per token, a mask that keeps
    the token sampled without it gives the same token.  LMQL sends its masks only at the start of a
    request, so that is what makes a sample independent of where requests happened to be cut.
    """
    if temperature <= 0.0:
        return int(np.argmax(scores))
    z = scores.astype(np.float64) / temperature
    if top_k and 0 < top_k < len(z):
        kth = np.partition(z, -top_k)[-top_k]
        z = np.where(z < kth, -np.inf, z)
    if top_p is not None and top_p < 1.0:
        p = np.exp(z - z.max())
        order = np.argsort(-p)
        c = np.cumsum(p[order])
        cut = int(np.searchsorted(c, top_p * c[-1])) + 1
        z[order[cut:]] = -np.inf
    return int(np.argmax(z + noise(len(z))))


def seeded_noise(seed: int, position: int):
    """The Gumbel noise for the token at ``position`` of a query sampled with ``seed``."""
    return lambda n: np.random.default_rng((seed, position)).gumbel(size=n)


def logprobs(scores: np.ndarray, token: int, n_top: int) -> tuple[float, dict]:
    """The token's logprob under the (masked) distribution, and ``{id: logprob}`` of the ``n_top`` likeliest
    (always including the token itself)."""
    mx = float(scores.max())
    lse = mx + float(np.log(np.sum(np.exp(scores - mx))))
    logprob = float(scores[token]) - lse
    top = {token: logprob}
    if n_top > 1:
        idx = np.argpartition(-scores, n_top)[:n_top]
        top.update({int(t): float(scores[t]) - lse for t in idx if np.isfinite(scores[t])})
    return logprob, top


def log_softmax_at(logits: np.ndarray, token: int) -> float:
    """log p(token) under the unmasked distribution (scoring)."""
    mx = float(logits.max())
    return float(logits[token]) - (mx + float(np.log(np.sum(np.exp(logits - mx)))))
