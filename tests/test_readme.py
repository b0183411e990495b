"""The README's two fresh-machine commands stay true: CI runs the test command, and the set-up
command works in a fresh copy of the repository with a fresh virtual environment."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import onnx
from helpers import ROOT


def _command_after(heading: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(heading)
    block = re.search(r"```bash\n(.*?)```", text[start:], flags=re.S)
    assert block, f"no bash block after {heading!r}"
    return block.group(1).strip()


SETUP = _command_after("Set up and run the main job")
TESTS = _command_after("Run the tests")


def test_ci_runs_the_readme_test_command():
    lines = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.startswith("#") and not line.startswith(("set ", "cd "))
    ]
    assert " && ".join(lines) == TESTS


def test_setup_command_runs_on_a_fresh_copy(tmp_path):
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    copy = tmp_path / "repo"
    for name in files:
        src = ROOT / name
        if src.is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, copy / name)
    proc = subprocess.run(
        ["bash", "-c", SETUP], cwd=copy, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = SETUP.split()[SETUP.split().index("optimize") + 2]
    model = onnx.load(copy / out)
    onnx.checker.check_model(model, full_check=True)
    assert "replaced" in proc.stdout and "structure verified: " in proc.stdout
    assert "fidelity against the original (" in proc.stdout and "next: " in proc.stdout


def test_python_api_snippet_runs(tmp_path):
    """The README's post-export snippet, run as written (torch extra)."""
    import pytest

    pytest.importorskip("torch")
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Python API") :]
    snippet = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)
    proc = subprocess.run(
        [sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "replaced 2 of 3 convs" in proc.stdout
    onnx.checker.check_model(str(tmp_path / "model_sk.onnx"), full_check=True)


def test_one_json_convention_in_help_and_readme(capsys):
    """Every command with a JSON document takes --json (stdout) and --json-out FILE, as the
    README's CLI reference says (optimize: --report FILE too)."""
    from onnx_sk.cli import main

    text = (ROOT / "README.md").read_text()
    assert "`--json` prints the command's JSON document to stdout" in text
    for command in ("analyze", "efficiency", "search", "bench", "optimize", "compare"):
        assert main([command, "--help"]) == 0
        help_text = capsys.readouterr().out
        assert "--json " in help_text and "--json-out" in help_text, command
        if command not in ("optimize", "bench", "compare"):
            heading = re.search(rf"### `onnx-sk {command} [^\n]*", text)
            assert heading and "[--json] [--json-out FILE]" in heading.group(0), command
    assert "[--json] [--json-out FILE]" in text[text.index("### `onnx-sk bench") :]
    assert "--report FILE.json` (= `--json-out`; `-` = stdout), `--json`" in text
