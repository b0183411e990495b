"""The committed trained detector (``bench/train_detector.py``) through the torch side: both torch
exports (a Slice/Concat CSP block, nearest and bilinear Resize, a Split head) run as OnnxModule
exactly as in ONNX Runtime, before and after ``optimize``, and distill trains the optimized model
closer to the original."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import MODELS

import onnx_sk

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

from torch_ops_cases import compare  # noqa: E402

EXPORTS = [MODELS / "trained" / "detector_ts.onnx", MODELS / "trained" / "detector_dynamo.onnx"]


def _scenes(n: int, seed: int) -> np.ndarray:
    """Piecewise-constant images in [0, 1]: random 12×12 blocks, like flat shapes on a background."""
    x = np.random.default_rng(seed).uniform(0, 1, (n, 3, 8, 8)).astype(np.float32)
    return np.repeat(np.repeat(x, 12, axis=2), 12, axis=3)


@pytest.mark.parametrize("path", EXPORTS, ids=["ts", "dynamo"])
def test_export_and_optimized_run_as_in_onnxruntime(path, tmp_path):
    model = onnx.load(path)
    ops = {n.op_type for n in model.graph.node}
    assert {"Resize", "Split", "Slice", "Concat"} <= ops
    feeds = {"input": _scenes(3, 0)}
    compare(model, feeds, tol=1e-4)
    out = tmp_path / "sk.onnx"
    onnx_sk.optimize(path, out, init="he")
    compare(onnx.load(out), feeds, tol=1e-4)


def test_distill_brings_the_optimized_detector_closer(tmp_path):
    teacher = EXPORTS[0]
    student = tmp_path / "sk.onnx"
    onnx_sk.optimize(teacher, student, init="approx")
    np.savez(tmp_path / "d.npz", input=_scenes(32, 1))
    r = onnx_sk.distill(teacher, student, tmp_path / "o.onnx", tmp_path / "d.npz", epochs=3)
    assert r.holdout_loss_after < r.holdout_loss_before
    assert [f.name for f in r.after] == ["heatmap", "size", "offset"]
