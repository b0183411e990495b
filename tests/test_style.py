"""The style tools run in CI as tests: ruff check, ruff format, mypy (configured in pyproject.toml).

Each tool runs as ``python -m TOOL`` from the repository root, so it reads that configuration. A
tool that is not installed skips its test (all are in the ``dev`` extra, so CI runs them).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
from helpers import ROOT

PATHS = ["onnx_sk", "tests", "bench", "models"]

# one line per problem (ruff check) or per unformatted file (ruff format --check), not full diffs
ENV = {**os.environ, "RUFF_OUTPUT_FORMAT": "concise"}


def _run(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    if importlib.util.find_spec(tool) is None:
        pytest.skip(f"{tool} is not installed (pip install -e '.[dev]')")
    return subprocess.run(
        [sys.executable, "-m", tool, *args],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _assert_clean(proc: subprocess.CompletedProcess[str]) -> None:
    if proc.returncode != 0:
        command = " ".join(["python", *proc.args[1:]])
        pytest.fail(f"`{command}` exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")


def test_ruff_check() -> None:
    _assert_clean(_run("ruff", "check", *PATHS))


def test_ruff_format() -> None:
    # `ruff format --diff` shows the changes, `ruff format` makes them
    _assert_clean(_run("ruff", "format", "--check", *PATHS))


def test_mypy() -> None:
    # no paths: [tool.mypy] files in pyproject.toml says what is checked
    _assert_clean(_run("mypy"))
