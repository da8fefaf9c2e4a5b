"""Remote inference: serve a GGUF model over LMQL's LMTP protocol, and query such servers.

Importable as ``lpb_plugins.lmtp_serving``.

Server side
    :class:`LlamaCppLMTPModel` is an LMTP backend (a subclass of LMQL's ``LMTPModel``, registered in
    ``LMTPModel.registry`` as ``lpb-llama.cpp``) that generates with the in-process engine of
    :mod:`lpb_plugins.llama_cpp_adapter`, so the server behaves like the in-process backend:

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

    :func:`serve` (blocking) runs LMQL's own LMTP websocket server pieces (``LMTPWebSocketTransport``,
    ``TokenSession``, ``Scheduler``) with that model, plus three small changes made by subclassing:
    a client asking for a different model (another tokenizer) gets an error instead of a hang,
    one line per request is logged to stderr, and a speculative chunk stops early when its client
    has gone or has moved on (see ``MIN_TOKENS_BEFORE_PREEMPT``).  Requests are decoded one at a
    time (llama.cpp, one KV cache); ``server_batch_size`` is LMQL's scheduler batch size.

Client side
    :func:`remote_model` returns an ``lmql.LLM`` that sends queries to ``host:port`` with LMQL's
    websocket LMTP client, and tokenizes on the client with the same GGUF tokenizer (no weights
    are loaded on the client).

Both sides name the model ``lpb-llama.cpp:<fingerprint>``, a hash of the GGUF's tokenizer, so a
client and a server whose GGUF tokenizers differ refuse to work together (the GGUF file may live
at different paths on different machines).

LMTP has neither authentication nor encryption: bind servers to loopback (the default) or to a
private network only.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import ipaddress
import json
import os
import pathlib
import pickle
import sys
import threading
import time
import warnings
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np

from lpb_plugins import llama_cpp_adapter as lca

__all__ = [
    "BACKEND_NAME",
    "model_identifier",
    "resolve_gguf",
    "mask_from_logit_bias",
    "LlamaCppLMTPModel",
    "register_backend",
    "serve",
    "main",
    "remote_model",
]

BACKEND_NAME = "lpb-llama.cpp"

# When a generation stops before its max_tokens (finish_reason "length"; the client asks again if
# it needs more tokens).  LMTP has no "cancel" message, and a request streams a speculative chunk of tokens, all
# sampled under the mask of its first token, so the rest of a chunk is often useless:
# * at once when the client's connection is closed (its query is over);
# * after this many tokens when a waiting request continues the same sequence (the client has
#   moved on, e.g. its constraint ended the variable).
# A waiting request for another sequence does not interrupt: llama.cpp keeps one sequence in its
# KV cache, and switching back and forth re-evaluates prompts (measured on the breed of
# tests/test_endpoints.py: 34 s and 12,000 decoded tokens when any waiting request interrupted
# after 4 tokens, 15.5 s and 5,400 with this rule).
MIN_TOKENS_BEFORE_PREEMPT = 4

# Speculative tokens per request sent by remote_model() clients (LMQL's default is 16).  Cheap
# because of the pre-emption above; fewer round trips per unbounded variable.
DEFAULT_CLIENT_CHUNKSIZE = 32

_LOOPBACK_NAMES = {"localhost", "ip6-localhost"}


# --------------------------------------------------------------------------
# model naming
# --------------------------------------------------------------------------

def resolve_gguf(model_name_or_path: Optional[str | os.PathLike] = None) -> pathlib.Path:
    """The GGUF file for ``smollm2`` (or None), a ``.gguf`` path, or ``local:llama.cpp:PATH``."""
    if model_name_or_path is None or str(model_name_or_path) == "smollm2":
        return lca.embedded_model_path().resolve()
    name = str(model_name_or_path)
    for prefix in ("local:llama.cpp:", "llama.cpp:", BACKEND_NAME + ":"):
        if name.startswith(prefix):
            name = name[len(prefix):]
    path = pathlib.Path(name).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no GGUF file at {path}")
    return path.resolve()


_fingerprints: Dict[str, str] = {}


def _tokenizer_fingerprint(tokenizer_dir: pathlib.Path) -> str:
    key = str(tokenizer_dir)
    if key not in _fingerprints:
        meta = json.loads((tokenizer_dir / "lpb_gguf_meta.json").read_text())
        h = hashlib.sha256((tokenizer_dir / "tokenizer.json").read_bytes())
        h.update(json.dumps([meta.get("bos_token_id"), meta.get("eos_token_id"),
                             meta.get("add_bos_token")]).encode())
        _fingerprints[key] = h.hexdigest()[:16]
    return _fingerprints[key]


def model_identifier(gguf_path: Optional[str | os.PathLike] = None) -> str:
    """``lpb-llama.cpp:<fingerprint of the GGUF tokenizer>``: the model name client and server share."""
    return f"{BACKEND_NAME}:{_tokenizer_fingerprint(lca.tokenizer_dir_for(resolve_gguf(gguf_path)))}"


# --------------------------------------------------------------------------
# server side: the LMTP backend
# --------------------------------------------------------------------------

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


_IGNORED_OPTIONS = ("repetition_penalty", "presence_penalty", "frequency_penalty", "length_penalty")


class _RowBatch:
    """Stands in for LMQL's GenerateBatch when one row of a batch is streamed on its own."""

    def __init__(self, call):
        self.calls = [call]


