"""The LMTP server: LMQL's own websocket server pieces, serving :class:`LlamaCppLMTPModel`.

:func:`serve` (blocking; ``lpb serve`` runs it) uses LMQL's ``LMTPWebSocketTransport``,
``TokenSession`` and ``Scheduler`` with four small changes made by subclassing: a client asking
for a different model (another tokenizer) gets an error instead of a hang, one line per request is
logged to stderr, a speculative chunk stops early when its client has gone or has moved on, and up
to ``server_batch_size`` requests are served at once, which the engine decodes together (several
clients' sequences per llama.cpp call; each sequence keeps its own KV cache).

When a generation stops before its max_tokens (finish_reason "length"; the client asks again if
it needs more tokens): LMTP has no "cancel" message, and a request streams a speculative chunk of
tokens, all sampled under the mask of its first token, so the rest of a chunk is often useless:

* at once when the client's connection is closed (its query is over);
* after ``MIN_TOKENS_BEFORE_PREEMPT`` tokens when a waiting request continues the same sequence
  (the client has moved on, e.g. its constraint ended the variable).

A waiting request for another sequence does not interrupt: it is served beside the running ones as
soon as one of the ``server_batch_size`` places is free.

LMTP has neither authentication nor encryption: bind servers to loopback (the default) or to a
private network only.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import json
import os
import pickle
import sys
import threading
import time
from typing import Any, Callable, Optional, Sequence

from lpb_plugins.llama_cpp.engine import DEFAULT_SEQUENCES, MIN_TOKENS_BEFORE_PREEMPT
from lpb_plugins.llama_cpp.lmql_patches import install_fast_token_set_eq
from lpb_plugins.llama_cpp.lmtp_backend import LlamaCppLMTPModel, register_backend
from lpb_plugins.llama_cpp.model_files import BACKEND_NAME, EMBEDDED_NAME, resolve_gguf

__all__ = ["serve"]

_LOOPBACK_NAMES = {"localhost", "ip6-localhost"}


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _make_server_classes():
    from queue import Empty as QueueEmpty

    from lmql.models.lmtp.lmtp_scheduler import GenerateCall, Scheduler, TokenSession

    class LpbScheduler(Scheduler):
        """LMQL's scheduler with our model object, pre-emption and a log line per request.

        Up to ``model.max_batch_size`` (= ``--server-batch-size``) requests are served at once, each on
        its own thread taking the next one from the queue as soon as it is done; the engine decodes the
        requests in flight together (several clients' sequences per llama.cpp call).
        """

        def __init__(self, identifier, model_args, model: LlamaCppLMTPModel, log_requests=True):
            self._model = model
            self._log_requests = log_requests
            self._numbers = itertools.count(1)
            self._in_flight = 0
            self._in_flight_lock = threading.Lock()
            super().__init__(identifier, model_args)  # starts the worker thread

        def worker(self):
            self._model_info = self._model.model_info()
            servers = [threading.Thread(target=self._serve_queue, name=f"lpb-serve-{k}", daemon=True)
                       for k in range(self._model.max_batch_size)]
            for server in servers:
                server.start()
            for server in servers:
                server.join()

        def _serve_queue(self):
            while not self.kill_event.is_set():
                try:
                    call = self.queue.get(timeout=0.5)  # a blocking wait; the timeout only checks kill_event
                except QueueEmpty:
                    continue
                with self._in_flight_lock:
                    self._in_flight += 1
                    in_flight = self._in_flight
                try:
                    self._serve_call(self._model, call, in_flight)
                finally:
                    with self._in_flight_lock:
                        self._in_flight -= 1

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

        def _serve_call(self, model: LlamaCppLMTPModel, call: GenerateCall, in_flight: int):
            started = time.perf_counter()
            number = next(self._numbers)
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
                         + (f", {in_flight} in flight" if in_flight > 1 else ""))
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
    install_fast_token_set_eq()
    register_backend()
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
             f"up to {model.max_batch_size} request(s) at once, decoded together")
        if ready is not None:
            ready(host, bound)
        else:
            print(f"serving {model_name} on {host}:{bound}", flush=True)
        await asyncio.Event().wait()
    finally:
        scheduler.kill_event.set()
        await runner.cleanup()


def serve(model_name: str = EMBEDDED_NAME, host: str = "127.0.0.1", port: int = 8080, n_threads: Optional[int] = None,
          server_batch_size: int = DEFAULT_SEQUENCES, *, seed: Optional[int] = None, log_requests: bool = True,
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
