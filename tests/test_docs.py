"""Every Python example in docs/plugins.md runs as it stands."""

import re
import shutil

import pytest

from tests.conftest import FIXTURES, REPO

DOCS = REPO / "docs" / "plugins.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def python_examples():
    text = DOCS.read_text()
    return [(text.count("\n", 0, match.start()) + 2, match.group(1)) for match in _BLOCK.finditer(text)]


def test_the_plugin_docs_have_examples():
    assert len(python_examples()) >= 15


@pytest.mark.parametrize("line, code", python_examples(), ids=lambda value: f"line{value}" if isinstance(value, int)
                         else None)
def test_docs_example_runs(line, code, tmp_path, monkeypatch):
    shutil.copytree(FIXTURES / "tiny_day_care", tmp_path / "day_care")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"{DOCS}:{line}", "exec"), {"__name__": f"docs_example_line{line}"})