def _lmtp_model_base():
    from lmql.models.lmtp.backends.lmtp_model import LMTPModel
    return LMTPModel


class LlamaCppLMTPModel(_lmtp_model_base()):
    """LMTP backend generating with :class:`lpb_plugins.llama_cpp_adapter.LlamaEngine`.

    Loaded by LMQL as ``LMTPModel.load("lpb-llama.cpp:<PATH.gguf>")`` or
    ``LMTPModel.load("lpb-llama.cpp:<fingerprint>", gguf=PATH)``; further keyword arguments:
    ``n_threads``, ``seed``, ``n_ctx``, ``max_batch_size``.

    llama.cpp (as driven by the engine) decodes one sequence at a time with one KV cache.
    ``max_batch_size`` is what LMQL's scheduler uses to group queued requests (``lpb serve
    --server-batch-size``); the rows of a group are then generated one after another, so it
    changes scheduling, not throughput.
    """

    def __init__(self, model_name: str = BACKEND_NAME, gguf: Optional[str] = None, n_threads: Optional[int] = None,
                 seed: Optional[int] = None, n_ctx: int = 2048, max_batch_size: int = 1, **kwargs):
        super().__init__()
        rest = model_name[len(BACKEND_NAME) + 1:] if model_name.startswith(BACKEND_NAME + ":") else ""
        path = resolve_gguf(gguf if gguf is not None else (rest or None))
        unknown = set(kwargs) - {"verbose"}
        if unknown:
            warnings.warn(f"{BACKEND_NAME}: ignoring model arguments {sorted(unknown)}")
        self.llm = lca.load_model(path, n_threads=n_threads, seed=seed, n_ctx=n_ctx)
        self.engine: lca.LlamaEngine = self.llm.engine
        self.gguf_path = path
        self.model_identifier = model_identifier(path)
        self.max_batch_size = max(1, int(max_batch_size))
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
        from lmql.models.lmtp.backends.lmtp_model import LMTPModelResult

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
        for key in set(kwargs) & set(_IGNORED_OPTIONS):
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
    from lmql.models.lmtp.backends.lmtp_model import LMTPModel
    LMTPModel.registry[BACKEND_NAME] = LlamaCppLMTPModel


register_backend()


# --------------------------------------------------------------------------
# server side: LMQL's LMTP server, slightly specialised
# --------------------------------------------------------------------------

