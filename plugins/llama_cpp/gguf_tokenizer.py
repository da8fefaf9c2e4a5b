"""The GGUF's own tokenizer, for LMQL, without transformers or the Hugging Face Hub.

LMQL's ``llama.cpp:`` backend needs a Hugging Face tokenizer from the Hub (``huggyllama/llama-7b``
by default) plus ``transformers``.  Here the tokenizer is rebuilt from the GGUF's vocabulary and
merges with ``tokenizers`` only, cached on disk (:func:`tokenizer_dir_for`), and wrapped in an LMQL
tokenizer implementation (:class:`GGUFTokenizer`), so nothing is downloaded.

:func:`model_identifier` names a model after a hash of its tokenizer: the name LMTP client and
server share, so that a client and a server whose GGUF tokenizers differ refuse to work together
(the GGUF file may live at different paths on different machines).
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import re
import shutil
import tempfile
import threading
from typing import Any, Dict, List, Optional

from lpb_plugins.llama_cpp.model_files import BACKEND_NAME, embedded_model_path, resolve_gguf

__all__ = ["tokenizer_dir_for", "read_meta", "GGUFTokenizer", "tokenizer_fingerprint", "model_identifier"]

# Bump when the layout of the generated tokenizer directory changes, so
# stale cache entries are not reused.
_TOKENIZER_FORMAT = 1

# What the GGUF says about its tokenizer, beside the tokenizers files in a tokenizer directory.
_META_FILE = "lpb_gguf_meta.json"


def _cache_root() -> pathlib.Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "lpb" / "tokenizers"


def _file_key(path: pathlib.Path) -> str:
    st = path.stat()
    h = hashlib.sha256(f"{st.st_size}:{st.st_mtime_ns}:{_TOKENIZER_FORMAT}".encode()).hexdigest()
    return h[:12]


def _tokenizer_dir_name(path: pathlib.Path) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem)
    return f"{stem}-{_file_key(path)}"


# llama.cpp pre-tokenizer types (tokenizer.ggml.pre) whose split rules are
# "every digit alone, then the GPT-2 regex" (llama-vocab.cpp), which is what
# HF's Digits(individual_digits) + ByteLevel(use_regex) does.
_DIGIT_SPLIT_PRE = {"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva"}
_GPT2_PRE = {"gpt-2", "gpt2"}


def _read_gguf_tokenizer(path: pathlib.Path) -> Dict[str, Any]:
    from gguf import GGUFReader

    reader = GGUFReader(str(path))

    def get(key, default=None):
        field = reader.fields.get(key)
        if field is None:
            return default
        return field.contents()

    model = get("tokenizer.ggml.model")
    if model != "gpt2":
        raise NotImplementedError(
            f"{path.name}: tokenizer model {model!r} is not supported (only byte-level BPE 'gpt2')")
    pre = get("tokenizer.ggml.pre", "default")
    if pre not in _DIGIT_SPLIT_PRE | _GPT2_PRE:
        raise NotImplementedError(f"{path.name}: pre-tokenizer {pre!r} is not supported")

    return {
        "name": get("general.name", path.stem),
        "tokens": list(get("tokenizer.ggml.tokens")),
        "token_types": [int(t) for t in get("tokenizer.ggml.token_type")],
        "merges": list(get("tokenizer.ggml.merges")),
        "pre": pre,
        "bos_token_id": get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": get("tokenizer.ggml.eos_token_id"),
        "unk_token_id": get("tokenizer.ggml.unknown_token_id"),
        "pad_token_id": get("tokenizer.ggml.padding_token_id"),
        "add_bos_token": bool(get("tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": bool(get("tokenizer.ggml.add_eos_token", False)),
        "chat_template": get("tokenizer.chat_template"),
        "context_length": get(f"{get('general.architecture', 'llama')}.context_length"),
    }


def _build_tokenizer_files(info: Dict[str, Any], out_dir: pathlib.Path, source: pathlib.Path) -> None:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    tokens = info["tokens"]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    merges = [tuple(m.split(" ", 1)) for m in info["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if info["pre"] in _DIGIT_SPLIT_PRE:
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)

    # GGUF token types: 3 = control, 4 = user defined.  Control tokens are the
    # chat markers (<|im_start|> ...); registering them lets prompt text that
    # contains them map to their ids, like llama.cpp's tokenize(special=True).
    special = [AddedToken(tokens[i], special=True, normalized=False)
               for i, t in enumerate(info["token_types"]) if t == 3]
    user = [AddedToken(tokens[i], special=False, normalized=False)
            for i, t in enumerate(info["token_types"]) if t == 4]
    if special:
        tok.add_special_tokens(special)
    if user:
        tok.add_tokens(user)
    tok.save(str(out_dir / "tokenizer.json"))

    def name(idx):
        return tokens[idx] if isinstance(idx, int) and 0 <= idx < len(tokens) else None

    special_map = {k: v for k, v in {
        "bos_token": name(info["bos_token_id"]),
        "eos_token": name(info["eos_token_id"]),
        "unk_token": name(info["unk_token_id"]),
        "pad_token": name(info["pad_token_id"]),
    }.items() if v is not None}
    # Loadable offline by transformers' AutoTokenizer too (PreTrainedTokenizerFast
    # reads tokenizer.json directly), should transformers ever be installed.
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": info["add_bos_token"],
        "add_eos_token": info["add_eos_token"],
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(info["context_length"] or 2048),
        **special_map,
    }
    if info["chat_template"]:
        config["chat_template"] = info["chat_template"]
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2, ensure_ascii=False))

    meta = {
        "format": _TOKENIZER_FORMAT,
        "source": str(source),
        "name": info["name"],
        "pre": info["pre"],
        "bos_token_id": info["bos_token_id"],
        "eos_token_id": info["eos_token_id"],
        "add_bos_token": info["add_bos_token"],
        "control_token_ids": [i for i, t in enumerate(info["token_types"]) if t == 3],
        "chat_template": info["chat_template"],
        "vocab_size": len(tokens),
    }
    (out_dir / _META_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False))


_tokenizer_dir_lock = threading.Lock()


def tokenizer_dir_for(gguf_path: os.PathLike | str | None = None) -> pathlib.Path:
    """Directory with a ``tokenizers`` tokenizer rebuilt from the GGUF metadata.

    Built once into ``$XDG_CACHE_HOME/lpb/tokenizers/<stem>-<hash>`` (or
    ``~/.cache/...``); the hash covers file size, mtime and the format
    version.  The directory is assembled in a temporary sibling and renamed
    into place, so concurrent builders never expose a half-written folder.
    Contents: tokenizer.json, tokenizer_config.json, special_tokens_map.json
    (enough for ``transformers.AutoTokenizer`` offline) and lpb_gguf_meta.json.
    """
    path = pathlib.Path(gguf_path) if gguf_path is not None else embedded_model_path()
    path = path.resolve()
    root = _cache_root()
    final = root / _tokenizer_dir_name(path)
    if (final / _META_FILE).exists():
        return final
    with _tokenizer_dir_lock:
        if (final / _META_FILE).exists():
            return final
        root.mkdir(parents=True, exist_ok=True)
        info = _read_gguf_tokenizer(path)
        tmp = pathlib.Path(tempfile.mkdtemp(prefix=".build-", dir=root))
        try:
            _build_tokenizer_files(info, tmp, path)
            try:
                os.rename(tmp, final)
            except OSError:
                # another process won the race; its directory is equivalent
                if not (final / _META_FILE).exists():
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return final


def read_meta(tokenizer_dir: pathlib.Path) -> Dict[str, Any]:
    """What the GGUF says about its tokenizer (ids of special tokens, add_bos_token, chat template ...)."""
    return json.loads((tokenizer_dir / _META_FILE).read_text())


class GGUFTokenizer:
    """LMQL tokenizer implementation backed by ``tokenizers`` (no transformers).

    Mirrors the interface of ``lmql.runtime.tokenizers.hf_tokenizer.
    TransformersTokenizer`` that LMQL 0.7.3 relies on: token "bytes" are the
    decimal ids (as LMQL's HF backend does), vocabulary strings are the
    byte-level BPE pieces ('Ġ' for space) the VocabularyMatcher expects.
    """

    def __init__(self, tokenizer_dir: os.PathLike | str, model_identifier: Optional[str] = None):
        self.tokenizer_dir = pathlib.Path(tokenizer_dir)
        self.model_identifier = model_identifier or self.tokenizer_dir.name
        self._load()

    def _load(self):
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(self.tokenizer_dir / "tokenizer.json"))
        meta = read_meta(self.tokenizer_dir)
        self.meta = meta
        self._vocab = self._tok.get_vocab(with_added_tokens=True)
        self._eos = meta["eos_token_id"]
        # LMQL's LMTP layer prepends bos_token_id to every prompt when it is
        # not None; the GGUF tells whether the model wants that.
        self._bos = meta["bos_token_id"] if meta.get("add_bos_token") else None

    # pickled inside LMQL's VocabularyMatcher disk cache: store the path only
    def __getstate__(self):
        return {"tokenizer_dir": str(self.tokenizer_dir), "model_identifier": self.model_identifier}

    def __setstate__(self, state):
        self.tokenizer_dir = pathlib.Path(state["tokenizer_dir"])
        self.model_identifier = state["model_identifier"]
        self._load()

    # --- LMQL tokenizer interface ---
    def tokenize(self, text, asbytes=False, add_special_tokens=False):
        enc = self._tok.encode(text, add_special_tokens=False)
        if asbytes:
            return [str(i).encode() for i in enc.ids]
        return enc.tokens

    def decode_tokens_bytes(self, ids):
        return [str(int(i)).encode() for i in ids]

    def convert_token_bytes_to_ids(self, tokens):
        return [int(t) for t in tokens]

    def decode(self, ids, clean_up_tokenization_spaces=False):
        # keep control tokens (<|im_start|> ...) so decoded text round-trips the prompt
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

    def convert_bytes_to_string(self, token_bytes):
        return self.decode(self.convert_token_bytes_to_ids(token_bytes))

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": self._tok.encode(text, add_special_tokens=False).ids}

    def encode(self, text) -> List[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def convert_tokens_to_string(self, tokens):
        return self._tok.decoder.decode(list(tokens))

    @property
    def vocab(self):
        return self._vocab

    def get_vocab(self):
        return self._vocab

    @property
    def vocab_size(self):
        return self._tok.get_vocab_size(with_added_tokens=True)

    @property
    def eos_token_id(self):
        return self._eos

    @property
    def bos_token_id(self):
        return self._bos

    @property
    def name(self):
        return "lpb-gguf-" + self.model_identifier

    def backend(self):
        return "tokenizers (from GGUF metadata)"


_fingerprints: Dict[str, str] = {}


def tokenizer_fingerprint(tokenizer_dir: pathlib.Path) -> str:
    """A hash of the tokenizer in ``tokenizer_dir`` (its vocabulary, merges and BOS/EOS use)."""
    key = str(tokenizer_dir)
    if key not in _fingerprints:
        meta = read_meta(tokenizer_dir)
        h = hashlib.sha256((tokenizer_dir / "tokenizer.json").read_bytes())
        h.update(json.dumps([meta.get("bos_token_id"), meta.get("eos_token_id"),
                             meta.get("add_bos_token")]).encode())
        _fingerprints[key] = h.hexdigest()[:16]
    return _fingerprints[key]


def model_identifier(gguf_path: Optional[str | os.PathLike] = None) -> str:
    """``lpb-llama.cpp:<fingerprint of the GGUF tokenizer>``: the model name client and server share."""
    return f"{BACKEND_NAME}:{tokenizer_fingerprint(tokenizer_dir_for(resolve_gguf(gguf_path)))}"
