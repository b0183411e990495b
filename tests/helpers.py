"""Helpers shared by the tests: the repo's paths, tiny ONNX models built with onnx.helper, and
the console script run in a subprocess as a user would run it."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
CLI = [sys.executable, "-m", "onnx_sk"]


def conv_model(
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    *,
    attrs: dict | None = None,
    dims: tuple = ("N", None, "H", "W"),
    opset: int = 17,
    extra_nodes: list | None = None,
) -> onnx.ModelProto:
    """x → Conv(weight, bias, **attrs) → y, with symbolic batch/height/width by default."""
    c_in = weight.shape[1] * (attrs or {}).get("group", 1)
    in_dims = [c_in if d is None else d for d in dims]
    inits = [numpy_helper.from_array(weight.astype(np.float32), "w")]
    inputs = ["x", "w"]
    if bias is not None:
        inits.append(numpy_helper.from_array(bias.astype(np.float32), "b"))
        inputs.append("b")
    node = helper.make_node("Conv", inputs, ["y"], name="conv", **(attrs or {}))
    graph = helper.make_graph(
        [node, *(extra_nodes or [])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_dims)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", weight.shape[0], "Ho", "Wo"])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model, full_check=True)
    return model


def run_cli(*args: str, cwd: Path | None = None, columns: int = 200) -> subprocess.CompletedProcess:
    """``onnx-sk ARGS`` in a subprocess (``python -m onnx_sk``), output captured as text, tables
    ``columns`` wide (pytest sets COLUMNS=80, which folds long cells)."""
    env = {**os.environ, "COLUMNS": str(columns)}
    return subprocess.run(
        [*CLI, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300, env=env
    )


def assert_clean_error(proc: subprocess.CompletedProcess, message: str, code: int = 2) -> None:
    """The run failed with exit ``code`` and exactly one stderr line, ``error: <message>``."""
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert lines[0] == f"error: {message}"


def digest(path: Path) -> str:
    """sha256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()
