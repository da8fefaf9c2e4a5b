"""One ``llama_decode`` call over several sequences: a ``llama_batch`` of token spans, each with its sequence id,
positions, and logits only where they are needed."""

from __future__ import annotations

from typing import List, Sequence

import numpy as np

__all__ = ["Span", "DecodeBatch"]


class Span:
    """Tokens of one sequence at consecutive positions from ``start``; ``outputs`` are the offsets within
    the span whose logits are wanted.  After decoding, ``rows`` holds their indices in the batch."""

    __slots__ = ("seq", "tokens", "start", "outputs", "rows")

    def __init__(self, seq: int, tokens: Sequence[int], start: int, outputs: Sequence[int]):
        self.seq, self.tokens, self.start, self.outputs = seq, list(tokens), start, list(outputs)
        self.rows: List[int] = []


class DecodeBatch:
    """A reusable ``llama_batch`` of up to ``capacity`` tokens (``llama_batch_init``), decoded on ``context``.

    Spans are laid out by sequence id: with one KV stream per sequence llama.cpp puts only sequences of
    consecutive ids into one forward pass, so ordered spans of busy neighbouring sequences share it.
    """

    def __init__(self, context, capacity: int):
        import llama_cpp

        self._lib = llama_cpp
        self._context = context
        self.capacity = capacity
        self._batch = llama_cpp.llama_batch_init(capacity, 0, 1)
        self._token = np.ctypeslib.as_array(self._batch.token, shape=(capacity,))
        self._pos = np.ctypeslib.as_array(self._batch.pos, shape=(capacity,))
        self._n_seq_id = np.ctypeslib.as_array(self._batch.n_seq_id, shape=(capacity,))
        self._logits = np.ctypeslib.as_array(self._batch.logits, shape=(capacity,))
        self._seq_id = self._batch.seq_id

    def decode(self, spans: Sequence[Span]) -> None:
        """Decode ``spans`` (at most ``capacity`` tokens in all) in one call; fills each span's ``rows``."""
        n = 0
        for span in sorted(spans, key=lambda s: s.seq):
            k = len(span.tokens)
            if n + k > self.capacity:
                raise ValueError(f"{n + k} tokens do not fit a batch of {self.capacity}")
            self._token[n:n + k] = span.tokens
            self._pos[n:n + k] = np.arange(span.start, span.start + k)
            self._n_seq_id[n:n + k] = 1
            self._logits[n:n + k] = 0
            for i in range(n, n + k):
                self._seq_id[i][0] = span.seq
            span.rows = [n + o for o in span.outputs]
            self._logits[span.rows] = 1
            n += k
        if n == 0:
            return
        self._batch.n_tokens = n
        status = self._lib.llama_decode(self._context.ctx, self._batch)
        if status != 0:
            raise RuntimeError(f"llama_decode failed with status {status} on a batch of {n} tokens "
                               f"in {len(spans)} sequence(s)")

    def close(self) -> None:
        if self._batch is not None:
            self._lib.llama_batch_free(self._batch)
            self._batch = None
