"""Built-in model backends: LMQL's offline ``random`` model, hosted OpenAI models, and local GGUF files
through llama.cpp (the embedded SmolLM2 by default)."""

from __future__ import annotations

import os

import lmql

from lpb_core.errors import InputError
from lpb_core.hookspecs import hookimpl
from lpb_core.llm import ModelHandle
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
        model, close = shared_inprocess_model("random", seed=settings.seed, tokenizer="gpt2")
        return ModelHandle(description=f"random (seed {settings.seed})", models=(model,), count_tokens=_counter(model),
                           close=close)


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
        return ModelHandle(description=model_name, models=(model,), count_tokens=_counter(model))


@hookimpl
def lpb_register_model_backends(register):
    register(RandomBackend())
    register(OpenAIBackend())
