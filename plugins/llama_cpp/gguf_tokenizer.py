"""The GGUF's own tokenizer, for LMQL, without transformers or the Hugging Face Hub.

LMQL's ``llama.cpp:`` backend needs a Hugging Face tokenizer from the Hub (``huggyllama/llama-7b``
by default) plus ``transformers``.  Here the tokenizer is rebuilt from the GGUF's metadata with
``tokenizers`` only (:mod:`~lpb_plugins.llama_cpp.gguf_build`: SentencePiece GGUFs in
:mod:`~lpb_plugins.llama_cpp.gguf_spm`, byte-level BPE and Gemma 4 ones in
:mod:`~lpb_plugins.llama_cpp.gguf_bpe`), cached on disk (:func:`tokenizer_dir_for`), and
wrapped in an LMQL tokenizer implementation (:class:`GGUFTokenizer`), so nothing is downloaded.

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
from typing import Any, Dict, List, Optional, Union

from lpb_plugins.llama_cpp.gguf_build import (META_FILE, TOKENIZER_FORMAT, builder_digest,
                                              write_tokenizer_files)
from lpb_plugins.llama_cpp.gguf_vocab import read_gguf_vocab
from lpb_plugins.llama_cpp.model_files import BACKEND_NAME, embedded_model_path, resolve_gguf

__all__ = ["tokenizer_dir_for", "read_meta", "GGUFTokenizer", "tokenizer_fingerprint", "model_identifier"]

# The metadata that decides which ids a text gets (hashed into the tokenizer's fingerprint).
_TOKENIZATION_KEYS = ("format", "model", "pre", "bos_token_id", "eos_token_id", "add_bos_token",
                      "add_space_prefix", "whole_newline_runs", "special_token_ids")

# Runs of newlines (Gemma 4 takes a run whole where the vocabulary has it).
_NEWLINE_RUNS = re.compile(r"(\n+)")


def _cache_root() -> pathlib.Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "lpb" / "tokenizers"


def _file_key(path: pathlib.Path) -> str:
    # The GGUF (its size and modification time stand for its content), the format and the code
    # that builds from it are all a built tokenizer depends on.
    st = path.stat()
    key = f"{st.st_size}:{st.st_mtime_ns}:{TOKENIZER_FORMAT}:{builder_digest()}"
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def _tokenizer_dir_name(path: pathlib.Path) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem)
    return f"{stem}-{_file_key(path)}"


_tokenizer_dir_lock = threading.Lock()


def tokenizer_dir_for(gguf_path: os.PathLike | str | None = None) -> pathlib.Path:
    """Directory with a ``tokenizers`` tokenizer rebuilt from the GGUF metadata.

    Built once into ``$XDG_CACHE_HOME/lpb/tokenizers/<stem>-<hash>`` (or
    ``~/.cache/...``); the hash covers file size, mtime, the format version
    and the code that builds it.  The directory is assembled in a temporary sibling and renamed
    into place, so concurrent builders never expose a half-written folder.
    Contents: tokenizer.json, tokenizer_config.json, special_tokens_map.json
    and lpb_gguf_meta.json.  A GGUF whose tokenizer cannot be rebuilt is an
    InputError naming the file and the metadata key.
    """
    path = pathlib.Path(gguf_path) if gguf_path is not None else embedded_model_path()
    path = path.resolve()
    root = _cache_root()
    final = root / _tokenizer_dir_name(path)
    if (final / META_FILE).exists():
        return final
    with _tokenizer_dir_lock:
        if (final / META_FILE).exists():
            return final
        vocab = read_gguf_vocab(path)
        root.mkdir(parents=True, exist_ok=True)
        tmp = pathlib.Path(tempfile.mkdtemp(prefix=".build-", dir=root))
        try:
            write_tokenizer_files(vocab, tmp)
            try:
                os.rename(tmp, final)
            except OSError:
                # another process won the race; its directory is equivalent
                if not (final / META_FILE).exists():
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return final


def read_meta(tokenizer_dir: pathlib.Path) -> Dict[str, Any]:
    """What the GGUF says about its tokenizer (ids of special tokens, add_bos_token, chat template ...)."""
    return json.loads((tokenizer_dir / META_FILE).read_text())


class GGUFTokenizer:
    """LMQL tokenizer implementation backed by ``tokenizers`` (no transformers).

    Mirrors the interface of ``lmql.runtime.tokenizers.hf_tokenizer.TransformersTokenizer`` that
    LMQL 0.7.3 relies on: token "bytes" are the decimal ids (as LMQL's HF backend does),
    vocabulary strings are the GGUF's pieces, the ones LMQL's VocabularyMatcher expects ('Ġ' for a
    space in byte-level BPE, '▁' in SentencePiece).

    Special tokens (control, user-defined, unknown) written in the text become their ids, found
    as llama.cpp finds them (longest first), as ``Llama.tokenize(..., special=True)`` does.

    Two ways to tokenize, which differ only for SentencePiece GGUFs with a space prefix:

    * :meth:`encode` tokenizes a whole text as llama.cpp does: a space is put before the text and
      before the text after each special token;
    * the LMQL interface (``__call__``, :meth:`tokenize`) tokenizes a piece that continues a
      prompt, as LMQL tokenizes prompts (the text around each variable separately): no space at
      the start, one after each special token.  A prompt that starts with the model's BOS written
      as text (``<s>``, as chat templates do) thus gets llama.cpp's ids.  :meth:`decode` is its
      inverse: ``decode(tok(text)["input_ids"]) == text``.
    """

    def __init__(self, tokenizer_dir: os.PathLike | str, model_identifier: Optional[str] = None):
        self.tokenizer_dir = pathlib.Path(tokenizer_dir)
        self.model_identifier = model_identifier or self.tokenizer_dir.name
        self._load()

    def _load(self):
        from tokenizers import Tokenizer

        self._setup(Tokenizer.from_file(str(self.tokenizer_dir / "tokenizer.json")), read_meta(self.tokenizer_dir))

    def _setup(self, tok, meta: Dict[str, Any]) -> None:
        """Ready to tokenize with ``tok`` (a ``tokenizers.Tokenizer``) as ``meta`` says (lpb_gguf_meta.json's keys)."""
        self._tok = tok
        self.meta = meta
        self._vocab = self._tok.get_vocab(with_added_tokens=True)
        self._eos = meta["eos_token_id"]
        # LMQL prepends bos_token_id to every prompt when it is not None; the GGUF (or llama.cpp's
        # default for its tokenizer family) tells whether the model wants that.
        self._bos = meta["bos_token_id"] if meta.get("add_bos_token") else None
        self._space_prefix = bool(meta.get("add_space_prefix"))
        self._whole_newline_runs = bool(meta.get("whole_newline_runs"))
        self._special = [(self._tok.id_to_token(i), i) for i in meta["special_token_ids"]]
        self._special_by_id = {i: text for text, i in self._special}
        self._special_texts = {text for text, _ in self._special}
        self._special_lengths = sorted({len(text) for text, _ in self._special}, reverse=True)
        # at each position, the longest special token starting there (a zero-width match, so that
        # overlapping occurrences are all seen)
        alternatives = sorted((text for text, _ in self._special), key=len, reverse=True)
        self._find_special = re.compile("(?=(" + "|".join(map(re.escape, alternatives)) + "))") \
            if alternatives else None

    # pickled inside LMQL's VocabularyMatcher disk cache: store the path only
    def __getstate__(self):
        return {"tokenizer_dir": str(self.tokenizer_dir), "model_identifier": self.model_identifier}

    def __setstate__(self, state):
        self.tokenizer_dir = pathlib.Path(state["tokenizer_dir"])
        self.model_identifier = state["model_identifier"]
        self._load()

    # --- tokenization as llama.cpp ---
    def _specials_in(self, text: str) -> set:
        """Every special token that occurs in ``text``."""
        present = set()
        for match in self._find_special.finditer(text):
            longest, start = match.group(1), match.start()
            present.add(longest)
            present.update(text[start:start + n] for n in self._special_lengths
                           if n < len(longest) and text[start:start + n] in self._special_texts)
        return present

    def _fragments(self, text: str) -> List[Union[str, int]]:
        """The text cut at special tokens, as llama.cpp's tokenizer_st_partition: each special token
        in turn (longest first) is cut out of the text pieces left."""
        present = self._specials_in(text) if self._find_special is not None and text else ()
        if not present:
            return [text] if text else []
        fragments: List[Union[str, int]] = [text]
        for special, token_id in self._special:
            if special not in present:
                continue
            cut: List[Union[str, int]] = []
            for fragment in fragments:
                if isinstance(fragment, int):
                    cut.append(fragment)
                    continue
                for k, part in enumerate(fragment.split(special)):
                    if k:
                        cut.append(token_id)
                    if part:
                        cut.append(part)
            fragments = cut
        return fragments

    def _ids(self, text: str, space_at_start: bool) -> List[int]:
        ids: List[int] = []
        prefix_next = space_at_start  # llama.cpp: before the text, and after each special token
        for fragment in self._fragments(text):
            if isinstance(fragment, int):
                ids.append(fragment)
                prefix_next = True
                continue
            if self._space_prefix and prefix_next:
                fragment = " " + fragment
            ids.extend(self._raw_ids(fragment))
            prefix_next = False
        return ids

    def _raw_ids(self, text: str) -> List[int]:
        """The ids of text without special tokens."""
        if not self._whole_newline_runs:
            return self._tok.encode(text, add_special_tokens=False).ids
        ids: List[int] = []
        for piece in _NEWLINE_RUNS.split(text):
            whole = self._vocab.get(piece) if piece.startswith("\n") else None
            if whole is not None:
                ids.append(whole)
            elif piece:
                ids.extend(self._tok.encode(piece, add_special_tokens=False).ids)
        return ids

    def encode(self, text: str) -> List[int]:
        """The ids llama.cpp gives the whole ``text``: ``Llama.tokenize(text, add_bos=False, special=True)``."""
        return self._ids(text, space_at_start=True)

    # --- LMQL tokenizer interface ---
    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": self._ids(text, space_at_start=False)}

    def tokenize(self, text, asbytes=False, add_special_tokens=False):
        ids = self._ids(text, space_at_start=False)
        if asbytes:
            return self.decode_tokens_bytes(ids)
        return [self._tok.id_to_token(i) for i in ids]

    def decode_tokens_bytes(self, ids):
        return [str(int(i)).encode() for i in ids]

    def convert_token_bytes_to_ids(self, tokens):
        return [int(t) for t in tokens]

    def decode(self, ids, clean_up_tokenization_spaces=False):
        """The text of ``ids``, special tokens written out (so that decoded text re-tokenizes to the
        same ids): the inverse of ``__call__``."""
        parts: List[str] = []
        run: List[int] = []
        after_special = False

        def flush():
            if run:
                text = self._tok.decode(run, skip_special_tokens=False)
                if self._space_prefix and after_special and text.startswith(" "):
                    text = text[1:]  # the space the special token before it brought
                parts.append(text)
                run.clear()

        for token_id in (int(i) for i in ids):
            special = self._special_by_id.get(token_id)
            if special is None:
                run.append(token_id)
                continue
            flush()
            parts.append(special)
            after_special = True
        flush()
        return "".join(parts)

    def convert_bytes_to_string(self, token_bytes):
        return self.decode(self.convert_token_bytes_to_ids(token_bytes))

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
    """A hash of the tokenizer in ``tokenizer_dir``: its vocabulary, merges and everything else
    that decides the ids of a text (BOS use, space prefix, special tokens, format)."""
    key = str(tokenizer_dir)
    if key not in _fingerprints:
        meta = read_meta(tokenizer_dir)
        h = hashlib.sha256((tokenizer_dir / "tokenizer.json").read_bytes())
        h.update(json.dumps([meta.get(k) for k in _TOKENIZATION_KEYS]).encode())
        _fingerprints[key] = h.hexdigest()[:16]
    return _fingerprints[key]


def model_identifier(gguf_path: Optional[str | os.PathLike] = None) -> str:
    """``lpb-llama.cpp:<fingerprint of the GGUF tokenizer>``: the model name client and server share."""
    return f"{BACKEND_NAME}:{tokenizer_fingerprint(tokenizer_dir_for(resolve_gguf(gguf_path)))}"
