"""Building a tokenizer directory from a GGUF's tokenizer metadata: the files and what they hold.

The raw-text tokenizer comes from the GGUF's tokenizer family (:mod:`~lpb_plugins.llama_cpp.gguf_spm`,
:mod:`~lpb_plugins.llama_cpp.gguf_bpe`); what llama.cpp does around it (BOS, SentencePiece's space
prefix, special tokens) is written to ``lpb_gguf_meta.json`` for
:class:`~lpb_plugins.llama_cpp.gguf_tokenizer.GGUFTokenizer`.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import sys
from typing import List

from lpb_core.errors import InputError
from lpb_plugins.llama_cpp.gguf_bpe import (DEFAULT_PRE, PRE_TOKENIZERS, build_bpe_tokenizer,
                                            build_gemma4_tokenizer)
from lpb_plugins.llama_cpp.gguf_spm import build_spm_tokenizer
from lpb_plugins.llama_cpp.gguf_vocab import GGUFVocab, read_gguf_vocab

__all__ = ["TOKENIZER_FORMAT", "META_FILE", "builder_digest", "write_tokenizer_files"]

# The version of what is built from a GGUF (files, their layout, the tokenization they give): part
# of the cache key (beside a hash of the code that builds) and of the tokenizer's fingerprint.
TOKENIZER_FORMAT = 2

# What the GGUF says about its tokenizer, beside the tokenizers files in a tokenizer directory.
META_FILE = "lpb_gguf_meta.json"

_builder_digest_cache: List[str] = []


def builder_digest() -> str:
    """A hash of the code that builds a tokenizer directory (these modules and ``tokenizers``), so
    that a cache entry built by other code is never reused, even where the format was not bumped."""
    if not _builder_digest_cache:
        import tokenizers

        h = hashlib.sha256(tokenizers.__version__.encode())
        for builder in (read_gguf_vocab, build_spm_tokenizer, build_bpe_tokenizer, write_tokenizer_files):
            h.update(pathlib.Path(sys.modules[builder.__module__].__file__).read_bytes())
        _builder_digest_cache.append(h.hexdigest())
    return _builder_digest_cache[0]


def _build_tokenizer(vocab: GGUFVocab):
    """The raw-text tokenizer and the settings llama.cpp applies around it, for this GGUF."""
    add_space_prefix = whole_newline_runs = False
    if vocab.model == "llama":
        tok = build_spm_tokenizer(vocab)
        add_bos = vocab.add_bos_token is not False
        add_space_prefix = vocab.add_space_prefix is not False
    elif vocab.model == "gemma4":
        tok = build_gemma4_tokenizer(vocab)
        add_bos = whole_newline_runs = True  # llama.cpp adds BOS to Gemma 4 prompts whatever the GGUF says
    else:
        pre_name = vocab.pre or DEFAULT_PRE
        pre = PRE_TOKENIZERS.get(pre_name)
        if pre is None:
            raise InputError(vocab.source, f"pre-tokenizer {pre_name!r} is not supported "
                                           f"(supported: {', '.join(sorted(PRE_TOKENIZERS))})",
                             field="tokenizer.ggml.pre")
        tok = build_bpe_tokenizer(vocab, pre)
        add_bos = pre.add_bos if vocab.add_bos_token is None else vocab.add_bos_token
    return tok, {"add_bos_token": add_bos and vocab.bos_token_id is not None,
                 "add_space_prefix": add_space_prefix, "whole_newline_runs": whole_newline_runs}


def write_tokenizer_files(vocab: GGUFVocab, out_dir: pathlib.Path) -> None:
    """tokenizer.json, tokenizer_config.json, special_tokens_map.json and lpb_gguf_meta.json in ``out_dir``."""
    # tokenizer.json tokenizes raw text only: GGUFTokenizer cuts the special tokens out first, in
    # llama.cpp's order, and adds SentencePiece's space prefix where llama.cpp does.
    tok, settings = _build_tokenizer(vocab)
    tok.save(str(out_dir / "tokenizer.json"))
    tokens = vocab.tokens

    def name(idx):
        return tokens[idx] if idx is not None else None

    special_map = {k: v for k, v in {
        "bos_token": name(vocab.bos_token_id),
        "eos_token": name(vocab.eos_token_id),
        "unk_token": name(vocab.unk_token_id),
        "pad_token": name(vocab.pad_token_id),
    }.items() if v is not None}
    # What the GGUF says about BOS/EOS, in the files other tools read beside a tokenizer.json.
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": settings["add_bos_token"],
        "add_eos_token": bool(vocab.add_eos_token),
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(vocab.context_length or 2048),
        **special_map,
    }
    if vocab.chat_template:
        config["chat_template"] = vocab.chat_template
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2, ensure_ascii=False))

    meta = {
        "format": TOKENIZER_FORMAT,
        "source": vocab.source,
        "name": vocab.name,
        "model": vocab.model,
        "pre": vocab.pre,
        "bos_token_id": vocab.bos_token_id,
        "eos_token_id": vocab.eos_token_id,
        **settings,
        "special_token_ids": vocab.special_token_ids(),
        "chat_template": vocab.chat_template,
        "vocab_size": len(tokens),
    }
    (out_dir / META_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False))
