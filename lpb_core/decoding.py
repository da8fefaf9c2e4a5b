"""LMQL decoder option strings (``argmax``, ``sample(temperature=0.8)``), parsed without eval."""

from __future__ import annotations

import ast
import difflib
import numbers

import attrs

from lpb_core.errors import InputError

# The decoders LMQL 0.7 ships; see https://lmql.ai/docs/language/decoding.html
KNOWN_DECODERS = ("argmax", "sample", "beam", "beam_sample", "best_k", "var", "beam_var")
# Options LMQL's decoders and models read. LMQL ignores any other, so a name close to one of these is a typo
# that would silently change nothing; a name far from all is passed on as written.
LMQL_MAX_LEN = 2048  # the max_len of LMQL's decoders when none is given (lmql.runtime.dclib.decoders)
KNOWN_OPTIONS = ("temperature", "n", "max_len", "top_k", "top_p", "chunksize", "openai_chunksize", "batch_size",
                 "alpha", "num_samples", "max_tokens")


@attrs.frozen
class Decoder:
    name: str
    options: tuple[tuple[str, object], ...] = ()

    @property
    def max_len(self) -> int:
        """The most tokens a query's prompt and answers may hold (LMQL refuses a longer prompt)."""
        return dict(self.options).get("max_len", LMQL_MAX_LEN)

    @property
    def clause(self) -> str:
        """The decoder clause that starts an LMQL query."""
        if not self.options:
            return self.name
        return f"{self.name}({', '.join(f'{k}={v!r}' for k, v in self.options)})"

    @property
    def deterministic(self) -> bool:
        """Whether the same prompt always gives the same output (so results may be cached)."""
        temperature = dict(self.options).get("temperature")
        return self.name in ("argmax", "beam", "best_k") or (self.name == "sample" and temperature == 0)


def parse_decoder(text: str, where: str = "command line", field: str | None = None) -> Decoder:
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):  # ValueError: a NUL byte; the others: nesting
        raise InputError(where, f"not an LMQL decoder: {text!r} (expected e.g. argmax or sample(temperature=0.8))",
                         field) from None
    if isinstance(node, ast.Name):
        name, options = node.id, ()
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.args:
        name = node.func.id
        try:
            options = tuple((kw.arg, ast.literal_eval(kw.value)) for kw in node.keywords if kw.arg)
        except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):  # TypeError: {[]: 1}
            raise InputError(where, f"decoder options must be literal values: {text!r}", field) from None
        if len(options) != len(node.keywords):
            raise InputError(where, f"decoder options must be name=value pairs: {text!r}", field)
    else:
        raise InputError(where, f"not an LMQL decoder: {text!r} (expected e.g. argmax or sample(temperature=0.8))",
                         field)
    if name not in KNOWN_DECODERS:
        raise InputError(where, f"unknown decoder {name!r}; known: {', '.join(KNOWN_DECODERS)}", field)
    for key, value in options:
        problem = _option_problem(key, value)
        if problem:
            raise InputError(where, f"{text.strip()!r}: {problem}", field)
    return Decoder(name, options)


def _option_problem(key: str, value) -> str | None:
    number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if key == "temperature" and not (number and value >= 0):
        return f"temperature must be a number from 0 up, not {value!r}"
    if key in ("n", "max_len", "top_k", "chunksize", "num_samples", "max_tokens") and \
            not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return f"{key} must be a whole number from 1 up, not {value!r}"
    if key == "top_p" and not (number and 0 < value <= 1):
        return f"top_p must be a number above 0 and at most 1, not {value!r}"
    close = difflib.get_close_matches(key, KNOWN_OPTIONS, n=1, cutoff=0.75)
    if key not in KNOWN_OPTIONS and close:
        return f"unknown option {key!r}: did you mean {close[0]!r}?"
    return None
