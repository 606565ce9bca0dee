"""One version number: pyproject.toml's, as ``braintumor --version`` and ``braintumor.__version__`` report it."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys

import braintumor
from conftest import ROOT


def _pyproject_version() -> str:
    found = re.search(r'^version = "([^"]+)"$', (ROOT / "pyproject.toml").read_text(encoding="utf-8"), re.MULTILINE)
    assert found, "pyproject.toml has no [project] version line"
    return found.group(1)


def test_cli_version_is_the_pyproject_version():
    done = subprocess.run(
        [sys.executable, "-m", "braintumor.cli", "--version"], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout == f"braintumor {_pyproject_version()}\n"
    assert braintumor.__version__ == _pyproject_version()


def test_an_uninstalled_checkout_reads_its_pyproject(monkeypatch):
    def not_installed(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    assert braintumor._version() == _pyproject_version()
