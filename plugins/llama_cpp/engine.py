"""The llama.cpp engine: one ``llama_cpp.Llama`` per model, driven token by token on its own thread.

It does what LMQL's own ``llama.cpp:`` LMTP backend gets wrong on llama-cpp-python 0.3:

* LMQL hands a bare callable to ``Llama.generate(logits_processor=...)``; 0.3 iterates over it
  inside a ctypes callback, the TypeError is swallowed and ``where`` masks are silently ignored.
  Here the mask is applied in numpy to the logits of every step, before choosing the token.
* LMQL lets ``Llama.generate`` run on to ``max_tokens``.  Here every end-of-generation token of
  the GGUF vocabulary ends the stream at once and is reported as the tokenizer's EOS.
* LMQL builds ``Llama(logits_all=True)`` and re-stacks all past score rows on every token
  (quadratic) and reports raw logits as "logprobs".  Here only the last logits row is read (a
  zero-copy view), and logprobs are a log-softmax of the masked distribution.
* Tokens are produced by one background thread per model (llama.cpp drops the GIL while
  decoding), so LMQL's per-token interpreter work overlaps with the next forward pass; requests
  come from any event loop.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import queue
import sys
import threading
from typing import Iterator, List, Optional, Sequence

import numpy as np

__all__ = ["MIN_TOKENS_BEFORE_PREEMPT", "IGNORED_DECODER_OPTIONS", "usable_cores", "LlamaEngine"]

# Number of tokens a generation must have produced before a newer request may pre-empt it (keeps
# several interleaved streams from thrashing the single KV cache while still dropping useless
# speculation quickly).  The engine pre-empts for any waiting request; the LMTP server only for a
# request that continues the same sequence (see lmtp_server.py).
MIN_TOKENS_BEFORE_PREEMPT = 4

# Decoder options LMQL may pass that the engine's sampler does not implement (ignored, with a warning).
IGNORED_DECODER_OPTIONS = ("repetition_penalty", "presence_penalty", "frequency_penalty", "length_penalty")

# Process-wide GIL switch interval set when an engine starts (see LlamaEngine).
_GIL_SWITCH_INTERVAL = 0.001


def usable_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


class _Job:
    """One request, executed by the worker thread.

    Results go to ``sink(item) -> bool`` (False: consumer gone).  For async
    callers the sink forwards to an ``asyncio.Queue`` of the caller's loop.
    """

    __slots__ = ("kind", "args", "sink", "queue", "cancelled", "produced")

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

    def emit(self, item) -> bool:
        if self.sink(item):
            return True
        self.cancelled.set()
        return False


_END = object()


class LlamaEngine:
    """Owns one ``llama_cpp.Llama`` and serialises all work on it.

    All model calls run on a single daemon thread; requests come from any
    asyncio loop (results are delivered with ``call_soon_threadsafe`` to the
    loop that issued them), so the engine is not bound to one event loop.
    """

    def __init__(self, gguf_path: pathlib.Path, *, n_threads: int, n_ctx: int, n_batch: int = 512,
                 seed: Optional[int] = None):
        import llama_cpp
        from llama_cpp import Llama

        self._llama_cpp = llama_cpp
        self.gguf_path = pathlib.Path(gguf_path)
        self.n_threads = n_threads
        # logits_all=False: only the last row of logits is computed/copied
        self.llm = Llama(model_path=str(gguf_path), n_ctx=n_ctx, n_batch=min(n_batch, n_ctx),
                         # prompt evaluation happens while the interpreter waits
                         # for the first token, so it may use every core
                         n_threads=n_threads, n_threads_batch=max(n_threads, usable_cores()),
                         # Flash attention makes a position's logits the same however the tokens before
                         # it were split into decode calls (without it, evaluating a suffix token by token
                         # or in one batch differs by up to 0.8 in the logits): what seeded sampling,
                         # prefix reuse and pre-emption need to be reproducible.
                         flash_attn=True,
                         logits_all=False, verbose=False)
        self.n_vocab = self.llm.n_vocab()
        self.n_ctx = self.llm.n_ctx()
        vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        self.eog_ids = frozenset(i for i in range(self.n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, i))
        self.eos_id = int(self.llm.token_eos())
        self._rng = np.random.default_rng(seed)
        # logits of the last position in the KV cache (copy), if still valid
        self._tail_logits: Optional[np.ndarray] = None

        # The worker needs the GIL once per token (after llama_decode returns)
        # while the interpreter thread may hold it; with the default 5 ms
        # switch interval that wait is a large part of a 7 ms token.
        if sys.getswitchinterval() > _GIL_SWITCH_INTERVAL:
            sys.setswitchinterval(_GIL_SWITCH_INTERVAL)

        self._jobs: "queue.Queue[_Job]" = queue.Queue()
        self._worker = threading.Thread(target=self._work, name="lpb-llama-cpp", daemon=True)
        self._worker.start()

        # statistics (read by tests/benchmarks)
        self.stats = {"requests": 0, "generated": 0, "evaluated": 0, "last_finish_reason": None,
                      "last_generated": 0, "preempted": 0}

    # ---------------- llama.cpp primitives (worker thread only) ------------
    def _logits_view(self) -> np.ndarray:
        ptr = self._llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    def _eval(self, tokens: Sequence[int]) -> None:
        if len(tokens) + self.llm.n_tokens > self.n_ctx:
            raise ValueError(f"context overflow: {self.llm.n_tokens + len(tokens)} tokens > n_ctx={self.n_ctx}; "
                             "pass a larger n_ctx to load_model()")
        self.llm.eval(tokens)
        self.stats["evaluated"] += len(tokens)
        self._tail_logits = None

    def _prepare(self, ids: Sequence[int]) -> np.ndarray:
        """Make the KV cache hold exactly ``ids``; return the next-token logits.

        Reuses the longest common prefix with what is already in the cache,
        so follow-up requests of a growing sequence only evaluate new tokens.
        """
        if len(ids) == 0:
            raise ValueError("cannot generate from an empty prompt (the model has no BOS)")
        ids_arr = np.asarray(ids, dtype=np.intc)
        n_cached = self.llm.n_tokens
        n = min(n_cached, len(ids_arr))
        diff = np.flatnonzero(self.llm.input_ids[:n] != ids_arr[:n])
        k = int(diff[0]) if len(diff) else n
        if k == len(ids_arr) == n_cached and self._tail_logits is not None:
            return self._tail_logits
        if k == len(ids_arr):
            k -= 1  # re-run the last token to get its logits
        self.llm.n_tokens = k  # Llama.eval drops the KV cells from n_tokens on
        self._eval(ids_arr[k:].tolist())
        return self._logits_view()

    @staticmethod
    def _bias_from_mask(mask, n_vocab) -> Optional[np.ndarray]:
        """LMQL logits mask (0 = allowed, float32.min = banned; or id list) -> additive bias."""
        if mask is None:
            return None
        if isinstance(mask, (int, np.integer)) or (np.isscalar(mask)):
            allowed = np.zeros(n_vocab, dtype=bool)
            allowed[int(mask)] = True
        elif isinstance(mask, list):
            allowed = np.zeros(n_vocab, dtype=bool)
            allowed[np.asarray(mask, dtype=np.int64)] = True
        else:
            m = np.asarray(mask)
            if m.dtype == bool:
                allowed = m
            else:
                allowed = m > -1e20
            if len(allowed) < n_vocab:
                allowed = np.concatenate([allowed, np.zeros(n_vocab - len(allowed), dtype=bool)])
            allowed = allowed[:n_vocab]
        if allowed.all():
            return None
        bias = np.zeros(n_vocab, dtype=np.float32)
        bias[~allowed] = -np.inf
        return bias

    def _choose(self, scores: np.ndarray, temperature: float, top_k: int, top_p: float,
                seed: Optional[int] = None, position: int = 0) -> int:
        """Argmax, or a sample. With ``seed``, the draw depends only on (seed, position): however requests are
        pre-empted or interleaved, the token sampled at a position is the same."""
        if temperature <= 0.0:
            return int(np.argmax(scores))
        z = scores.astype(np.float64) / temperature
        if top_k and 0 < top_k < len(z):
            kth = np.partition(z, -top_k)[-top_k]
            z = np.where(z < kth, -np.inf, z)
        p = np.exp(z - z.max())
        if top_p is not None and top_p < 1.0:
            order = np.argsort(-p)
            c = np.cumsum(p[order])
            cut = int(np.searchsorted(c, top_p * c[-1])) + 1
            keep = np.zeros_like(p, dtype=bool)
            keep[order[:cut]] = True
            p = np.where(keep, p, 0.0)
        c = np.cumsum(p)
        draw = self._rng.random() if seed is None else np.random.default_rng((seed, position)).random()
        return int(min(np.searchsorted(c, draw * c[-1], side="right"), len(c) - 1))

    def _generate(self, job: _Job) -> Iterator[dict]:
        a = job.args
        ids, max_tokens = list(a["ids"]), int(a["max_tokens"])
        temperature = float(a.get("temperature") or 0.0)
        top_k = int(a.get("top_k") or 0)
        top_p = float(a.get("top_p") or 1.0)
        n_top = int(a.get("top_logprobs") or 1)
        seed = a.get("seed")
        bias = self._bias_from_mask(a.get("mask"), self.n_vocab)
        eos_allowed = bias is None or bias[self.eos_id] == 0
        self.stats["requests"] += 1

        logits = self._prepare(ids)
        for i in range(max_tokens):
            scores = logits + bias if bias is not None else logits
            token = self._choose(scores, temperature, top_k, top_p, seed, len(ids) + i)
            # log-softmax of the (masked) distribution: only what is needed
            mx = float(scores.max())
            lse = mx + float(np.log(np.sum(np.exp(scores - mx))))
            logprob = float(scores[token]) - lse
            top = {token: logprob}
            if n_top > 1:
                idx = np.argpartition(-scores, n_top)[:n_top]
                top.update({int(t): float(scores[t]) - lse for t in idx if np.isfinite(scores[t])})
            finish = None
            if token in self.eog_ids:
                # any end-of-generation token (<|endoftext|>, <|im_end|>, ...) ends the
                # variable; LMQL only recognises the tokenizer's EOS id
                if eos_allowed:
                    token = self.eos_id
                finish = "stop"
            elif i + 1 >= max_tokens:
                finish = "length"
            yield {"token": token, "logprob": logprob, "top_logprobs": top, "finish_reason": finish}
            job.produced += 1
            self.stats["generated"] += 1
            if finish is not None:
                self.stats["last_finish_reason"] = finish
                self.stats["last_generated"] = job.produced
                return
            if job.cancelled.is_set():
                return
            if job.produced >= MIN_TOKENS_BEFORE_PREEMPT and not self._jobs.empty():
                # a newer request waits: the rest of this speculative chunk is
                # likely useless (mask changed / variable ended)
                self.stats["preempted"] += 1
                return
            self._eval([token])
            logits = self._logits_view()

    def _score(self, job: _Job) -> List[float]:
        prompt, scored = list(job.args["prompt"]), list(job.args["scored"])
        if not scored:
            return []
        logits = self._prepare(prompt)
        out = []
        for j, t in enumerate(scored):
            mx = float(logits.max())
            lse = mx + float(np.log(np.sum(np.exp(logits - mx))))
            out.append(float(logits[t]) - lse)
            if j + 1 < len(scored):
                self._eval([t])
                logits = self._logits_view()
        return out

    def _work(self):
        while True:
            job = self._jobs.get()
            if job.cancelled.is_set():
                continue
            try:
                if job.kind == "generate":
                    for item in self._generate(job):
                        if not job.emit(item):
                            break
                elif job.kind == "score":
                    job.emit(self._score(job))
                elif job.kind == "call":
                    job.emit(job.args["fn"]())
            except BaseException as e:  # report to the awaiting coroutine
                self._tail_logits = None
                job.emit(e)
            job.emit(_END)

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
        return await self._single("score", prompt=prompt, scored=scored)

    async def run(self, fn):
        """Run ``fn()`` on the engine thread (exclusive access to ``self.llm``)."""
        return await self._single("call", fn=fn)

    def clear_cache(self) -> None:
        """Forget the KV-cache prefix (next request re-evaluates its whole prompt)."""
        def clear():
            self.llm.n_tokens = 0
            self._tail_logits = None
        self.run_sync(clear)

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
