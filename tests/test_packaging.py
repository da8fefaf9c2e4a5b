"""A plain (non-editable) install carries every data file of the packages: the built-in day care, the
schemas and the report templates, as pyproject.toml's package-data lists them."""

import fnmatch
import subprocess
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def tracked_files(folder: str) -> list[str]:
    """Files git tracks under ``folder``, relative to it (so run directories and caches are left out)."""
    listed = subprocess.run(["git", "ls-files", folder], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return [str(Path(line).relative_to(folder)) for line in listed.splitlines()]


def test_package_data_covers_every_tracked_data_file():
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    missing = []
    for package, folder in setuptools["package-dir"].items():
        globs = setuptools["package-data"].get(package, [])
        subpackages = [f[len(folder) + 1:] for f in setuptools["package-dir"].values() if f.startswith(folder + "/")]
        for name in tracked_files(folder):
            if name.endswith(".py") or any(name.startswith(sub + "/") for sub in subpackages):
                continue
            # setuptools' package-data globs match path segments: "*/*.json" is one folder deep
            if not any(fnmatch.fnmatch(name, g) and name.count("/") == g.count("/") for g in globs):
                missing.append(f"{folder}/{name}")
    assert missing == []
