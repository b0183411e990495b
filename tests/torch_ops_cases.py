"""Differential checks of OnnxModule against ONNX Runtime on small hand-built graphs (shared helper).

``check`` builds a graph of ``nodes`` whose inputs are the given arrays (graph inputs with symbolic
dims, so the same model runs at every shape in ``shapes``) and constants (initializers), runs it
in ONNX Runtime with graph optimisations disabled and in ``OnnxModule``, and compares every output.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from onnx_sk.runtime.session import session
from onnx_sk.training.module import OnnxModule

RNG = np.random.default_rng(0)

_ELEM = {
    np.dtype(np.float32): onnx.TensorProto.FLOAT,
    np.dtype(np.float64): onnx.TensorProto.DOUBLE,
    np.dtype(np.int64): onnx.TensorProto.INT64,
    np.dtype(np.int32): onnx.TensorProto.INT32,
    np.dtype(np.bool_): onnx.TensorProto.BOOL,
}


def randn(*shape: int, low: float | None = None, high: float | None = None) -> np.ndarray:
    if low is not None:
        return RNG.uniform(low, high, shape).astype(np.float32)
    return RNG.standard_normal(shape).astype(np.float32)


def model_of(
    nodes: list[onnx.NodeProto],
    inputs: dict[str, np.ndarray],
    consts: dict[str, np.ndarray] | None = None,
    outputs: list[str] | None = None,
    opset: int = 17,
    out_types: dict[str, int] | None = None,
) -> onnx.ModelProto:
    """A model: ``inputs`` as graph inputs with symbolic dims, ``consts`` as initializers."""
    ins = [
        helper.make_tensor_value_info(k, _ELEM[v.dtype], [f"{k}_{i}" for i in range(v.ndim)])
        for k, v in inputs.items()
    ]
    outputs = outputs or [nodes[-1].output[0]]
    outs = [
        helper.make_tensor_value_info(o, (out_types or {}).get(o, onnx.TensorProto.FLOAT), None)
        for o in outputs
    ]
    inits = [numpy_helper.from_array(v, k) for k, v in (consts or {}).items()]
    graph = helper.make_graph(nodes, "g", ins, outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 10)
    return model


def compare(model: onnx.ModelProto, feeds: dict[str, np.ndarray], tol: float = 1e-5) -> None:
    want = session(model).run(None, feeds)
    module = OnnxModule(model).eval()
    with torch.no_grad():
        got = module(*[torch.from_numpy(v) for v in feeds.values()])
    got = list(got) if isinstance(got, tuple) else [got]
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        g = g.numpy() if isinstance(g, torch.Tensor) else np.asarray(g)
        assert g.shape == w.shape, (g.shape, w.shape)
        if w.dtype.kind in "fc":
            scale = float(np.abs(w).max()) if w.size else 1.0
            np.testing.assert_allclose(g, w, rtol=tol, atol=tol * max(scale, 1e-3))
        else:
            np.testing.assert_array_equal(g, w)


def check(
    nodes: list[onnx.NodeProto],
    inputs: dict[str, np.ndarray],
    consts: dict[str, np.ndarray] | None = None,
    *,
    opset: int = 17,
    outputs: list[str] | None = None,
    out_types: dict[str, int] | None = None,
    shapes: list[dict[str, np.ndarray]] | None = None,
    tol: float = 1e-5,
) -> None:
    """ORT and OnnxModule agree on ``inputs`` and on each further feed in ``shapes``."""
    model = model_of(nodes, inputs, consts, outputs, opset, out_types)
    for feeds in [inputs, *(shapes or [])]:
        compare(model, feeds, tol)


def node(op_type: str, inputs: list[str], outputs: list[str] | None = None, **attrs):
    return helper.make_node(
        op_type,
        inputs,
        outputs or ["y"],
        name=f"{op_type.lower()}_{(outputs or ['y'])[0]}",
        **attrs,
    )
