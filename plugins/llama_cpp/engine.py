"""The llama.cpp engine: concurrent requests decoded together, several sequences per ``llama_decode`` call.

It does what LMQL's own ``llama.cpp:`` LMTP backend gets wrong on llama-cpp-python 0.3:

* LMQL hands a bare callable to ``Llama.generate(logits_processor=...)``; 0.3 iterates over it
  inside a ctypes callback, the TypeError is swallowed and ``where`` masks are silently ignored.
  Here the mask is applied in numpy to the logits of every step, before choosing the token.
* LMQL lets ``Llama.generate`` run on to ``max_tokens``.  Here every end-of-generation token of
  the GGUF vocabulary ends the stream at once and is reported as the tokenizer's EOS.
* LMQL builds ``Llama(logits_all=True)`` and re-stacks all past score rows on every token
  (quadratic) and reports raw logits as "logprobs".  Here only the rows that are needed are computed,
  and logprobs are a log-softmax of the masked distribution.

And it batches: one worker thread drives a llama.cpp context of ``n_seq`` sequences
(:mod:`~lpb_plugins.llama_cpp.llama_context`).  Every request (from any event loop or thread) is placed
in a free sequence that already holds as much of its prompt as possible
(:mod:`~lpb_plugins.llama_cpp.kv_cache`); then each step decodes, in one call, the next tokens of every
running request: prompt suffixes of new ones, the last sampled token of the others
(:mod:`~lpb_plugins.llama_cpp.batch`).  Tokens are chosen per sequence (:mod:`~lpb_plugins.llama_cpp.sampling`);
a seeded request draws each token from (seed, position).  A sequence's logits do not depend on what it
is batched with, so a request gives the same tokens alone or beside others, whenever it runs.
The worker blocks while there is nothing to do, and llama.cpp drops the GIL while decoding, so LMQL's
interpreter work for one step overlaps the next forward pass.
"""

from __future__ import annotations

import asyncio
import queue
import sys
import threading
from typing import List, Optional

import numpy as np

from lpb_plugins.llama_cpp import sampling
from lpb_plugins.llama_cpp.batch import Span
from lpb_plugins.llama_cpp.kv_cache import SequenceCache

__all__ = ["DEFAULT_SEQUENCES", "MIN_TOKENS_BEFORE_PREEMPT", "IGNORED_DECODER_OPTIONS", "LlamaEngine"]

# Sequences decoded together by default, and so the queries lpb runs at once in-process: measured with
# benchmarks/bench_throughput.py on 2 cores, 8 and 16 did 1.47x and 1.30x the one-thread raw loop's fitness
# calls per second (medians; within the noise of each other), 4 1.26x.
DEFAULT_SEQUENCES = 16

# Tokens a generation must have produced before a request that continues its sequence ends it (the
# request's mask or variable changed, so the rest of the speculative chunk is useless).  The LMTP server
# uses the same rule for requests waiting in its own queue (see lmtp_server.py).
MIN_TOKENS_BEFORE_PREEMPT = 4

# Decoder options LMQL may pass that the engine's sampler does not implement (ignored, with a warning).
IGNORED_DECODER_OPTIONS = ("repetition_penalty", "presence_penalty", "frequency_penalty", "length_penalty")

# Process-wide GIL switch interval set when an engine starts (see LlamaEngine).
_GIL_SWITCH_INTERVAL = 0.001


class _Job:
    """One request.  Results go to ``sink(item) -> bool`` (False: consumer gone); for async callers the
    sink forwards to an ``asyncio.Queue`` of the caller's loop.  The rest is the worker's bookkeeping."""

    __slots__ = ("kind", "args", "sink", "queue", "cancelled", "produced", "seq", "pending", "position",
                 "first_output", "bias", "eos_allowed", "scores")

    def __init__(self, kind, args, sink=None):
        self.kind = kind
        self.args = args
        self.cancelled = threading.Event()
        self.produced = 0
        self.queue: Optional[asyncio.Queue] = None
        if sink is None:
            loop = asyncio.get_running_loop()
            self.queue = asyncio.Queue()

            def sink(item, _put=self.queue.put_nowait):
                try:
                    loop.call_soon_threadsafe(_put, item)
                    return True
                except RuntimeError:  # the consumer's event loop is closed
                    return False
        self.sink = sink
        self.seq: Optional[int] = None
        self.pending: List[int] = []  # tokens to decode next, from `position` on
        self.position = 0
        self.first_output = 0  # first position whose logits are wanted
        self.bias = None
        self.eos_allowed = True
        self.scores: List[float] = []

    def emit(self, item) -> bool:
        if self.sink(item):
            return True
        self.cancelled.set()
        return False


