"""Reading and writing the files a person sees: JSON in, atomic JSON out, schema checks."""

from __future__ import annotations

import json
import os
import re
import tempfile
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from lpb_core.errors import InputError, InputErrors


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON so a crash leaves either the old file or the new one, never half."""
    write_bytes_atomic(path, (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` so a crash leaves either the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes files private; run files are meant to be read and shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_text(path: Path, missing: str = "file not found") -> str:
    """A UTF-8 text file, or an InputError that says why it cannot be read (and where, for bad bytes)."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8-sig")  # a byte-order mark, as some Windows editors write, is dropped
    except FileNotFoundError:
        raise InputError(path, missing) from None
    except UnicodeDecodeError as exc:
        raise InputError(path, f"not UTF-8 text: {exc.reason}", f"byte {exc.start}") from None
    except (OSError, ValueError) as exc:  # a directory, no permission, a name the OS refuses
        raise InputError(path, f"cannot read: {exc.strerror if isinstance(exc, OSError) else exc}") from None


def missing_file(path: Path | None, option: str) -> InputError | None:
    """The error for a file given with ``option`` that is not there, named by the option; None if it is."""
    if path is None or Path(path).is_file():
        return None
    return InputError("command line", f"no file at {str(path)!r}{' (a folder is there)' * Path(path).is_dir()}",
                      option)


class DuplicateKey(ValueError):
    """A key given twice in one object: JSON and hjson parsers silently keep the last, which loses the first."""

    def __init__(self, key: str):
        super().__init__(key)
        self.key = key

    def error(self, path: Path) -> InputError:
        return InputError(path, "given twice in one object (only one value can count: remove the other)",
                          json_path([self.key]))


def unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    """``object_pairs_hook`` for json and hjson: an object, or DuplicateKey."""
    result = {}
    for key, value in pairs:
        if key in result:
            raise DuplicateKey(key)
        result[key] = value
    return result


def read_json(path: Path) -> Any:
    text = read_text(path)
    try:
        return json.loads(text, object_pairs_hook=unique_keys)
    except DuplicateKey as exc:
        raise exc.error(path) from None
    except json.JSONDecodeError as exc:
        raise InputError(path, f"invalid JSON: {exc.msg}", f"line {exc.lineno}, column {exc.colno}") from None
    except RecursionError:
        raise InputError(path, "invalid JSON: nested too deeply") from None


@lru_cache(maxsize=None)
def schema(name: str) -> dict:
    """A schema shipped in ``schemas/`` (installed as ``lpb_core.schemas``)."""
    text = resources.files("lpb_core.schemas").joinpath(f"{name}.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


def schema_defaults(name: str) -> dict:
    """The ``default`` of each top-level property of a shipped schema that has one."""
    return {key: spec["default"] for key, spec in schema(name)["properties"].items() if "default" in spec}


_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def json_path(parts) -> str:
    """``$.key[0].other``; keys that are not plain names are quoted (``$["a b"]``), so the path stays one line."""
    path = "$"
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        elif _PLAIN_KEY.match(str(part)):
            path += f".{part}"
        else:
            path += f"[{json.dumps(str(part))}]"
    return path


def schema_errors(data: Any, schema_doc: dict, where: Path | str) -> list[InputError]:
    """Every violation of ``schema_doc``, each naming the file and the JSON path of the field."""
    validator = jsonschema.Draft202012Validator(schema_doc)
    errors = []
    for error in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path))):
        parts = list(error.absolute_path)
        message = error.message
        if error.validator == "required":
            missing = message.split("'")[1] if "'" in message else "?"
            parts.append(missing)
            expected = schema_doc_at(schema_doc, error.schema_path, missing)
            message = "missing" + (f" (expected {expected})" if expected else "")
        elif error.validator == "additionalProperties" and error.validator_value is False:
            patterns = [re.compile(p) for p in error.schema.get("patternProperties", {})]
            extra = sorted(key for key in error.instance if key not in error.schema.get("properties", {})
                           and not any(p.search(key) for p in patterns))
            parts.append(extra[0] if extra else "?")
            known = ", ".join(error.schema.get("properties", {}))
            message = f"unknown field; expected one of: {known}"
        elif error.validator == "type":
            wanted = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
            kinds = [KINDS.get(k, k) for k in wanted]
            expected = " or ".join(filter(None, [", ".join(kinds[:-1]), kinds[-1]]))
            message = f"expected {expected}, got {kind_of(error.instance)}"
        elif error.validator == "pattern" and error.validator_value == NOT_BLANK:
            message = "blank: write some text here"
        elif error.validator == "minItems":
            needed = error.validator_value
            message = f"needs at least {needed} item{'s' * (needed != 1)}, has {len(error.instance)}"
        elif message.startswith(repr(error.instance)) and len(repr(error.instance)) > 40:  # not the whole file
            message = kind_of(error.instance) + message[len(repr(error.instance)):]
        errors.append(InputError(where, message, json_path(parts)))
    return errors


NOT_BLANK = "\\S"  # the schemas' pattern for a text that must not be blank (jsonschema would print the regex)
KINDS = {"string": "a string", "object": "an object", "array": "a list", "number": "a number",
         "integer": "an integer", "boolean": "true or false", "null": "null"}


def kind_of(value: Any) -> str:
    """What a JSON value is, in the words of ``KINDS``, with a short value shown as itself."""
    kind = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number")
    shown = json.dumps(value)  # escaped: a line separator in the value must not split the one-line error
    return f"{KINDS[kind]} ({shown})" if len(shown) <= 40 and kind != "null" else KINDS[kind]


def schema_doc_at(schema_doc: dict, schema_path, prop: str) -> str | None:
    """A short 'a string' description of what a missing property should be."""
    node = schema_doc
    for part in list(schema_path)[:-1]:
        node = node[part]
    kind = node.get("properties", {}).get(prop, {}).get("type")
    return KINDS.get(kind) if isinstance(kind, str) else None


def check(data: Any, schema_name: str, where: Path | str) -> None:
    """Raise every violation of a shipped schema at once."""
    errors = schema_errors(data, schema(schema_name), where)
    if errors:
        raise InputErrors(errors)
