"""What a GGUF file says about its tokenizer, read as llama.cpp reads it (``llama-vocab.cpp``).

Only the metadata is read (the ``tokenizer.ggml.*`` keys), never the weights.  Keys a GGUF leaves
out keep llama.cpp's defaults, which depend on the tokenizer family: SentencePiece (``llama``) or
byte-level BPE (``gpt2``).
"""

from __future__ import annotations

import pathlib
from typing import Any, Optional, Tuple

import attrs

from lpb_core.errors import InputError

__all__ = ["TokenType", "GGUFVocab", "read_gguf_vocab"]


class TokenType:
    """GGUF token types (``tokenizer.ggml.token_type``)."""

    NORMAL = 1
    UNKNOWN = 2
    CONTROL = 3
    USER_DEFINED = 4
    UNUSED = 5
    BYTE = 6


# Token types llama.cpp cuts out of the text before tokenizing the rest (tokenize(special=True)).
_PARTITIONED_TYPES = (TokenType.UNKNOWN, TokenType.CONTROL, TokenType.USER_DEFINED)

# Token texts llama.cpp treats as control tokens whatever type the GGUF gives them (end-of-turn,
# end-of-generation and fill-in-the-middle markers), or as user-defined ones (gpt-oss's markers).
_SPECIAL_BY_TEXT = frozenset({
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
    "<EOT>", "_<EOT>", "[EOT]", "[EOS]", "<｜end▁of▁sentence｜>", "<end_of_utterance>", "<|eom_id|>",
    "<|return|>", "<|call|>", "<|flush|>", "<|calls|>", "</s>", "<eos>", "<turn|>", "<|tool_response>",
    "[e~[",
    "<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>",
    "<|code_prefix|>", "<|prefix|>", "<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>",
    "<SUF>", "▁<SUF>", "<|code_suffix|>", "<|suffix|>", "<|fim_middle|>", "<fim-middle>", "<fim_middle>",
    "<｜fim▁end｜>", "<MID>", "▁<MID>", "<|code_middle|>", "<|middle|>", "<|fim_pad|>", "<fim-pad>",
    "<fim_pad>", "<PAD>", "[PAD]", "<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>",
    "<|file_sep|>", "<|channel|>", "<|message|>", "<|start|>", "<|constrain|>",
})

# llama.cpp's default special token ids per tokenizer model, used where the GGUF names none.
_DEFAULT_IDS = {"llama": {"bos": 1, "eos": 2, "unk": 0}, "gpt2": {"bos": 11, "eos": 11, "unk": None},
                "gemma4": {"bos": None, "eos": None, "unk": None}}

SUPPORTED_MODELS = tuple(_DEFAULT_IDS)


def _optional_bool(value: Any) -> Optional[bool]:
    return None if value is None else bool(value)


@attrs.frozen
class GGUFVocab:
    """The tokenizer metadata of one GGUF.  Optional flags are None where the GGUF does not set them."""

    source: str
    name: str
    model: str  # "llama" (SentencePiece), "gpt2" (byte-level BPE) or "gemma4"
    pre: Optional[str]  # byte-level BPE: the pre-tokenizer (regex split) name
    tokens: Tuple[str, ...]
    scores: Tuple[float, ...]
    token_types: Tuple[int, ...]
    merges: Tuple[str, ...]
    bos_token_id: Optional[int]
    eos_token_id: Optional[int]
    unk_token_id: Optional[int]
    pad_token_id: Optional[int]
    add_bos_token: Optional[bool]
    add_eos_token: Optional[bool]
    add_space_prefix: Optional[bool]
    chat_template: Optional[str]
    context_length: Optional[int]

    def special_token_ids(self) -> list[int]:
        """Tokens llama.cpp finds in the text before tokenizing the rest, in its search order
        (longest text first): control, user-defined and unknown tokens."""
        ids = [i for i, (text, kind) in enumerate(zip(self.tokens, self.token_types))
               if kind in _PARTITIONED_TYPES or text in _SPECIAL_BY_TEXT]
        if "<|tool_response>" in self.tokens and "</s>" in self.tokens:  # llama.cpp: then "</s>" is text
            ids.remove(self.tokens.index("</s>"))
        return sorted(ids, key=lambda i: (-len(self.tokens[i].encode("utf-8")), i))


def _token_id(value: Any, n_tokens: int) -> Optional[int]:
    return int(value) if value is not None and 0 <= int(value) < n_tokens else None


def read_gguf_vocab(path: pathlib.Path) -> GGUFVocab:
    """The tokenizer metadata of the GGUF at ``path``; InputError if its tokenizer is not one we build."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))

    def get(key: str, default: Any = None) -> Any:
        field = reader.fields.get(key)
        return default if field is None else field.contents()

    model = get("tokenizer.ggml.model")
    if model not in SUPPORTED_MODELS:
        raise InputError(path, f"tokenizer model {model!r} is not supported "
                               f"(supported: {', '.join(SUPPORTED_MODELS)})", field="tokenizer.ggml.model")
    tokens = tuple(get("tokenizer.ggml.tokens") or ())
    if not tokens:
        raise InputError(path, "the GGUF holds no vocabulary", field="tokenizer.ggml.tokens")
    n = len(tokens)
    types = get("tokenizer.ggml.token_type")
    scores = get("tokenizer.ggml.scores")
    defaults = _DEFAULT_IDS[model]

    def special_id(key: str, default: Optional[int]) -> Optional[int]:
        # as llama.cpp: a default out of the vocabulary is dropped, a bad id keeps the default
        default = _token_id(default, n)
        value = get(f"tokenizer.ggml.{key}")
        return default if value is None or _token_id(value, n) is None else int(value)

    architecture = get("general.architecture", "llama")
    return GGUFVocab(
        source=str(path),
        name=str(get("general.name", path.stem)),
        model=model,
        pre=get("tokenizer.ggml.pre"),
        tokens=tokens,
        scores=tuple(float(s) for s in scores) if scores is not None else (0.0,) * n,
        token_types=tuple(int(t) for t in types) if types is not None else (TokenType.NORMAL,) * n,
        merges=tuple(get("tokenizer.ggml.merges") or ()),
        bos_token_id=special_id("bos_token_id", defaults["bos"]),
        eos_token_id=special_id("eos_token_id", defaults["eos"]),
        unk_token_id=special_id("unknown_token_id", defaults["unk"]),
        pad_token_id=special_id("padding_token_id", None),
        add_bos_token=_optional_bool(get("tokenizer.ggml.add_bos_token")),
        add_eos_token=_optional_bool(get("tokenizer.ggml.add_eos_token")),
        add_space_prefix=_optional_bool(get("tokenizer.ggml.add_space_prefix")),
        chat_template=get("tokenizer.chat_template"),
        context_length=get(f"{architecture}.context_length"),
    )