_END = object()


class LlamaEngine:
    """Decodes all requests on one thread, in a context of several sequences.

    ``context`` is a :class:`~lpb_plugins.llama_cpp.llama_context.LlamaContext` (or anything with its
    interface); the engine owns it from now on.  Requests come from any asyncio loop (results are delivered
    with ``call_soon_threadsafe`` to the loop that issued them) or thread, so the engine is not bound to one
    event loop.  ``n_threads`` decode steps of single tokens, ``n_threads_batch`` steps with prompts.
    """

    def __init__(self, context, *, n_threads: int, n_threads_batch: Optional[int] = None, seed: Optional[int] = None):
        self.context = context
        self.gguf_path = getattr(context, "gguf_path", None)
        self.n_threads = n_threads
        self.n_threads_batch = n_threads_batch or n_threads
        self.n_seq = context.n_seq
        self.n_vocab = context.n_vocab
        self.n_ctx = context.n_ctx  # of each sequence
        self.eog_ids = context.eog_ids
        self.eos_id = context.eos_id
        self._rng = np.random.default_rng(seed)
        self._cache = SequenceCache(context, context.n_seq)

        # The worker needs the GIL once per step (after llama_decode returns) while the interpreter
        # thread may hold it; with the default 5 ms switch interval that wait is a large part of a step.
        if sys.getswitchinterval() > _GIL_SWITCH_INTERVAL:
            sys.setswitchinterval(_GIL_SWITCH_INTERVAL)

        self._jobs: "queue.Queue[_Job]" = queue.Queue()
        self._waiting: List[_Job] = []  # admitted in order, not yet placed (every sequence busy)
        self._running: List[_Job] = []
        # statistics (read by tests/benchmarks)
        self.stats = {"requests": 0, "generated": 0, "evaluated": 0, "last_finish_reason": None,
                      "last_generated": 0, "preempted": 0, "decode_calls": 0, "copied_tokens": 0,
                      "reused_tokens": 0, "most_sequences_in_a_call": 0, "moved": 0}
        self._worker = threading.Thread(target=self._work, name="lpb-llama-cpp", daemon=True)
        self._worker.start()

    # ---------------- worker thread ----------------
    def _work(self):
        while True:
            # block (no spinning) while there is nothing to decode
            self._admit(self._jobs.get() if not (self._running or self._waiting) else None)
            while True:
                try:
                    self._admit(self._jobs.get_nowait())
                except queue.Empty:
                    break
            self._drop_cancelled()
            self._place_waiting()
            moves = self._cache.compact()
            if moves:
                for job in self._running:
                    job.seq = moves.get(job.seq, job.seq)
                self.stats["moved"] += len(moves)
            if self._running:
                self._step()

    def _admit(self, job: Optional[_Job]) -> None:
        if job is None or job.cancelled.is_set():
            return
        if job.kind == "call":
            try:
                result = job.args["fn"]()
            except BaseException as e:  # report to the caller
                result = e
            job.emit(result)
            job.emit(_END)
            return
        try:
            self._prepare(job)
        except BaseException as e:
            self._finish(job, e)
            return
        self._preempt_superseded(job)
        self._waiting.append(job)

    def _prepare(self, job: _Job) -> None:
        a = job.args
        if job.kind == "generate":
            ids = list(a["ids"])
            if not ids:
                raise ValueError("cannot generate from an empty prompt (the model has no BOS)")
            job.bias = sampling.bias_from_mask(a.get("mask"), self.n_vocab)
            job.eos_allowed = job.bias is None or job.bias[self.eos_id] == 0
            job.first_output = len(ids) - 1
            self.stats["requests"] += 1
        else:  # score: logits at the last prompt token and every scored token but the last
            if not a["prompt"]:
                raise ValueError("cannot score after an empty prompt (the model has no BOS)")
            ids = list(a["prompt"]) + list(a["scored"])[:-1]
            job.first_output = len(a["prompt"]) - 1
        if len(ids) > self.n_ctx:
            raise ValueError(f"context overflow: {len(ids)} tokens > n_ctx={self.n_ctx}; "
                             "pass a larger n_ctx to load_model()")
        a["ids"] = ids

    def _preempt_superseded(self, job: _Job) -> None:
        """A generate request that continues a running generation's sequence replaces it: LMQL has moved on."""
        if job.kind != "generate":
            return
        ids = job.args["ids"]
        for other in self._running:
            if other.kind != "generate" or other.produced < MIN_TOKENS_BEFORE_PREEMPT:
                continue
            prompt = other.args["ids"]
            if len(ids) > len(prompt) and ids[:len(prompt)] == prompt:
                other.cancelled.set()
                self.stats["preempted"] += 1

    def _drop_cancelled(self) -> None:
        for job in [j for j in self._running if j.cancelled.is_set()]:
            self._finish(job)
        self._waiting = [j for j in self._waiting if not j.cancelled.is_set()]

    def _place_waiting(self) -> None:
        waiting, self._waiting = self._waiting, []
        for job in waiting:
            ids = job.args["ids"]
            placed = self._cache.place(ids, minimum_fresh=len(ids) - job.first_output) if self._cache.free() else None
            if placed is None:  # every sequence busy, or a prefix to copy is being decoded
                self._waiting.append(job)
                continue
            job.seq, start, copied_from = placed
            job.pending, job.position = ids[start:], start
            self.stats["reused_tokens" if copied_from is None else "copied_tokens"] += start
            self._running.append(job)

    def _step(self) -> None:
        """One decode call: the next tokens of every running job, up to the batch's capacity."""
        room = self.context.n_batch
        spans, fed = [], []
        # running generations (one token each) first, then prompts in arrival order
        for job in sorted(self._running, key=lambda j: len(j.pending) > 1):
            if room == 0:
                break
            tokens = job.pending[:room]
            if job.position + len(tokens) > self.n_ctx:
                self._finish(job, ValueError(f"context overflow: {job.position + len(tokens)} tokens > "
                                             f"n_ctx={self.n_ctx}; pass a larger n_ctx to load_model()"))
                continue
            end = job.position + len(tokens)
            outputs = [p - job.position for p in range(max(job.position, job.first_output), end)]
            if job.kind == "generate":
                outputs = outputs[-1:] if end == job.position + len(job.pending) else []
            spans.append(Span(job.seq, tokens, job.position, outputs))
            fed.append(job)
            room -= len(tokens)
        if not spans:
            return
        # llama.cpp picks n_threads for a call of one token, n_threads_batch for more; ours is by the kind of step
        threads = self.n_threads if all(len(s.tokens) == 1 for s in spans) else self.n_threads_batch
        self.context.set_threads(threads, threads)
        try:
            self.context.decode(spans)
        except BaseException as e:
            for job in fed:
                self._finish(job, e)
            return
        finally:
            self._cache.step_done()
        self.stats["decode_calls"] += 1
        self.stats["evaluated"] += sum(len(s.tokens) for s in spans)
        self.stats["most_sequences_in_a_call"] = max(self.stats["most_sequences_in_a_call"], len(spans))
        for job, span in zip(fed, spans):
            self._cache.decoded(job.seq, span.tokens)
            job.position += len(span.tokens)
            job.pending = job.pending[len(span.tokens):]
            try:
                if job.kind == "generate":
                    if span.rows:
                        self._next_token(job, self.context.logits(span.rows[-1]))
                else:
                    self._scored(job, span)
            except BaseException as e:
                self._finish(job, e)

    def _next_token(self, job: _Job, logits: np.ndarray) -> None:
        a = job.args
        temperature = float(a.get("temperature") or 0.0)
        scores = logits + job.bias if job.bias is not None else logits
        seed, position = a.get("seed"), job.position
        noise = (lambda n: self._rng.gumbel(size=n)) if seed is None else sampling.seeded_noise(seed, position)
        token = sampling.choose(scores, temperature, int(a.get("top_k") or 0), float(a.get("top_p") or 1.0), noise)
        logprob, top = sampling.logprobs(scores, token, int(a.get("top_logprobs") or 1))
        finish = None
        if token in self.eog_ids:
            # any end-of-generation token (<|endoftext|>, <|im_end|>, ...) ends the variable;
            # LMQL only recognises the tokenizer's EOS id
            if job.eos_allowed:
                token = self.eos_id
            finish = "stop"
        elif job.produced + 1 >= int(a["max_tokens"]):
            finish = "length"
        job.produced += 1
        self.stats["generated"] += 1
        if not job.emit({"token": token, "logprob": logprob, "top_logprobs": top, "finish_reason": finish}):
            self._finish(job)
        elif finish is not None:
            self.stats["last_finish_reason"] = finish
            self.stats["last_generated"] = job.produced
            self._finish(job)
        else:
            job.pending = [token]

    def _scored(self, job: _Job, span: Span) -> None:
        scored = job.args["scored"]
        for row, offset in zip(span.rows, span.outputs):
            at = span.start + offset - job.first_output  # index of the scored token these logits predict
            job.scores.append(sampling.log_softmax_at(self.context.logits(row), scored[at]))
        if not job.pending:
            job.emit(job.scores)
            self._finish(job)

    def _finish(self, job: _Job, error: Optional[BaseException] = None) -> None:
        if job in self._running:
            self._running.remove(job)
            self._cache.release(job.seq)
        if error is not None:
            job.emit(error)
        job.emit(_END)
        job.cancelled.set()

    def set_threads(self, n_threads: int, n_threads_batch: int) -> None:
        """Threads for decode steps of single tokens and for steps with prompts, from the next step on."""
        self.n_threads, self.n_threads_batch = int(n_threads), int(n_threads_batch)

    # ---------------- async API (any event loop) ----------------------------
    def _submit(self, kind, **args) -> _Job:
        job = _Job(kind, args)
        self._jobs.put(job)
        return job

    async def generate(self, ids, *, max_tokens, temperature=0.0, mask=None, top_logprobs=1,
                       top_k=0, top_p=1.0, seed=None):
        """Async generator of token dicts ``{token, logprob, top_logprobs, finish_reason}``.

        ``seed``: sample each token from (seed, its position) instead of the engine's shared stream."""
        job = self._submit("generate", ids=ids, max_tokens=max_tokens, temperature=temperature,
                           mask=mask, top_logprobs=top_logprobs, top_k=top_k, top_p=top_p, seed=seed)
        try:
            while True:
                item = await job.queue.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            # consumer gone (cancelled, closed or done): stop speculating
            job.cancelled.set()

    async def _single(self, kind, **args):
        job = self._submit(kind, **args)
        try:
            item = await job.queue.get()
            if isinstance(item, BaseException):
                raise item
            return item
        finally:
            job.cancelled.set()

    async def score(self, prompt, scored) -> List[float]:
        """Logprobs of the ``scored`` tokens following ``prompt``."""
        if not scored:
            return []
        return await self._single("score", prompt=prompt, scored=scored)

    async def run(self, fn):
        """Run ``fn()`` on the engine thread, between decode calls (exclusive access to the context)."""
        return await self._single("call", fn=fn)

    def clear_cache(self) -> None:
        """Forget the KV-cache prefixes kept for reuse (the next request re-evaluates its whole prompt)."""
        self.run_sync(self._cache.forget_free)

    def run_sync(self, fn):
        """Blocking variant of :meth:`run` for code outside an event loop."""
        done = threading.Event()
        box = []

        def sink(item):
            if item is not _END and not box:
                box.append(item)
                done.set()
            return True

        self._jobs.put(_Job("call", {"fn": fn}, sink=sink))
        done.wait()
        if isinstance(box[0], BaseException):
            raise box[0]
        return box[0]
