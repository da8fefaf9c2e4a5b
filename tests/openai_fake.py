"""A fault-injecting OpenAI-compatible server on loopback, for tests that need no model.

It answers ``/v1/completions`` like a real server with a trivial "model" (or forwards to a real one) (the text of ``reply``, or, under a
positive ``logit_bias``, one allowed token chosen by the prompt), and before that plays a scripted list of
faults: ``429`` (with Retry-After), ``500``, ``503``, ``hang`` (no answer), ``close`` (connection dropped),
or any other HTTP status. ``fail_when(payload)`` makes every request it accepts fail with 503.
Every request is recorded with its open and close times, so tests can see overlap.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import zlib

import aiohttp
from aiohttp import web


class FakeOpenAIServer:
    def __init__(self, tokenizer, reply: str = "Be brief and exact.", retry_after: str = "0.05",
                 text_prompts: bool = False, honour_logit_bias: bool = True, upstream: str | None = None):
        self.tokenizer = tokenizer
        self.upstream = upstream  # a real server's /v1 URL: requests that pass the faults are forwarded there
        self.chat_reply = "It is positive, I think.\nMore words follow."  # what /v1/chat/completions says
        self.reply = reply
        self.retry_after = retry_after
        self.text_prompts = text_prompts  # refuse token-id prompts, as llama-cpp-python's server does
        self.honour_logit_bias = honour_logit_bias
        self.faults: list = []  # consumed one per request, before answering
        self.fail_when = None
        self.requests: list[dict] = []  # {"payload", "opened", "closed", "answer"}
        self._anchor = tokenizer.encode("a")
        self._head = tokenizer.decode(self._anchor)
        self._loop = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    # ---- the "model" -------------------------------------------------------------------------------
    def piece(self, token: int) -> str:
        return self.tokenizer.decode(self._anchor + [token])[len(self._head):]

    def complete(self, payload: dict) -> dict:
        prompt = payload["prompt"]
        key = zlib.crc32(repr(prompt).encode())
        bias = payload.get("logit_bias") or {}
        allowed = sorted(int(k) for k, v in bias.items() if v > 0)
        if allowed and self.honour_logit_bias:
            ids, finish = [allowed[key % len(allowed)]], "length"
        else:
            banned = {int(k) for k, v in bias.items() if v < 0}
            ids = [t for t in self.tokenizer.encode(self.reply) if t not in banned][: payload["max_tokens"]]
            finish = "stop" if len(ids) < payload["max_tokens"] else "length"
        pieces = [self.piece(t) for t in ids]
        offsets, at = [], 0
        for p in pieces:
            offsets.append(at)
            at += len(p)
        logprobs = {"tokens": pieces, "token_logprobs": [-0.5] * len(ids), "text_offset": offsets,
                    "top_logprobs": [{p: -0.5} for p in pieces]}
        if payload.get("echo"):
            echoed = prompt if isinstance(prompt, list) else self.tokenizer.encode(prompt)
            logprobs["token_logprobs"] = [None] + [-1.0] * (len(echoed) - 1) + logprobs["token_logprobs"]
            logprobs["tokens"] = [self.piece(t) for t in echoed] + pieces
        return {"object": "text_completion", "model": payload.get("model"),
                "choices": [{"index": 0, "text": "".join(pieces), "finish_reason": finish, "logprobs": logprobs}]}

    # ---- HTTP ---------------------------------------------------------------------------------------
    async def _completions(self, request: web.Request):
        payload = await request.json()
        record = {"payload": payload, "opened": time.monotonic(), "closed": None, "answer": None}
        self.requests.append(record)
        try:
            fault = self.faults.pop(0) if self.faults else None
            if fault is None and self.fail_when is not None and self.fail_when(payload):
                fault = 503
            if fault == "hang":
                await self._stopping.wait()
            if fault == "close":
                request.transport.close()
                record["answer"] = "close"
                return web.Response(status=500)
            if fault is not None:
                record["answer"] = int(fault)
                headers = {"Retry-After": self.retry_after} if int(fault) == 429 else {}
                return web.json_response({"error": {"message": f"scripted {fault}"}}, status=int(fault),
                                         headers=headers)
            if self.text_prompts and not isinstance(payload["prompt"], str):
                record["answer"] = 500
                return web.json_response({"error": {"message": "prompt: Input should be a valid string"}}, status=500)
            if self.upstream:
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:
                    async with session.post(f"{self.upstream}/completions", json=payload) as answer:
                        record["answer"] = answer.status
                        return web.Response(body=await answer.read(), status=answer.status,
                                            content_type="application/json")
            record["answer"] = 200
            await asyncio.sleep(0.01)  # long enough for concurrent requests to overlap
            return web.json_response(self.complete(payload))
        finally:
            record["closed"] = time.monotonic()

    async def _chat(self, request: web.Request):
        """/v1/chat/completions, streamed as server-sent events (how LMQL's chat client asks)."""
        payload = await request.json()
        record = {"payload": payload, "opened": time.monotonic(), "closed": None, "answer": 200}
        self.requests.append(record)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        words = self.chat_reply.split(" ")
        for i, word in enumerate(words):
            delta = {"content": word if i == 0 else " " + word}
            await response.write(f"data: {json.dumps({'choices': [{'index': 0, 'delta': delta, 'finish_reason': None}]})}\n\n".encode())
        final = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        await response.write(f"data: {json.dumps(final)}\n\ndata: [DONE]\n\n".encode())
        record["closed"] = time.monotonic()
        return response

    def _serve(self):
        self._loop = asyncio.new_event_loop()
        self._stopping = asyncio.Event()
        app = web.Application()
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/chat/completions", self._chat)
        runner = web.AppRunner(app)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        self._runner = runner
        self._ready.set()
        self._loop.run_forever()

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def answered(self) -> list:
        return [r["answer"] for r in self.requests]

    def max_in_flight(self) -> int:
        """The most requests open at one moment."""
        events = sorted([(r["opened"], 1) for r in self.requests] + [(r["closed"], -1) for r in self.requests
                                                                      if r["closed"] is not None])
        open_now = most = 0
        for _, change in events:
            open_now += change
            most = max(most, open_now)
        return most

    def stop(self):
        async def shutdown():
            self._stopping.set()  # releases hung requests
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
