"""The LMTP backend: LMQL's ``LMTPModel`` interface over the in-process llama.cpp engine.

:class:`LlamaCppLMTPModel` generates with :class:`lpb_plugins.llama_cpp.engine.LlamaEngine`, so an
LMTP server behaves like the in-process model:

* ``where`` constraints are enforced.  LMQL clients (``LMTPDcModel``) turn each token mask into
  a ``logit_bias`` dict: ``{id: +100}`` for the allowed ids when few are allowed, else
  ``{id: -100}`` for the banned ids.  LMQL's own servers add that bias to the logits, which
  only makes a violation unlikely.  Here it is read as the hard mask it stands for (positive
  entries = the only allowed ids, negative entries = banned ids; ids outside the model's
  vocabulary, such as LMQL's reserved tag ids, are ignored) and handed to the engine, which
  removes banned tokens before choosing (``-inf``), for argmax and sampling alike.
* every end-of-generation token of the GGUF ends the stream and is reported as the EOS id;
* no BOS is added on the server: the client's GGUF tokenizer adds one only when the GGUF says
  ``add_bos_token = true`` (LMQL's client prepends ``tokenizer.bos_token_id`` if it is set);
* logprobs are a log-softmax of the masked distribution; the KV-cache prefix is reused.

:func:`register_backend` puts it in LMQL's ``LMTPModel.registry`` as ``lpb-llama.cpp``; the
server (:mod:`lpb_plugins.llama_cpp.lmtp_server`) calls it when it starts.
"""

from __future__ import annotations

import asyncio
import threading
import warnings
from typing import Any, Callable, Dict, Optional

import numpy as np
from lmql.models.lmtp.backends.lmtp_model import LMTPModel, LMTPModelResult

from lpb_plugins.llama_cpp.engine import DEFAULT_SEQUENCES, IGNORED_DECODER_OPTIONS, LlamaEngine
from lpb_plugins.llama_cpp.gguf_tokenizer import model_identifier
from lpb_plugins.llama_cpp.lmql_model import load_model
from lpb_plugins.llama_cpp.model_files import BACKEND_NAME, resolve_gguf

__all__ = ["mask_from_logit_bias", "LlamaCppLMTPModel", "register_backend"]


def mask_from_logit_bias(logit_bias: Optional[Dict[int, float]], n_vocab: int) -> Optional[np.ndarray]:
    """LMQL's LMTP ``logit_bias`` -> boolean "allowed" array over the model vocabulary (None: all).

    LMQL clients send +100 for the only allowed ids or -100 for banned ids; both are hard
    constraints, so they are applied as a mask, not added to the logits.
    """
    if not logit_bias:
        return None
    ids = np.fromiter((int(k) for k in logit_bias.keys()), dtype=np.int64, count=len(logit_bias))
    values = np.fromiter((float(v) for v in logit_bias.values()), dtype=np.float64, count=len(logit_bias))
    inside = (ids >= 0) & (ids < n_vocab)  # LMQL's reserved tag ids lie beyond the vocabulary
    positive = values > 0
    if positive.any():
        allowed = np.zeros(n_vocab, dtype=bool)
        allowed[ids[positive & inside]] = True
    else:
        allowed = np.ones(n_vocab, dtype=bool)
    allowed[ids[(values < 0) & inside]] = False
    if allowed.all():
        return None
    if not allowed.any():
        raise ValueError("the constraint allows no token of the model's vocabulary")
    return allowed


class _RowBatch:
    """Stands in for LMQL's GenerateBatch when one row of a batch is streamed on its own."""

    def __init__(self, call):
        self.calls = [call]


