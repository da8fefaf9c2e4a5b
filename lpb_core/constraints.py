"""Honest degradation of ``where`` constraints for backends that cannot enforce them all.

A backend that cannot mask tokens (an OpenAI chat model, a server that ignores ``logit_bias``) declares
what it enforces on its ModelHandle. Each inline ``"[VAR]" where ...`` clause of a template is then
rewritten before LMQL compiles it: the conjuncts the backend enforces stay, the others are dropped, and
each variable that lost a constraint is generated short (a length bound and a newline stop), so the
scorer reads the answer. The dropped constraints are reported, never silently lost.

Where clauses are found as LMQL's own parser finds them (``lmql.language.fragment_parser``: a STRING
token followed by the NAME ``where``, read with Python's tokenizer to the end of the logical line),
and read and rewritten as Python expressions with ``ast``.
"""

from __future__ import annotations

import ast
import functools
import io
import tokenize

# What a backend can enforce (ModelHandle.enforces): stopping phrases, and token-length bounds.
STOPS_AT = "stops_at"  # STOPS_AT(...) and STOPS_BEFORE(...)
LENGTH = "len"  # len(TOKENS(VAR)) < n or <= n
ENFORCED_BY_STOPPING = (STOPS_AT, LENGTH)

# The bound and stop a variable gets when one of its constraints is dropped.
DEGRADED_MAX_TOKENS = 32
DEGRADED_STOP = "\n"

_STOP_FUNCTIONS = {"STOPS_AT", "STOPS_BEFORE"}


def _kind(conjunct: ast.expr) -> str | None:
    """Which enforceable kind a conjunct is, or None if only a token mask can enforce it."""
    if isinstance(conjunct, ast.Call) and isinstance(conjunct.func, ast.Name) and conjunct.func.id in _STOP_FUNCTIONS:
        return STOPS_AT
    if (isinstance(conjunct, ast.Compare) and len(conjunct.ops) == 1 and isinstance(conjunct.ops[0], (ast.Lt, ast.LtE))
            and _length_target(conjunct.left) is not None):
        return LENGTH
    return None


def _length_target(node: ast.expr) -> str | None:
    """VAR for ``len(TOKENS(VAR))``."""
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "len" and len(node.args) == 1
            and isinstance(node.args[0], ast.Call) and isinstance(node.args[0].func, ast.Name)
            and node.args[0].func.id == "TOKENS" and len(node.args[0].args) == 1
            and isinstance(node.args[0].args[0], ast.Name)):
        return node.args[0].args[0].id
    return None


def _conjuncts(node: ast.expr) -> list[ast.expr]:
    if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.And):
        return [c for value in node.values for c in _conjuncts(value)]
    return [node]


def _variables(node: ast.expr) -> list[str]:
    """Upper-case names a conjunct constrains (lpb's template variables are upper case, arguments lower)."""
    called = {id(n.func) for n in ast.walk(node) if isinstance(n, ast.Call)}
    names = [n.id for n in ast.walk(node) if isinstance(n, ast.Name) and id(n) not in called]
    return list(dict.fromkeys(n for n in names if n.isupper()))


def _rewrite(expression: str, enforces: frozenset) -> tuple[str, list[str]]:
    """The clause keeping what is enforced (plus a short bound for variables that lost a constraint), and the
    dropped conjuncts as written."""
    kept, dropped, loosened = [], [], []
    for conjunct in _conjuncts(ast.parse(expression.strip(), mode="eval").body):
        if _kind(conjunct) in enforces:
            kept.append(conjunct)
        else:
            dropped.append(ast.unparse(conjunct))
            loosened += [v for v in _variables(conjunct) if v not in loosened]
    if not dropped:
        return expression, []
    bounded = {_length_target(c.left) for c in kept if _kind(c) == LENGTH}
    stopped = {v for c in kept if _kind(c) == STOPS_AT for v in _variables(c)}
    parts = [ast.unparse(c) for c in kept]
    for variable in loosened:
        if variable not in bounded and LENGTH in enforces:
            parts.append(f"len(TOKENS({variable})) < {DEGRADED_MAX_TOKENS}")
        if variable not in stopped and STOPS_AT in enforces:
            parts.append(f"STOPS_AT({variable}, {DEGRADED_STOP!r})")
    return " and ".join(parts), dropped


def degrade(code: str, enforces) -> tuple[str, list[str]]:
    """``code`` with every inline where clause reduced to what ``enforces`` covers; returns it and the dropped
    constraints. ``enforces=None`` means every constraint is enforced: the code is returned as it is."""
    if enforces is None:
        return code, []
    degraded, dropped = _degrade(code, frozenset(enforces))
    return degraded, list(dropped)


def unenforced(template: str, dropped) -> str:
    """How a breed and `lpb eval` say that a template runs without constraints its model cannot enforce."""
    return f"{template}: the model cannot enforce {' and '.join(dropped)}; the answer is generated short and read by " \
           "the scorer"


def _where_clauses(code: str):
    """(end of the string before ``where``, start of the clause, its end) for each inline where clause."""
    tokens = list(tokenize.generate_tokens(io.StringIO(code).readline))
    offsets = [0]
    for line in code.splitlines(keepends=True):
        offsets.append(offsets[-1] + len(line))

    def position(row_col) -> int:
        return offsets[row_col[0] - 1] + row_col[1]

    for i in range(len(tokens) - 1):
        if tokens[i].type == tokenize.STRING and tokens[i + 1].type == tokenize.NAME and tokens[i + 1].string == "where":
            end = next(j for j in range(i + 2, len(tokens))
                       if tokens[j].type in (tokenize.NEWLINE, tokenize.ENDMARKER))
            if end > i + 2:
                yield position(tokens[i].end), position(tokens[i + 2].start), position(tokens[end - 1].end)


@functools.lru_cache(maxsize=512)
def _degrade(code: str, enforces: frozenset) -> tuple[str, tuple[str, ...]]:
    edits, all_dropped = [], []
    for string_end, start, stop in _where_clauses(code):
        clause, dropped = _rewrite(code[start:stop], enforces)
        if dropped:
            # with nothing left to keep, the whole `where ...` goes
            edits.append((start, stop, clause) if clause else (string_end, stop, ""))
            all_dropped += dropped
    for start, stop, replacement in reversed(edits):
        code = code[:start] + replacement + code[stop:]
    return code, tuple(all_dropped)


def allowed_answers(code: str, variable: str) -> tuple[str, ...] | None:
    """The strings a ``VARIABLE in ["a", "b"]`` constraint of ``code`` allows, or None if it has none."""
    for _, start, stop in _where_clauses(code):
        try:
            clause = ast.parse(code[start:stop].strip(), mode="eval").body
        except SyntaxError:  # LMQL's own syntax beyond Python's: LMQL reports it when it compiles the template
            continue
        for conjunct in _conjuncts(clause):
            if (isinstance(conjunct, ast.Compare) and len(conjunct.ops) == 1 and isinstance(conjunct.ops[0], ast.In)
                    and isinstance(conjunct.left, ast.Name) and conjunct.left.id == variable
                    and isinstance(conjunct.comparators[0], (ast.List, ast.Tuple))
                    and all(isinstance(e, ast.Constant) and isinstance(e.value, str)
                            for e in conjunct.comparators[0].elts)):
                return tuple(e.value for e in conjunct.comparators[0].elts)
    return None
