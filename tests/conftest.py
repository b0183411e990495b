"""Shared fixtures: tiny ONNX models built with onnx.helper, and the repo's paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"


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


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