class LlamaCppLMTPModel(LMTPModel):
    """LMTP backend generating with :class:`~lpb_plugins.llama_cpp.engine.LlamaEngine`.

    Loaded by LMQL as ``LMTPModel.load("lpb-llama.cpp:<PATH.gguf>")`` or
    ``LMTPModel.load("lpb-llama.cpp:<fingerprint>", gguf=PATH)``; further keyword arguments:
    ``n_threads``, ``seed``, ``n_ctx``, ``max_batch_size``.

    ``max_batch_size`` (``lpb serve --server-batch-size``) is how many requests the server serves at
    once; the engine decodes them together and has at least that many sequences.  LMQL's own batch
    interface (:meth:`generate`) still generates the rows of a batch one after another.
    """

    def __init__(self, model_name: str = BACKEND_NAME, gguf: Optional[str] = None, n_threads: Optional[int] = None,
                 seed: Optional[int] = None, n_ctx: int = 2048, max_batch_size: int = 1, **kwargs):
        super().__init__()
        rest = model_name[len(BACKEND_NAME) + 1:] if model_name.startswith(BACKEND_NAME + ":") else ""
        path = resolve_gguf(gguf if gguf is not None else (rest or None))
        unknown = set(kwargs) - {"verbose"}
        if unknown:
            warnings.warn(f"{BACKEND_NAME}: ignoring model arguments {sorted(unknown)}")
        self.max_batch_size = max(1, int(max_batch_size))
        self.llm = load_model(path, n_threads=n_threads, seed=seed, n_ctx=n_ctx,
                              n_seq=max(DEFAULT_SEQUENCES, self.max_batch_size))
        self.engine: LlamaEngine = self.llm.engine
        self.gguf_path = path
        self.model_identifier = model_identifier(path)
        self.n_vocab = self.engine.n_vocab
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._loop_lock = threading.Lock()
        self._warned = set()
        self.requests = 0
        self.generated = 0

    # ---------------- LMTPModel interface ----------------
    @property
    def eos_token_id(self):
        return self.engine.eos_id

    @property
    def vocab_size(self):
        return self.n_vocab

    def model_info(self):
        import llama_cpp
        return {
            "model_identifier": self.model_identifier,
            "model_type": "llama.cpp (lpb LMTP backend)",
            "gguf": self.gguf_path.name,
            "n_threads": self.engine.n_threads,
            "n_ctx": self.engine.n_ctx,
            "max_batch_size": self.max_batch_size,
            "llama-cpp-python": llama_cpp.__version__,
            "requests": self.requests,
            "generated_tokens": self.generated,
            "evaluated_tokens": self.engine.stats["evaluated"],  # prompt + generated tokens decoded
        }

    def generate(self, input_ids, attention_mask, temperature: float, max_new_tokens: int, bias_tensor,
                 streamer, **kwargs):
        """LMQL's batch interface (used by LMQL's stock scheduler); rows run one after another.

        ``bias_tensor`` is the list of per-row ``logit_bias`` dicts LMQL's scheduler passes.
        All tokens but each row's last are streamed; the last ones are returned, as LMQL expects.
        """
        input_ids = np.asarray(input_ids)
        attention_mask = np.asarray(attention_mask)
        biases = bias_tensor if bias_tensor is not None else [None] * len(input_ids)
        batch = getattr(streamer, "batch", None)
        last_tokens, last_rows = [], []
        for i, row in enumerate(input_ids):
            ids = row[attention_mask[i].astype(bool)].tolist()
            if len(input_ids) == 1:
                row_streamer = streamer
            elif batch is not None:
                row_streamer = type(streamer)(_RowBatch(batch.calls[i]), streamer.eos_token_id)
            else:
                raise ValueError(f"{BACKEND_NAME} cannot stream a batch of {len(input_ids)} to {streamer!r}")

            def emit(item, _s=row_streamer):
                _s(np.array([[item["token"]]]), [self._score_row(item)[None, :]])

            last = self.generate_one(ids, logit_bias=biases[i], max_tokens=max_new_tokens, temperature=temperature,
                                     top_logprobs=self._top_logprobs(batch, i), emit=emit, **kwargs)
            last_tokens.append(last["token"])
            last_rows.append(self._score_row(last))
        return LMTPModelResult(sequences=np.array(last_tokens, dtype=np.int64).reshape(-1, 1),
                               scores=[np.stack(last_rows)])

    def score(self, input_ids, attention_mask, **model_kwargs):
        """LMQL's batch scoring interface: logprob of every token given its prefix (first: 0)."""
        input_ids = np.asarray(input_ids)
        out = np.zeros(input_ids.shape, dtype=np.float32)
        for i, row in enumerate(input_ids):
            keep = np.asarray(attention_mask[i]).astype(bool)
            ids = row[keep].tolist()
            if len(ids) > 1:
                out[i, np.flatnonzero(keep)[1:]] = self.score_one(ids[:1], ids[1:])
        return out

    # ---------------- single-sequence primitives ----------------
    @staticmethod
    def _top_logprobs(batch, i) -> int:
        if batch is None:
            return 1
        return int(batch.calls[i].kwargs.get("top_logprobs", 1) or 1)

    def _score_row(self, item) -> np.ndarray:
        row = np.full(self.n_vocab, -np.inf, dtype=np.float32)
        for t, lp in item["top_logprobs"].items():
            row[int(t)] = lp
        row[item["token"]] = item["logprob"]
        return row

    def _run(self, coro):
        """Run a coroutine to completion on this model's helper event loop and return its result.

        The engine's API is async (it answers on the loop that asks); LMQL calls ``generate``
        synchronously, from a scheduler thread or, with LMQL's in-process async transport, from
        inside a running loop, so the work runs on a loop of its own, on its own thread.
        """
        with self._loop_lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                threading.Thread(target=self._loop.run_forever, name="lpb-lmtp-model", daemon=True).start()
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def generate_one(self, ids, *, logit_bias=None, max_tokens: int, temperature: float = 0.0,
                     top_logprobs: int = 1, emit: Callable[[dict], Any],
                     should_stop: Optional[Callable[[int], bool]] = None, top_k=0, top_p=1.0, **kwargs) -> dict:
        """Generate for one sequence; ``emit`` gets every token but the last, which is returned.

        Items are ``{token, logprob, top_logprobs, finish_reason}``; the returned one always has a
        finish_reason ("stop" at an end-of-generation token, else "length").  ``should_stop(n)``
        is asked after each of the first ``n`` tokens and may end the stream early ("length").
        """
        for key in set(kwargs) & set(IGNORED_DECODER_OPTIONS):
            if key not in self._warned:
                self._warned.add(key)
                warnings.warn(f"{BACKEND_NAME} ignores the decoder option {key}")
        mask = mask_from_logit_bias(logit_bias, self.n_vocab)
        ids = [int(t) for t in ids]
        max_tokens = max(1, min(int(max_tokens or 1), self.engine.n_ctx - len(ids)))
        self.requests += 1

        async def consume():
            stream = self.engine.generate(ids, max_tokens=max_tokens, temperature=float(temperature or 0.0),
                                          mask=mask, top_logprobs=int(top_logprobs or 1),
                                          top_k=int(top_k or 0), top_p=float(1.0 if top_p is None else top_p))
            n = 0
            try:
                async for item in stream:
                    n += 1
                    self.generated += 1
                    if item["finish_reason"] is None and (n >= max_tokens or (should_stop and should_stop(n))):
                        item = {**item, "finish_reason": "length"}
                    if item["finish_reason"] is not None:
                        return item
                    emit(item)
            finally:
                await stream.aclose()  # stops the engine's speculation at once
            raise RuntimeError("the llama.cpp engine ended a stream without a last token")

        return self._run(consume())

    def score_one(self, prompt, scored) -> list:
        """Logprobs of ``scored`` tokens following ``prompt`` (an empty prompt scores the first as 0)."""
        prompt, scored = [int(t) for t in prompt], [int(t) for t in scored]
        if not scored:
            return []
        head = []
        if not prompt:
            prompt, scored, head = scored[:1], scored[1:], [0.0]
            if not scored:
                return head
        return head + list(self._run(self.engine.score(prompt, scored)))


def register_backend() -> None:
    """Register :class:`LlamaCppLMTPModel` in LMQL's LMTP backend registry (``lpb-llama.cpp:...``)."""
    LMTPModel.registry[BACKEND_NAME] = LlamaCppLMTPModel
