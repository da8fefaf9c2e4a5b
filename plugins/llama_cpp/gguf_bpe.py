"""Byte-level BPE GGUFs (``tokenizer.ggml.model = "gpt2"``: Llama 3, Qwen 2, SmolLM, GPT-2 ...) as a
``tokenizers`` BPE.

llama.cpp splits the text with the regexes of the GGUF's pre-tokenizer (``tokenizer.ggml.pre``),
each regex splitting the pieces the previous one left (matches and the text between them are
kept), then byte-encodes each piece (GPT-2's byte-to-unicode map) and applies the merges in rank
order.  ``tokenizers`` does the same with a ``Split(regex, "isolated")`` per regex and a
``ByteLevel`` step without its own regex.

The regexes are llama.cpp's own (``llm_tokenizer_bpe`` in ``llama-vocab.cpp``), which differ from
some models' originals: case-insensitive groups are spelled out, and GPT-4o-style upper/lower-case
letter classes are written with lookaheads that let any non-ASCII letter count as both.  Where
llama.cpp's regex emulation differs from Unicode regexes (non-ASCII spaces match only ``\\s``, never
a range of characters), the regexes here say so, so that the pieces are llama.cpp's.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import attrs

from lpb_plugins.llama_cpp.gguf_spm import SPACE_MARK, spm_decoder
from lpb_plugins.llama_cpp.gguf_vocab import GGUFVocab

__all__ = ["PreTokenizer", "PRE_TOKENIZERS", "DEFAULT_PRE", "build_bpe_tokenizer", "build_gemma4_tokenizer"]

# llama.cpp's pre-tokenizer when a GGUF names none ("GENERATION QUALITY WILL BE DEGRADED").
DEFAULT_PRE = "default"

_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_CONTRACTIONS = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
_LLAMA3 = (_CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
           r"|\s+(?!\S)|\s+")
_QWEN2 = _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
_QWEN2_NO_CONTRACTIONS = r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
_BAILING = (r"'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
            r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+")
_SEED_CODER = (_CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+"
               r"|\s+(?!\S)|\s+")
_MINICPM5 = (_CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}+| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
             r"|\s+(?!\S)|\s+")
_EXAONE_MOE = (_CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?(?:\p{L}\p{M}*(?: \p{L}\p{M}*)*)+|\p{N}"
               r"| ?[^\s\p{L}\p{N}]+[\r\n/]?|\s*[\r\n]|\s+(?!\S)|\s+")
_WORDS_AND_STOPS = " ?[^(\\s|.,!?\u2026\u3002\uff0c\u3001\u0964\u06d4\u060c)]+"
_QWEN35 = (_CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*"
           r"|\s*[\r\n]+|\s+(?!\S)|\s+")
# upper-case-ish letters, then lower-case-ish ones (llama.cpp's rewrite of \p{Lu}... and \p{Ll}...)
_UPPER, _LOWER = r"((?=[\p{L}])([^a-z]))", r"((?=[\p{L}])([^A-Z]))"
_GPT4O = (rf"[^\r\n\p{{L}}\p{{N}}]?{_UPPER}*{_LOWER}+{_CONTRACTIONS}?"
          rf"|[^\r\n\p{{L}}\p{{N}}]?{_UPPER}+{_LOWER}*{_CONTRACTIONS}?"
          r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_TEKKEN = (rf"[^\r\n\p{{L}}\p{{N}}]?{_UPPER}*{_LOWER}+|[^\r\n\p{{L}}\p{{N}}]?{_UPPER}+{_LOWER}*"
           r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# llama.cpp matches these on text whose non-ASCII spaces became "\v" (only "\s" can match them):
# "&&\S" leaves them out of the character ranges too
_CJK = "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff&&\\S]+"
_DEEPSEEK_LETTERS = (
    "\\s?[A-Za-z\u00b5\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u01ba\u01bc-\u01bf\u01c4-\u0293\u0295-\u02af"
    "\u0370-\u0373\u0376\u0377\u037b-\u037d\u037f\u0386\u0388-\u038a\u038c\u038e-\u03a1\u03a3-\u03f5"
    "\u03f7-\u0481\u048a-\u052f\u0531-\u0556\u10a0-\u10c5\u13a0-\u13f5\u13f8-\u13fd\u1c90-\u1cba"
    "\u1cbd-\u1cbf\u1d00-\u1d2b\u1d6b-\u1d77\u1d79-\u1d9a\u1e00-\u1f15\u1f18-\u1f1d\u1f20-\u1f45"
    "\u1f48-\u1f4d\u1f50-\u1f57\u1f59\u1f5b\u1f5d\u1f5f-\u1f7d\u1f80-\u1fb4\u1fb6-\u1fbc\u1fbe"
    "\u1fc2-\u1fc4\u1fc6-\u1fcc\u1fd0-\u1fd3\u1fd6-\u1fdb\u1fe0-\u1fec\u1ff2-\u1ff4\u1ff6-\u1ffc\u2102"
    "\u2107\u210a-\u2113\u2115\u2119-\u211d\u2124\u2126\u2128\u212a-\u212d\u212f-\u2134\u2139"
    "\u213c-\u213f\u2145-\u2149\u214e\u2183\u2184\u2c00-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee\u2cf2\u2cf3"
    "\ua640-\ua66d\ua680-\ua69b\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e\uab70-\uabbf\ufb00-\ufb06"
    "\ufb13-\ufb17\uff21-\uff3a\uff41-\uff5a\U00010400-\U0001044f\U000104b0-\U000104d3"
    "\U000104d8-\U000104fb\U00010c80-\U00010cb2\U00010cc0-\U00010cf2\U000118a0-\U000118df"
    "\U0001e900-\U0001e943]+")
_DEEPSEEK_PUNCT = "\\s?[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002&&\\S]+"
_DEEPSEEK3 = (r"[!" '"' r"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+"
              r"|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*"
              r"|\s*[\r\n]+|\s+(?!\S)|\s+")


@attrs.frozen
class PreTokenizer:
    """How llama.cpp splits text before BPE for one ``tokenizer.ggml.pre`` value."""

    regexes: Tuple[str, ...]
    ignore_merges: bool = False  # a piece that is a vocabulary entry is taken whole
    add_bos: bool = False  # llama.cpp's add_bos default where the GGUF does not say


def _table() -> Dict[str, PreTokenizer]:
    groups = [
        (("default",), PreTokenizer((r"[\p{P}\$\+<=>\^~\|]+", _GPT2, r"\p{N}+", "[0-9][0-9][0-9]"))),
        (("gpt-2", "phi-2", "gigachat", "a.x-4.0", "mellum", "mpt", "olmo", "jais", "trillion",
          "granite-docling", "exaone4"), PreTokenizer((_GPT2,))),
        (("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2"),
         PreTokenizer((_LLAMA3,), ignore_merges=True, add_bos=True)),
        (("dbrx", "smaug-bpe"), PreTokenizer((_LLAMA3,))),
        # every digit alone, then GPT-2's regex
        (("starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b", "mellum2"),
         PreTokenizer((r"\p{N}", _GPT2))),
        (("qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez", "stablelm2", "hunyuan", "solar-open",
          "grok-2"), PreTokenizer((_QWEN2,))),
        (("laguna",), PreTokenizer(("[^\n]+|[\n]+", _QWEN2))),
        (("ufakzeka",), PreTokenizer((_QWEN2_NO_CONTRACTIONS,))),
        (("bailingmoe", "bailingmoe2", "llada-moe"), PreTokenizer((_BAILING,))),
        (("seed-coder",), PreTokenizer((_SEED_CODER,))),
        (("minicpm5",), PreTokenizer((r"\p{N}{1,3}", _MINICPM5), ignore_merges=True)),
        (("exaone-moe",), PreTokenizer((_EXAONE_MOE,))),
        (("falcon",), PreTokenizer((r"[\p{P}\$\+<=>\^~\|`]+", _GPT2, "[0-9][0-9][0-9]"))),
        (("chameleon",), PreTokenizer(("<sentinel:[0-9]+>", "(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z",
                                       "([\\t\\n]|    |  )", r"\p{N}", r"[\p{P}!-/:-@\[-`{-~]", _GPT2),
                                      add_bos=True)),
        (("poro-chat", "bloom", "gpt3-finnish"), PreTokenizer((_WORDS_AND_STOPS,))),
        (("viking",), PreTokenizer((_WORDS_AND_STOPS, r"\p{N}"))),
        (("qwen35",), PreTokenizer((_QWEN35,))),
        (("gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2"), PreTokenizer((_GPT4O,))),
        (("tekken",), PreTokenizer((_TEKKEN,), ignore_merges=True, add_bos=True)),
        (("deepseek-llm",), PreTokenizer(("[\r\n]", _DEEPSEEK_LETTERS, _DEEPSEEK_PUNCT, r"\s+$", _CJK,
                                          r"\p{N}+"))),
        (("deepseek-coder",), PreTokenizer(("[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", _CJK, r"\p{N}"))),
        (("deepseek-v3", "hunyuan-dense", "joyai-llm", "hy_v4"),
         PreTokenizer((r"\p{N}{1,3}", "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+", _DEEPSEEK3))),
    ]
    return {name: pre for names, pre in groups for name in names}


PRE_TOKENIZERS: Dict[str, PreTokenizer] = _table()


def _merge_pairs(merges: Tuple[str, ...], vocab: Dict[str, int]) -> List[Tuple[str, str]]:
    """GGUF merges ("left right", split at the first space after the first character, as llama.cpp),
    keeping those whose parts and result are in the vocabulary (no other merge can ever apply)."""
    pairs = []
    for merge in merges:
        cut = merge.find(" ", 1)
        left, right = merge[:cut], merge[cut + 1:]
        if cut > 0 and left in vocab and right in vocab and left + right in vocab:
            pairs.append((left, right))
    return pairs


def build_bpe_tokenizer(vocab: GGUFVocab, pre: PreTokenizer):
    """A ``tokenizers.Tokenizer`` tokenizing raw text (no special tokens) as llama.cpp with ``pre``."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    index = {text: i for i, text in enumerate(vocab.tokens)}
    tok = Tokenizer(models.BPE(vocab=index, merges=_merge_pairs(vocab.merges, index),
                               ignore_merges=pre.ignore_merges, fuse_unk=False, byte_fallback=False))
    splits = [pre_tokenizers.Split(Regex(regex), behavior="isolated") for regex in pre.regexes]
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        splits + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    return tok


def build_gemma4_tokenizer(vocab: GGUFVocab):
    """Gemma 4 (``tokenizer.ggml.model = "gemma4"``): a BPE over SentencePiece-style text (spaces
    written '▁', characters outside the vocabulary as byte tokens ``<0xNN>``), split only into
    lines and runs of newlines.  llama.cpp takes a run of newlines whole when it is a vocabulary
    entry; :class:`~lpb_plugins.llama_cpp.gguf_tokenizer.GGUFTokenizer` does that before this
    tokenizer sees the text."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers

    index = {text: i for i, text in enumerate(vocab.tokens)}
    tok = Tokenizer(models.BPE(vocab=index, merges=_merge_pairs(vocab.merges, index), fuse_unk=False,
                               byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", SPACE_MARK)
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("[^\n]+|[\n]+"), behavior="isolated")
    tok.decoder = spm_decoder()
    return tok