def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _make_server_classes():
    from lmql.models.lmtp.lmtp_scheduler import GenerateCall, Scheduler, TokenSession

    class LpbScheduler(Scheduler):
        """LMQL's scheduler with our model object, pre-emption and a log line per request.

        LMQL's ``Scheduler.batches(max_batch_size)`` groups queued calls into batches of at most
        ``model.max_batch_size`` (= ``--server-batch-size``); llama.cpp then serves the calls of a
        batch one after another (one sequence, one KV cache), each streaming as it goes.
        """

        def __init__(self, identifier, model_args, model: LlamaCppLMTPModel, log_requests=True):
            self._model = model
            self._log_requests = log_requests
            self._count = 0
            super().__init__(identifier, model_args)  # starts the worker thread

        def worker(self):
            self._model_info = self._model.model_info()
            while not self.kill_event.is_set():
                self.process_batch(self._model)

        def model_info(self):
            return self._model.model_info()

        def _should_stop(self, call: GenerateCall) -> Callable[[int], bool]:
            prompt = list(call.prompt)
            n_prompt = len(prompt)

            def should_stop(produced: int) -> bool:
                if getattr(call.result_queue, "closed", False):
                    return True  # nobody reads the rest
                if produced < MIN_TOKENS_BEFORE_PREEMPT or self.queue.empty():
                    return False
                with self.queue.mutex:
                    waiting = list(self.queue.queue)
                return any(len(w.prompt) > n_prompt and w.prompt[:n_prompt] == prompt for w in waiting)

            return should_stop

        def process_batch(self, model):
            for batch in self.batches(model.max_batch_size):
                for call in batch:
                    self._serve_call(model, call, len(batch))

        def _serve_call(self, model: LlamaCppLMTPModel, call: GenerateCall, batch_size: int):
            started = time.perf_counter()
            self._count += 1
            number = self._count
            if getattr(call.result_queue, "closed", False):
                if self._log_requests:
                    _log(f"[lpb-serve] request {number}: skipped, the client has gone")
                return
            try:
                if call.kwargs.get("score", False):
                    offset = int(call.kwargs.get("scoring_offset", 0))
                    prompt, scored = call.prompt[:offset], call.prompt[offset:]
                    scores = model.score_one(prompt, scored)
                    for j, (token, lp) in enumerate(zip(scored, scores)):
                        call.put({"token": int(token), "stream_id": call.stream_id, "logprob": float(lp),
                                  "finish_reason": "stop" if j == len(scored) - 1 else None})
                    what = f"score {len(prompt)}+{len(scored)} tokens"
                else:
                    kw = dict(call.kwargs)
                    max_tokens = kw.pop("max_tokens", 32)
                    temperature = kw.pop("temperature", 0.0)
                    top_logprobs = kw.pop("top_logprobs", 1)
                    produced = 0

                    def emit(item):
                        nonlocal produced
                        produced += 1
                        call.put({**item, "stream_id": call.stream_id})

                    last = model.generate_one(call.prompt, logit_bias=call.logit_bias, max_tokens=max_tokens,
                                              temperature=temperature, top_logprobs=top_logprobs, emit=emit,
                                              should_stop=self._should_stop(call), **kw)
                    call.put({**last, "stream_id": call.stream_id})
                    constrained = f", mask of {len(call.logit_bias)}" if call.logit_bias else ""
                    what = (f"generate {len(call.prompt)} prompt tokens -> {produced + 1}/{max_tokens} "
                            f"({last['finish_reason']}), temperature {temperature}{constrained}")
                if self._log_requests:
                    _log(f"[lpb-serve] request {number}: {what}, {time.perf_counter() - started:.3f}s "
                         f"(at {time.strftime('%H:%M:%S')}.{int(time.time() * 1000) % 1000:03d})"
                         + (f", batch of {batch_size}" if batch_size > 1 else ""))
            except Exception as exc:  # reported to the client, which raises LMTPStreamError
                _log(f"[lpb-serve] request {number} failed: {type(exc).__name__}: {exc}")
                call.error(f"{type(exc).__name__}: {exc}")

    class LpbTokenSession(TokenSession):
        """LMQL's session; a request for another model gets an error (LMQL's client would hang)."""

        def __init__(self, transport, model_args, served: str):
            super().__init__(transport, model_args, static=True, longrunning=True)
            self.served = served

        async def handle(self, cmd, kwargs):
            requested = kwargs.get("model")
            if requested != self.served and cmd in ("GENERATE", "SCORE"):
                message = (f"this LMTP server serves {self.served} (a hash of its GGUF tokenizer), not "
                           f"{requested}: use the same GGUF model file on client and server")
                _log(f"[lpb-serve] refused a request for {requested}")
                await self.transport.send("TOKEN", {"stream_id": kwargs.get("stream_id"), "error": message})
                return
            if requested != self.served:
                kwargs["model"] = self.served  # MODEL_INFO: describe what is served
            await super().handle(cmd, kwargs)

        def close(self):
            self.output_stream.closed = True  # read by the scheduler: stop generating for this client
            super().close()

    return LpbScheduler, LpbTokenSession


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _serve(model_name: str, host: str, port: int, n_threads: Optional[int], server_batch_size: int,
                 seed: Optional[int], log_requests: bool, ready: Optional[Callable[[str, int], Any]]) -> None:
    import aiohttp
    from aiohttp import web
    from lmql.models.lmtp.lmtp_inference_server import LMTPWebSocketTransport
    from lmql.models.lmtp.lmtp_scheduler import Scheduler

    path = resolve_gguf(model_name)
    lca.install_fast_token_set_eq()
    model = LlamaCppLMTPModel(BACKEND_NAME, gguf=str(path), n_threads=n_threads, seed=seed,
                              max_batch_size=server_batch_size)
    identifier = model.model_identifier
    LpbScheduler, LpbTokenSession = _make_server_classes()
    session_args: dict = {}
    scheduler = LpbScheduler(identifier, session_args, model, log_requests=log_requests)
    # TokenSession finds schedulers by (model, pickled model args), as lmtp_serve does
    Scheduler._instances[(identifier, pickle.dumps(session_args).hex())] = scheduler

    async def stream(request):
        # as LMQL's LMTPWebSocketTransport.listen, with our session class
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        transport = LMTPWebSocketTransport(ws)
        session = LpbTokenSession(transport, session_args, identifier)
        try:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    cmd, payload = msg.data.split(" ", 1)
                    kwargs = json.loads(payload)
                    bias = kwargs.pop("logit_bias", None) or {}
                    kwargs["logit_bias"] = {int(k): float(v) for k, v in bias.items()}
                    await session.handle(cmd, kwargs)
                elif msg.type == aiohttp.WSMsgType.ERROR:
                    break
        finally:
            transport._dumper.cancel()
            session.close()
            await ws.close()
        return ws

    app = web.Application()
    app.add_routes([web.get("/", stream)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    try:
        bound = runner.addresses[0][1] if runner.addresses else port
        if not _is_loopback(host):
            _log(f"[lpb-serve] warning: {host}:{bound} is reachable from other machines and LMTP has no "
                 "authentication or encryption; serve on a private network only")
        pinned = f", cores {sorted(os.sched_getaffinity(0))}" if hasattr(os, "sched_getaffinity") else ""
        _log(f"[lpb-serve] {identifier}: {path.name}, llama.cpp with {model.engine.n_threads} thread(s){pinned}, "
             f"server batch size {model.max_batch_size} (requests are decoded one at a time)")
        if ready is not None:
            ready(host, bound)
        else:
            print(f"serving {model_name} on {host}:{bound}", flush=True)
        await asyncio.Event().wait()
    finally:
        scheduler.kill_event.set()
        await runner.cleanup()


def serve(model_name: str = "smollm2", host: str = "127.0.0.1", port: int = 8080, n_threads: Optional[int] = None,
          server_batch_size: int = 1, *, seed: Optional[int] = None, log_requests: bool = True,
          cpus: Optional[Sequence[int]] = None, ready: Optional[Callable[[str, int], Any]] = None) -> None:
    """Serve ``model_name`` (``smollm2`` or a GGUF path) over LMTP on ``host:port`` until killed.

    Prints ``serving <model_name> on <host>:<port>`` once it accepts connections (``port=0``
    picks a free port, shown in that line), or calls ``ready(host, port)`` instead if given.
    One line per request goes to stderr unless ``log_requests=False``.

    ``cpus`` pins the server to these CPU cores (Linux) before the model is loaded; llama.cpp's
    prompt evaluation then uses that many threads instead of every core of the machine, which is
    what several servers on one machine need (unpinned, their multi-threaded prompt evaluations
    stall each other: measured 3-4x slower on 2 cores).
    """
    if cpus:
        os.sched_setaffinity(0, {int(c) for c in cpus})
    try:
        asyncio.run(_serve(model_name, host, int(port), n_threads, int(server_batch_size or 1), seed,
                           log_requests, ready))
    except KeyboardInterrupt:
        pass


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lpb_plugins.lmtp_serving",
        description="Serve a GGUF model over LMQL's LMTP protocol (for lpb breed --endpoint).")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (0: any free port)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1; LMTP has no authentication)")
    parser.add_argument("--model", default="smollm2", help="smollm2 (embedded) or a path to a .gguf file")
    parser.add_argument("--n-threads", type=int, default=None, help="llama.cpp decode threads (default: cores - 1)")
    parser.add_argument("--server-batch-size", type=int, default=1,
                        help="requests the LMQL scheduler groups per round (decoded one after another)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the server's sampler")
    parser.add_argument("--cpus", default=None,
                        help="pin the server to these cores, e.g. 0 or 0,1 (for several servers on one machine)")
    parser.add_argument("--quiet", action="store_true", help="no log line per request")
    args = parser.parse_args(argv)
    try:
        cpus = [int(c) for c in args.cpus.split(",") if c.strip()] if args.cpus else None
        serve(args.model, args.host, args.port, args.n_threads, args.server_batch_size, seed=args.seed,
              log_requests=not args.quiet, cpus=cpus)
    except (FileNotFoundError, RuntimeError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


# --------------------------------------------------------------------------
# client side
# --------------------------------------------------------------------------

# LMQL's runtime_tokenizers registry holds weak references: keep ours alive.
_client_tokenizers: Dict[str, Any] = {}
_client_lock = threading.Lock()


def _client_tokenizer(identifier: str, gguf_path: pathlib.Path):
    from lmql.runtime import tokenizer as lmql_tokenizer
    from lmql.runtime.tokenizer import LMQLTokenizer

    cache_id = identifier.replace("/", "-").replace(":", "__")  # as lmql.runtime.tokenizer.tokenizer()
    with _client_lock:
        tok = _client_tokenizers.get(cache_id)
        if tok is None:
            tok_dir = lca.tokenizer_dir_for(gguf_path)
            tok = LMQLTokenizer(identifier, tokenizer_impl=lca.GGUFTokenizer(tok_dir, identifier))
            _client_tokenizers[cache_id] = tok
        lmql_tokenizer.runtime_tokenizers[cache_id] = tok
    return tok


def _normalise_endpoint(endpoint: str) -> str:
    e = endpoint.strip()
    for scheme in ("ws://", "http://"):
        if e.startswith(scheme):
            e = e[len(scheme):]
    e = e.rstrip("/")
    host, sep, port = e.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"endpoint {endpoint!r} is not host:port")
    return f"{host}:{int(port)}"


def remote_model(endpoint: str, gguf_path: Optional[str | os.PathLike] = None):
    """An ``lmql.LLM`` that runs queries on the LMTP server at ``endpoint`` (``host:port``).

    ``gguf_path`` (None: the embedded SmolLM2) must be the same model file the server serves:
    only its tokenizer is read here (built from the GGUF metadata, cached on disk), the weights
    are not loaded.  Constraints are evaluated on the client and sent as token masks.

    The object carries ``.endpoint`` and ``.tokenizer_dir``.  Each query opens its own websocket
    connection, so one object may be shared by concurrent queries.
    """
    import lmql

    path = resolve_gguf(gguf_path)
    identifier = model_identifier(path)
    _client_tokenizer(identifier, path)
    lca.install_fast_token_set_eq()
    address = _normalise_endpoint(endpoint)
    m = lmql.model(identifier, endpoint=address, chunksize=DEFAULT_CLIENT_CHUNKSIZE)
    m.endpoint = address
    m.tokenizer_dir = lca.tokenizer_dir_for(path)
    return m


if __name__ == "__main__":
    sys.exit(main())
