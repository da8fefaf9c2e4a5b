"""A Hugging Face tokenizer folder (``tokenizer.json`` + ``tokenizer_config.json``) as an LMQL tokenizer.

For a model served by vLLM, TGI or SGLang, whose weights are a Hugging Face checkpoint: point
``--tokenizer`` at the checkpoint's folder (or a copy of its tokenizer files). Read with ``tokenizers``
alone, like the GGUF tokenizer, and offering the same ``meta`` (BOS/EOS ids, whether BOS is added, the
chat template), so everything downstream treats both alike.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Dict

from lpb_plugins.llama_cpp.gguf_tokenizer import GGUFTokenizer

__all__ = ["is_tokenizer_folder", "HFTokenizerFolder"]


def is_tokenizer_folder(path: pathlib.Path) -> bool:
    return path.is_dir() and (path / "tokenizer.json").is_file()


def _token_text(value) -> str | None:
    """tokenizer_config.json writes special tokens as a string or as {"content": ...}."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _chat_template(folder: pathlib.Path, config: Dict[str, Any]) -> str | None:
    template = config.get("chat_template")
    if isinstance(template, list):  # named templates: the default one
        template = next((t.get("template") for t in template if t.get("name") == "default"), None)
    jinja = folder / "chat_template.jinja"  # where newer checkpoints keep it
    if template is None and jinja.is_file():
        template = jinja.read_text()
    return template


class HFTokenizerFolder(GGUFTokenizer):
    """``GGUFTokenizer``'s interface over a Hugging Face tokenizer folder."""

    def _load(self):
        from tokenizers import Tokenizer

        folder = self.tokenizer_dir
        tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        config_file = folder / "tokenizer_config.json"
        config = json.loads(config_file.read_text()) if config_file.is_file() else {}
        vocab = tok.get_vocab(with_added_tokens=True)
        bos = vocab.get(_token_text(config.get("bos_token")))
        eos = vocab.get(_token_text(config.get("eos_token")))
        add_bos = config.get("add_bos_token")
        if add_bos is None:  # Llama 3 style: the post-processor adds BOS, the config does not say
            add_bos = bos is not None and tok.encode("a", add_special_tokens=True).ids[:1] == [bos]
        added = tok.get_added_tokens_decoder()
        self._setup(tok, {
            "name": folder.name,
            "bos_token_id": bos,
            "eos_token_id": eos,
            "add_bos_token": bool(add_bos),
            # tokenizer.json's own normalizer and pre-tokenizer place spaces; special tokens cut as llama.cpp does
            "add_space_prefix": False,
            "whole_newline_runs": False,
            "special_token_ids": sorted(i for i, token in added.items() if token.special),
            "chat_template": _chat_template(folder, config),
            "vocab_size": tok.get_vocab_size(with_added_tokens=True),
        })

    @property
    def name(self):
        return "lpb-hf-" + self.model_identifier

    def backend(self):
        return "tokenizers (Hugging Face tokenizer.json)"
