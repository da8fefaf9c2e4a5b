"""SentencePiece GGUFs (``tokenizer.ggml.model = "llama"``: Llama 2, Mistral, Gemma) as a ``tokenizers`` BPE.

llama.cpp's SPM tokenizer starts from the characters of the text (spaces written ``▁``) and keeps
merging the adjacent pair whose concatenation is the vocabulary entry with the highest score;
characters left outside the vocabulary become byte tokens ``<0xNN>``.  A ``tokenizers`` BPE whose
merges are every (left, right) split of every entry, ranked by the score of the entry, with byte
fallback, does the same (as Hugging Face converts Llama tokenizers).  A Unigram model would pick
the best-scoring segmentation instead, which is not what llama.cpp computes.

The space prefix SentencePiece adds (``add_space_prefix``) depends on where a piece of text
stands (at the start, after a special token), so :class:`~lpb_plugins.llama_cpp.gguf_tokenizer.
GGUFTokenizer` adds it, not this tokenizer.
"""

from __future__ import annotations

from typing import List, Tuple

from lpb_plugins.llama_cpp.gguf_vocab import GGUFVocab

__all__ = ["SPACE_MARK", "spm_merges", "spm_decoder", "build_spm_tokenizer"]

# SentencePiece writes a space as U+2581 (LOWER ONE EIGHTH BLOCK).
SPACE_MARK = "\u2581"


def spm_merges(tokens: Tuple[str, ...], scores: Tuple[float, ...]) -> List[Tuple[str, str]]:
    """Every split of every vocabulary entry into two entries, best-scoring entry first."""
    index = {text: i for i, text in enumerate(tokens)}
    ranked = []
    for merged, text in enumerate(tokens):
        for cut in range(1, len(text)):
            left, right = text[:cut], text[cut:]
            if left in index and right in index:
                ranked.append((-scores[merged], merged, cut, left, right))
    ranked.sort()
    return [(left, right) for *_, left, right in ranked]


def spm_decoder():
    """Pieces back to text: '▁' is a space, byte tokens ``<0xNN>`` are bytes."""
    from tokenizers import decoders

    return decoders.Sequence([decoders.Replace(SPACE_MARK, " "), decoders.ByteFallback(), decoders.Fuse()])


def build_spm_tokenizer(vocab: GGUFVocab):
    """A ``tokenizers.Tokenizer`` tokenizing raw text (no special tokens, no space prefix) as llama.cpp."""
    from tokenizers import Tokenizer, models, normalizers

    index = {text: i for i, text in enumerate(vocab.tokens)}
    unk = vocab.tokens[vocab.unk_token_id] if vocab.unk_token_id is not None else None
    tok = Tokenizer(models.BPE(vocab=index, merges=spm_merges(vocab.tokens, vocab.scores),
                               unk_token=unk, byte_fallback=True, fuse_unk=False))
    tok.normalizer = normalizers.Replace(" ", SPACE_MARK)
    tok.decoder = spm_decoder()
    return tok
