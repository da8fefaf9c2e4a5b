"""JSON over HTTP to model servers, retried by ``lpb_core.retry``: which failures are worth another try.

Retried: timeouts, refused or dropped connections, truncated bodies, HTTP 429 (after the server's
Retry-After, in seconds or as an HTTP date) and 5xx. Not retried: other 4xx answers (a wrong model name,
a bad request, a missing key), which would fail the same way again.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import socket
import time
from typing import Callable

import aiohttp

from lpb_core.errors import ModelError
from lpb_core.retry import RetryPolicy, TransientFailure, call_with_retries

__all__ = ["RequestRefused", "JsonClient", "retry_after_seconds"]


class RequestRefused(ModelError):
    """The server answered with an error that another try would not change."""

    def __init__(self, message: str, status: int, body: str):
        super().__init__(message)
        self.status, self.body = status, body


def unreachable(host: str, port: int, timeout: float = 5.0) -> str | None:
    """Why nothing accepts connections at ``host:port`` (refused, no such host...), or None if something does:
    a server that is not there is said before a run, not after minutes of a client's retries."""
    try:
        socket.create_connection((host, port), timeout).close()
    except OSError as exc:
        return str(exc.strerror or exc)
    return None


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds a Retry-After header asks for (delta-seconds or an HTTP date), None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _excerpt(body: str, width: int = 200) -> str:
    text = " ".join(body.split())
    try:  # OpenAI-style {"error": {"message": ...}}, or FastAPI's {"detail": ...} (llama.cpp's Python server)
        parsed = json.loads(body)
        error = parsed.get("error", parsed.get("detail"))
        if error is not None:
            text = " ".join(str(error.get("message", error) if isinstance(error, dict) else error).split())
    except (ValueError, AttributeError):
        pass
    return text if len(text) <= width else text[: width - 1] + "…"


class JsonClient:
    """POSTs JSON to ``base_url`` and returns the JSON answer, retrying transient failures.

    One aiohttp session per event loop (sessions cannot move between loops); ``aclose`` closes the
    current loop's. ``refused(status, body)`` may declare an error answer final although its status
    would be retried (some servers answer a request they cannot read with 500).
    """

    def __init__(self, base_url: str, policy: RetryPolicy, headers: dict | None = None):
        self.base_url = base_url.rstrip("/")
        self.policy = policy
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        self._sessions: dict = {}

    def _session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        session = self._sessions.get(loop)
        if session is None or session.closed:
            # the retry policy's timeout bounds each request; aiohttp's own default (5 min) must not cut in first
            session = self._sessions[loop] = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        return session

    async def post(self, path: str, payload: dict, what: str,
                   refused: Callable[[int, str], bool] = lambda status, body: False) -> dict:
        url = f"{self.base_url}/{path.lstrip('/')}"

        async def attempt() -> dict:
            try:
                async with self._session().post(url, json=payload, headers=self.headers) as response:
                    body = await response.text()
                    status = response.status
                    retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
                raise TransientFailure(f"{type(exc).__name__} from {url}: {exc}") from None
            if status >= 400:
                message = f"HTTP {status} from {url}: {_excerpt(body)}"
                if (status == 429 or status >= 500) and not refused(status, body):
                    raise TransientFailure(message, retry_after)
                raise RequestRefused(message, status, body)
            try:
                return json.loads(body)
            except ValueError:
                raise TransientFailure(f"unreadable answer from {url}: {_excerpt(body)}") from None

        return await call_with_retries(attempt, self.policy, what)

    async def aclose(self) -> None:
        session = self._sessions.pop(asyncio.get_running_loop(), None)
        if session is not None:
            await session.close()
