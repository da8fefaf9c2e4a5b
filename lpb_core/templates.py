"""A breeder.lmql template (LMQL code and the arguments it takes), and compiling it with LMQL."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import attrs
import lmql

# LMQL writes a chat role tag ({:user}) into the prompt as "<lmql:user/>" and splits turns there; the same text in
# an item would open a turn of its own. A zero-width space after "<" keeps it text (and looks the same).
ROLE_TAG_START = "<lmql:"


def as_plain_text(value):
    """``value`` with any LMQL role-tag text made inert, so data cannot start a chat turn."""
    return value.replace(ROLE_TAG_START, "<\u200blmql:") if isinstance(value, str) else value


_PLACEHOLDER = re.compile(r"(?<!\{)\{([A-Za-z_][A-Za-z0-9_]*)")
# A variable the model writes: "[ANSWER]", "[N: int]", "[@fn X]" in a prompt string; not x[i] in code.
_HOLE = re.compile(r"(?<![\w\])])\[(?:@[\w.]+\s+)?([A-Za-z_]\w*)(?:\s*:[^\]]*)?\]")
_LOCAL_NAMES = re.compile(r"^\s*for\s+([A-Za-z_][\w\s,]*?)\s+in\b|^\s*([A-Za-z_]\w*)\s*=(?!=)", re.MULTILINE)


class TemplateError(Exception):
    """LMQL cannot compile a template; the message is LMQL's, on one line."""


@attrs.frozen
class Template:
    name: str
    code: str
    args: tuple[str, ...]
    source: Path | None = attrs.field(default=None, eq=False)  # the breeder.lmql that defines it

    def placeholders(self) -> set[str]:
        """Names used as {name} in prompt strings that are neither arguments nor bound inside the template."""
        local = set()
        for loop_targets, assigned in _LOCAL_NAMES.findall(self.code):
            local.update(n.strip() for n in loop_targets.split(",") if n.strip())
            if assigned:
                local.add(assigned)
        return set(_PLACEHOLDER.findall(self.code)) - local

    def writes(self) -> set[str]:
        """The variables the model writes ("[TASK_PROMPT]")."""
        return set(_HOLE.findall(self.code))

    def compiled(self):
        """The LMQL query function (async), compiled once per process for each code and argument list."""
        return _compile(self.code, self.args)


@functools.lru_cache(maxsize=512)
def _compile(code: str, args: tuple[str, ...]):
    try:
        return lmql.query(code, input_variables=list(args), is_async=True)
    except Exception as exc:  # LMQL's compiler raises many types (AssertionError, TokenError, RuntimeError, ...)
        message = " ".join(str(exc).split())
        raise TemplateError(f"LMQL cannot compile it: {type(exc).__name__}: {message}") from None
