"""``served_model()``: an ``lmql.LLM`` for a model on an OpenAI-compatible server, tokenized here.

The served model's tokenizer is a GGUF (``--tokenizer PATH.gguf``, or the model name when it is a GGUF
path or ``smollm2``, as llama.cpp's servers name their model) or a Hugging Face tokenizer folder.
"""

from __future__ import annotations

import asyncio
import hashlib
import pathlib
from typing import Optional

from lpb_core.retry import RetryPolicy
from lpb_plugins.llama_cpp.gguf_tokenizer import GGUFTokenizer, tokenizer_dir_for
from lpb_plugins.llama_cpp.hf_tokenizer import HFTokenizerFolder, is_tokenizer_folder
from lpb_plugins.llama_cpp.lmql_model import engine_model
from lpb_plugins.llama_cpp.model_files import BACKEND_NAME, EMBEDDED_NAME, check_gguf
from lpb_plugins.llama_cpp.openai_engine import CompletionsEngine
from lpb_plugins.remote_calls import JsonClient

__all__ = ["served_tokenizer", "served_model"]

# Context length assumed for a served model: the dcmodel bounds a request's max_tokens by it.
SERVED_N_CTX = 4096


def _tokenizer_at(value: str) -> Optional[tuple[str, object]]:
    """(identifier part, tokenizer) for ``smollm2``, a .gguf file or a tokenizer folder; None otherwise."""
    if value == EMBEDDED_NAME:
        folder = tokenizer_dir_for(None)
        return folder.name, folder
    path = pathlib.Path(value).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        check_gguf(path)
        folder = tokenizer_dir_for(path)
        return folder.name, folder
    if is_tokenizer_folder(path):
        digest = hashlib.sha256((path / "tokenizer.json").read_bytes()).hexdigest()[:12]
        return f"hf-{path.resolve().name}-{digest}", path
    return None


def served_tokenizer(tokenizer: Optional[str], model_name: str):
    """The served model's tokenizer, from ``tokenizer`` if given, else from the model name; None when neither
    tells. Raises ValueError for a ``tokenizer`` that is none of the above."""
    found = _tokenizer_at(tokenizer) if tokenizer else _tokenizer_at(model_name)
    if found is None:
        if tokenizer and not pathlib.Path(tokenizer).expanduser().exists() and tokenizer != EMBEDDED_NAME:
            raise ValueError(f"{tokenizer}: no such file or folder")
        if tokenizer:
            raise ValueError(f"{tokenizer}: neither a .gguf file, nor a folder with tokenizer.json, nor {EMBEDDED_NAME}")
        return None
    name, where = found
    identifier = f"{BACKEND_NAME}:{name}:served"
    if is_tokenizer_folder(pathlib.Path(where)) and not (pathlib.Path(where) / "lpb_gguf_meta.json").exists():
        return identifier, HFTokenizerFolder(where, identifier)
    return identifier, GGUFTokenizer(where, identifier)


def served_model(api_base: str, model_name: str, identifier: str, tokenizer, policy: RetryPolicy,
                 api_key: Optional[str] = None):
    """An ``lmql.LLM`` whose queries run on the server at ``api_base`` (e.g. ``http://host:8000/v1``).

    Sends two one-token requests first (:meth:`CompletionsEngine.probe`): how the server takes prompts,
    and whether it honours ``logit_bias`` (``.honours_logit_bias`` on the result). The object carries
    ``.engine`` and ``.aclose()`` (closes the run loop's HTTP session).
    """
    client = JsonClient(api_base, policy, headers={"Authorization": f"Bearer {api_key}"} if api_key else None)
    engine = CompletionsEngine(client, model_name, tokenizer, n_ctx=SERVED_N_CTX)

    async def probe():
        try:
            await engine.probe()
        finally:
            await client.aclose()

    asyncio.run(probe())
    m = engine_model(identifier, engine, tokenizer, configuration={"api_base": api_base, "model": model_name})
    m.honours_logit_bias = engine.honours_logit_bias
    m.aclose = client.aclose
    return m
