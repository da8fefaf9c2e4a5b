"""The LMTP client: an ``lmql.LLM`` that runs queries on an ``lpb serve`` server.

Tokenizes on the client with the same GGUF tokenizer as the server (no weights are loaded here);
LMQL evaluates constraints on the client and sends them as token masks, which the server enforces.
Role tags are rendered with the GGUF's chat template on the client, by its tokenizer
(:func:`lpb_plugins.llama_cpp.chat.role_tokenizer`), so the server receives finished prompts.
"""

from __future__ import annotations

import os
import pathlib
import threading
from typing import Any, Dict, Optional

from lpb_plugins.llama_cpp.chat import chat_format_for, role_tokenizer
from lpb_plugins.llama_cpp.gguf_tokenizer import GGUFTokenizer, model_identifier, tokenizer_dir_for
from lpb_plugins.llama_cpp.lmql_patches import (fail_queries_when_lmtp_server_goes, install_fast_token_set_eq,
                                                keep_role_tags)
from lpb_plugins.llama_cpp.model_files import resolve_gguf
from lpb_plugins.remote_calls import unreachable

__all__ = ["DEFAULT_CLIENT_CHUNKSIZE", "check_reachable", "remote_model"]

# Speculative tokens per request sent by remote_model() clients (LMQL's default is 16).  Cheap
# because the server pre-empts useless speculation (see lmtp_server.py); fewer round trips per
# unbounded variable.
DEFAULT_CLIENT_CHUNKSIZE = 32

# LMQL's runtime_tokenizers registry holds weak references: keep ours alive.
_client_tokenizers: Dict[str, Any] = {}
_client_lock = threading.Lock()


def _client_tokenizer(identifier: str, gguf_path: pathlib.Path):
    from lmql.runtime import tokenizer as lmql_tokenizer

    cache_id = identifier.replace("/", "-").replace(":", "__")  # as lmql.runtime.tokenizer.tokenizer()
    with _client_lock:
        tok = _client_tokenizers.get(cache_id)
        if tok is None:
            tok_dir = tokenizer_dir_for(gguf_path)
            impl = GGUFTokenizer(tok_dir, identifier)
            tok = role_tokenizer(identifier, impl, chat_format_for(impl))
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


def check_reachable(endpoint: str, timeout: float = 5.0) -> None:
    """ConnectionError unless something accepts connections at ``endpoint``: LMQL's LMTP client would print
    its traceback for each query instead, then fail."""
    host, _, port = _normalise_endpoint(endpoint).rpartition(":")
    why = unreachable(host, int(port), timeout)
    if why is not None:
        raise ConnectionError(f"nothing answers at {endpoint} ({why}): is `lpb serve` running there?")


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
    keep_role_tags(identifier, _client_tokenizer(identifier, path))
    install_fast_token_set_eq()
    fail_queries_when_lmtp_server_goes()
    address = _normalise_endpoint(endpoint)
    m = lmql.model(identifier, endpoint=address, chunksize=DEFAULT_CLIENT_CHUNKSIZE)
    m.endpoint = address
    m.tokenizer_dir = tokenizer_dir_for(path)
    return m
