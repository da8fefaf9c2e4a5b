"""KV-cache bookkeeping: which tokens each of the context's sequences holds, and where a new request goes.

A request is placed in a free sequence so that as few of its tokens as possible must be decoded:

* a free sequence that already holds a prefix of the request keeps it (a query's next request, or the
  next item of the same unit, finds its prompt there);
* when another sequence (busy or not) holds a clearly longer prefix, that sequence is copied into the
  least recently used free one and the copy is trimmed: the prompt a unit's items share is decoded once;
* when a busy sequence is about to decode such a prefix (requests that arrive together), the request
  waits for that decode call and is copied in the next.

Busy sequences are then kept at consecutive ids (:meth:`SequenceCache.compact`): with one KV stream per
sequence, llama.cpp puts only sequences of consecutive ids into one forward pass, so each gap between busy
ids costs a forward pass of its own in every step.

The cache itself is changed through the context (``keep_prefix``, ``copy_sequence``).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

__all__ = ["COPY_MIN_TOKENS", "SequenceCache", "common_prefix"]

# A copy moves a sequence's whole KV stream (every cell, used or not); below this many saved tokens,
# decoding them again is about as cheap.
COPY_MIN_TOKENS = 16


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class SequenceCache:
    """What the KV cache of each sequence ``0..n_seq-1`` holds (``held``), will hold once the prompt of its
    request is decoded (``planned``), and which sequences are busy."""

    def __init__(self, context, n_seq: int):
        self._context = context
        self.held: List[List[int]] = [[] for _ in range(n_seq)]
        self.planned: List[List[int]] = [[] for _ in range(n_seq)]
        self.busy: List[bool] = [False] * n_seq
        self._last_used = [0] * n_seq
        self._clock = 0
        # copies wait for the next decode call: until then a target is no source, and a source no target
        self._copy_targets: set = set()
        self._copy_sources: set = set()

    def free(self) -> List[int]:
        return [s for s, busy in enumerate(self.busy) if not busy]

    def place(self, ids: Sequence[int], minimum_fresh: int = 1) -> Optional[Tuple[int, int, Optional[int]]]:
        """Take a free sequence for ``ids``; returns ``(seq, start, copied_from)``, or None to wait: when every
        sequence is busy, or when a busy one is about to decode a clearly longer prefix of ``ids`` (the next
        call can copy it).

        The sequence holds ``ids[:start]`` afterwards; at least ``minimum_fresh`` tokens remain to decode
        (one for the logits of the last token).  ``copied_from`` names the sequence copied, if any.
        """
        free = self.free()
        if not free:
            return None
        limit = max(0, len(ids) - minimum_fresh)
        held = [min(common_prefix(h, ids), limit) for h in self.held]
        # ties go to the sequence used longest ago, whose contents are least likely to be wanted
        own = max(free, key=lambda s: (held[s], -self._last_used[s]))
        sources = [s for s in range(len(self.held)) if s not in self._copy_targets]
        source = max(sources, key=lambda s: held[s], default=own)
        targets = [s for s in free if s not in self._copy_sources]
        if held[source] - held[own] >= COPY_MIN_TOKENS and targets:
            # the copy overwrites the target: take the free sequence whose contents are oldest
            seq = min(targets, key=lambda s: self._last_used[s])
            self._context.copy_sequence(source, seq)
            self.held[seq] = list(self.held[source])
            self._copy_targets.add(seq)
            self._copy_sources.add(source)
            start, copied_from = held[source], source
        else:
            coming = max((min(common_prefix(self.planned[s], ids), limit) for s in range(len(self.held))
                          if self.busy[s]), default=0)
            if coming - held[own] >= COPY_MIN_TOKENS:
                return None
            seq, start, copied_from = own, held[own], None
        self._context.keep_prefix(seq, start)
        del self.held[seq][start:]
        self.planned[seq] = list(ids)
        self.busy[seq] = True
        self._touch(seq)
        return seq, start, copied_from

    def compact(self) -> Dict[int, int]:
        """Move busy sequences into the free ids between the others, so that the busy ones are consecutive;
        returns ``{old id: new id}`` of the moved ones.

        A move copies the whole stream (measured: about one single-token forward pass), and removes a forward
        pass from every later step of the request, a generation's ~10 steps.  The window of ids kept is the
        one that already holds the most busy sequences.  Sequences that take part in a copy of this step
        are left for the next one.
        """
        busy = [s for s, b in enumerate(self.busy) if b]
        k = len(busy)
        if k < 2 or busy[-1] - busy[0] == k - 1:
            return {}
        start = max(range(len(self.busy) - k + 1), key=lambda w: sum(w <= s < w + k for s in busy))
        window = range(start, start + k)
        targets = [s for s in window if not self.busy[s] and s not in self._copy_sources]
        movable = [s for s in busy if s not in window and s not in self._copy_targets]
        moves = dict(zip(movable, targets))
        for source, target in moves.items():
            self._context.copy_sequence(source, target)
            self.held[target] = list(self.held[source])
            self.planned[target], self.planned[source] = self.planned[source], []
            self.busy[target], self.busy[source] = True, False
            self._copy_targets.add(target)
            self._copy_sources.add(source)
            self._touch(target)
        return moves

    def decoded(self, seq: int, tokens: Sequence[int]) -> None:
        """``tokens`` were decoded at the end of ``seq``."""
        self.held[seq].extend(tokens)

    def release(self, seq: int) -> None:
        """The request is done; what the sequence holds stays for later requests."""
        self.busy[seq] = False
        self.planned[seq] = []
        self._touch(seq)

    def forget_free(self) -> None:
        """Empty every free sequence (nothing of theirs is reused afterwards)."""
        for seq in self.free():
            self._context.keep_prefix(seq, 0)
            self.held[seq] = []

    def step_done(self) -> None:
        """A decode call ran: the copies asked for before it are done."""
        self._copy_targets.clear()
        self._copy_sources.clear()

    def _touch(self, seq: int) -> None:
        self._clock += 1
        self._last_used[seq] = self._clock
