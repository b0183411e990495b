"""The README's "Workflow" section runs as written: its bash block (export -> analyze -> onnxslim ->
optimize -> compare -> export-torch -> bench --plot -> ORT pre-processing), then its Python block
(quantize_static and quantize_dynamic, int8 vs fp32 SK), in a scratch folder beside the
committed models. The chains themselves are checked in detail by tests/test_chains.py."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from helpers import MODELS, ROOT

pytestmark = pytest.mark.chain

HEADING = "## Workflow"


def _blocks() -> tuple[str, str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index(HEADING) :]
    section = section[: section.index("\n## ", 1)]
    bash = re.search(r"```bash\n(.*?)```", section, flags=re.S)
    python = re.search(r"```python\n(.*?)```", section, flags=re.S)
    assert bash and python, "the Workflow section lost its bash or python block"
    return bash.group(1), python.group(1)


def test_workflow_section_leads_the_readme():
    text = (ROOT / "README.md").read_text()
    headings = re.findall(r"^## (.+)$", text, flags=re.M)
    assert headings.index("Workflow: from an exported model to a deployed one") <= 1
    bash, _ = _blocks()
    steps = [line for line in bash.splitlines() if re.match(r"# \d\. ", line)]
    assert [s.split()[2].rstrip(":") for s in steps] == [
        "export", "analyze", "optimize", "check", "fine-tune", "bench", "quantize"
    ]  # fmt: skip
    assert all("out/" in line for line in bash.splitlines() if "onnx-sk optimize" in line)


def test_workflow_runs_as_written(tmp_path: Path):
    pytest.importorskip("onnxslim", reason="onnxslim (dev extra) is not installed")
    pytest.importorskip("torch", reason="torch (torch extra) is not installed")
    bash, python = _blocks()
    (tmp_path / "models").symlink_to(MODELS)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", bash], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = tmp_path / "out"
    assert "replaced 18 of 21 convs" in proc.stdout
    for name in ("resnet20_slim", "resnet20_sk", "resnet20_sk_train", "resnet20_sk_slim",
                 "resnet20_sk_pre"):  # fmt: skip
        onnx.checker.check_model(str(out / f"{name}.onnx"), full_check=True)
    assert (out / "resnet20_sk_train.pt").stat().st_size > 0
    assert (out / "bench.svg").read_text().startswith("<?xml")
    assert (out / "resnet20_sk.json").exists()

    proc = subprocess.run([sys.executable, "-c", python], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = re.search(
        r"int8 vs fp32 SK: cosine ([\d.]+), max \|diff\| ([\d.]+) of the output scale, "
        r"top-1 agreement ([\d.]+)",
        proc.stdout,
    )
    assert line, proc.stdout
    cosine, rel, top1 = map(float, line.groups())
    # the tolerance the README states for a quantized SK model
    assert cosine >= 0.999 and rel <= 0.05 and top1 == 1.0
    for name in ("resnet20_sk_int8", "resnet20_sk_int8_dynamic"):
        onnx.checker.check_model(str(out / f"{name}.onnx"), full_check=True)
