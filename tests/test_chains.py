"""Chains with other tools that the README's workflow names, run for real on a committed model.

- onnxslim before onnx-sk (slim the exported model, then optimize) and after (slim the SK model);
- ONNX Runtime quantization of an SK model: ``quant_pre_process`` then ``quantize_dynamic`` or
  ``quantize_static`` (QDQ and QOperator formats); the int8 model runs in ONNX Runtime and its
  outputs agree with the fp32 SK model within the tolerance stated in the README;
- ORT Mobile's NNAPI / CoreML usability checker on the SK model with its batch fixed.

Every test is marked ``chain``; ``pytest -m chain`` runs only these. onnxslim comes with the
``dev`` extra; where it is not installed its tests are skipped with that reason.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers import MODELS
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

import onnx_sk

pytestmark = pytest.mark.chain

MODEL = MODELS / "resnet20_cifar.onnx"  # 21 convs, 18 replaced by default, batch dim symbolic
INPUT = "input"
BATCH = 8

# Quantized SK model vs the fp32 SK model on the same inputs (README, "Quantize and deploy"):
# cosine of the logits, max abs diff relative to the fp32 output scale, top-1 agreement.
QUANT_MIN_COSINE = 0.999
QUANT_MAX_REL_DIFF = 0.05


def _inputs(seed: int, batch: int = BATCH) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 3, 32, 32)).astype(np.float32)


def _run(path: Path, x: np.ndarray, level=ort.GraphOptimizationLevel.ORT_DISABLE_ALL) -> np.ndarray:
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {INPUT: x})[0]


def _ops(model: onnx.ModelProto | Path) -> Counter:
    if isinstance(model, Path):
        model = onnx.load(model)
    return Counter(n.op_type for n in model.graph.node)


def _convs(model: onnx.ModelProto) -> list[tuple[int, tuple[int, ...]]]:
    """(group, kernel_shape) of every Conv, in graph order."""
    rows = []
    for node in model.graph.node:
        if node.op_type == "Conv":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            rows.append((attrs.get("group", 1), tuple(attrs.get("kernel_shape", ()))))
    return rows


@pytest.fixture(scope="module")
def sk_path(tmp_path_factory) -> Path:
    """resnet20 optimized with the approximating initialiser (deployable without retraining)."""
    out = tmp_path_factory.mktemp("sk") / "resnet20_sk.onnx"
    _, report = onnx_sk.optimize(MODEL, out, seed=0, init="approx")
    assert report.totals["replaced"] == 18
    return out


# --- onnxslim ------------------------------------------------------------------------------------


def test_onnxslim_before_optimize(tmp_path):
    onnxslim = pytest.importorskip("onnxslim", reason="onnxslim (dev extra) is not installed")
    slim = tmp_path / "slim.onnx"
    onnx.save(onnxslim.slim(str(MODEL)), slim)
    x = _inputs(0)
    np.testing.assert_allclose(_run(slim, x), _run(MODEL, x), rtol=1e-5, atol=1e-5)

    _, from_slim = onnx_sk.optimize(slim, tmp_path / "slim_sk.onnx", seed=0, init="approx")
    _, direct = onnx_sk.optimize(MODEL, tmp_path / "sk.onnx", seed=0, init="approx")
    assert from_slim.totals["replaced"] == direct.totals["replaced"] == 18
    assert from_slim.totals["params_after"] == direct.totals["params_after"]
    # the same convs get the same designs and the same fitted weights
    np.testing.assert_allclose(
        _run(tmp_path / "slim_sk.onnx", x), _run(tmp_path / "sk.onnx", x), rtol=1e-4, atol=1e-5
    )


def test_onnxslim_after_optimize(sk_path, tmp_path):
    onnxslim = pytest.importorskip("onnxslim", reason="onnxslim (dev extra) is not installed")
    slim = tmp_path / "sk_slim.onnx"
    slimmed = onnxslim.slim(str(sk_path))
    onnx.save(slimmed, slim)
    onnx.checker.check_model(str(slim), full_check=True)
    sk = onnx.load(sk_path)
    # onnxslim keeps every SK stage (pointwise, depthwise, grouped) and each shuffle's Transpose
    assert _convs(slimmed) == _convs(sk)
    assert _ops(slimmed)["Transpose"] == _ops(sk)["Transpose"] == 18
    for batch in (1, BATCH):  # the batch dim stays symbolic
        x = _inputs(1, batch)
        np.testing.assert_allclose(_run(slim, x), _run(sk_path, x), rtol=1e-5, atol=1e-5)
    # every SK unit still sees all its input channels, and there is nothing left to replace
    info = onnx_sk.analyze(slim, fields=True)
    assert info["units"] and all(u["full"] for u in info["units"])
    _, again = onnx_sk.optimize(slim, tmp_path / "again.onnx", seed=0)
    assert again.totals["replaced"] == 0


# --- ONNX Runtime quantization -------------------------------------------------------------------


def _agreement(quantized: np.ndarray, reference: np.ndarray) -> tuple[float, float, float]:
    q, r = quantized.astype(np.float64), reference.astype(np.float64)
    cosine = float(q.ravel() @ r.ravel() / np.linalg.norm(q) / np.linalg.norm(r))
    rel = float(np.abs(q - r).max() / np.abs(r).max())
    top1 = float((q.argmax(axis=1) == r.argmax(axis=1)).mean())
    return cosine, rel, top1


def _check_quantized(path: Path, sk_path: Path) -> None:
    """Runs in ORT with optimisations off and at the default (all) level; agrees with fp32 SK."""
    onnx.checker.check_model(str(path), full_check=True)
    x = _inputs(2)
    reference = _run(sk_path, x)
    for level in (
        ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    ):
        cosine, rel, top1 = _agreement(_run(path, x, level), reference)
        assert cosine >= QUANT_MIN_COSINE, (level, cosine)
        assert rel <= QUANT_MAX_REL_DIFF, (level, rel)
        assert top1 == 1.0, (level, top1)


@pytest.fixture(scope="module")
def pre_path(sk_path) -> Path:
    out = sk_path.with_name("resnet20_sk_pre.onnx")
    quant_pre_process(str(sk_path), str(out))
    onnx.checker.check_model(str(out), full_check=True)
    return out


def test_ort_quantize_dynamic(sk_path, pre_path, tmp_path):
    out = tmp_path / "sk_int8_dynamic.onnx"
    quantize_dynamic(str(pre_path), str(out), weight_type=QuantType.QInt8)
    ops = _ops(out)
    # every conv, SK stages included (grouped and depthwise), runs as ConvInteger
    assert ops["ConvInteger"] == len(_convs(onnx.load(sk_path))) == 57 and ops["Conv"] == 0
    _check_quantized(out, sk_path)


class _Calibration(CalibrationDataReader):
    """``CalibrationDataReader``: a few seeded random inputs (no data set ships with the repo)."""

    def __init__(self, n: int = 8) -> None:
        self._batches = iter({INPUT: _inputs(100 + i, 1)} for i in range(n))

    def get_next(self) -> dict | None:
        return next(self._batches, None)


@pytest.mark.parametrize("fmt", ["QDQ", "QOperator"])
def test_ort_quantize_static(sk_path, pre_path, tmp_path, fmt):
    out = tmp_path / f"sk_int8_static_{fmt}.onnx"
    quantize_static(
        str(pre_path), str(out), _Calibration(), quant_format=QuantFormat[fmt], per_channel=True
    )
    ops = _ops(out)
    if fmt == "QDQ":
        assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0
    else:
        assert ops["QLinearConv"] == 57 and ops["Conv"] == 0
    _check_quantized(out, sk_path)


def _mobile_partitions(path: Path, tmp_path: Path) -> dict[str, str]:
    """ORT's mobile usability checker on ``path`` with its batch fixed at 1 (NNAPI and CoreML
    need static shapes): per EP, its ``N partitions with a total of X/Y nodes`` line."""
    fixed = tmp_path / f"{path.stem}_fixed.onnx"
    subprocess.run(
        [sys.executable, "-m", "onnxruntime.tools.make_dynamic_shape_fixed",
         "--dim_param", "batch", "--dim_value", "1", str(path), str(fixed)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "onnxruntime.tools.check_onnx_model_mobile_usability", str(fixed)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    found, ep = {}, None
    for line in (proc.stdout + proc.stderr).splitlines():
        if m := re.search(r"Checking (NNAPI|CoreML NeuralNetwork|CoreML MLProgram)$", line):
            ep = m.group(1)
        elif ep and (m := re.search(r"(\d+ partitions with a total of \d+/\d+ nodes)", line)):
            found.setdefault(ep, m.group(1))
    return found


def test_sk_model_runs_whole_on_nnapi_and_coreml_as_the_original_does(sk_path, tmp_path):
    """ORT Mobile's usability checker: with the batch fixed, the SK model (grouped and depthwise
    convs, shuffles as Reshape/Transpose) is one partition on NNAPI and CoreML NeuralNetwork, as
    the original is; CoreML MLProgram splits both at the classifier's Flatten only."""
    original = _mobile_partitions(MODEL, tmp_path)
    sk = _mobile_partitions(sk_path, tmp_path)
    nodes = len(onnx.load(sk_path).graph.node)
    assert (
        original["NNAPI"]
        == original["CoreML NeuralNetwork"]
        == ("1 partitions with a total of 52/52 nodes")
    )
    for ep in ("NNAPI", "CoreML NeuralNetwork"):
        assert sk[ep] == f"1 partitions with a total of {nodes}/{nodes} nodes", (ep, sk)
    assert sk["CoreML MLProgram"] == f"2 partitions with a total of {nodes - 1}/{nodes} nodes"
