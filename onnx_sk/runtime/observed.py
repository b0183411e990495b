"""Tensor shapes observed by running the model once, where ONNX shape inference stops.

ONNX shape inference cannot follow shape arithmetic it does not propagate: torch exports
``chunk`` (the split of a YOLOv8 C2f block) as ``Shape → Gather → Div → Slice``, and inference
stops there, so every conv after the first such block has an unknown input size (measured on a
YOLOv8s-style export: 3 of 63 convs sized). When every graph input has a concrete shape (the
model's own static dims, batch 1 for a symbolic batch, or ``--input-shape``), one run of ONNX
Runtime on seeded inputs at those dims gives the real shapes: ``observed_shapes`` returns them
for the wanted tensors, or nothing when the model cannot run (the caller keeps what inference
said).
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import helper

from onnx_sk.graph.index import ConstantIndex
from onnx_sk.graph.shape_arith import infer_folded
from onnx_sk.graph.shapes import Shape
from onnx_sk.graph.tensors import with_outputs
from onnx_sk.runtime.feeds import random_inputs, real_inputs
from onnx_sk.runtime.session import session

log = logging.getLogger(__name__)


def concrete_inputs(
    model: onnx.ModelProto, given: dict[str, tuple[int, ...]]
) -> dict[str, tuple[int, ...]] | None:
    """Every real input's concrete dims (``given`` first, else the model's), or None when one
    has a symbolic or unknown dim."""
    out = {}
    for vi in real_inputs(model):
        if vi.name in given:
            out[vi.name] = tuple(given[vi.name])
            continue
        t = vi.type.tensor_type
        if not t.HasField("shape"):
            return None
        dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        if any(d is None or d <= 0 for d in dims):
            return None
        out[vi.name] = tuple(int(d) for d in dims)  # type: ignore[arg-type]
    return out


def observed_shapes(
    model: onnx.ModelProto,
    given: dict[str, tuple[int, ...]],
    names: list[str],
    elem_types: dict[str, int] | None = None,
    seed: int = 0,
) -> dict[str, Shape]:
    """The shapes of ``names`` (of ONNX element types ``elem_types``, float32 where not given)
    in one ONNX Runtime run at concrete input dims (module docstring); empty when an input has
    no concrete dims or the model does not run."""
    dims = concrete_inputs(model, given)
    if dims is None or not names:
        return {}
    inputs = {vi.name for vi in real_inputs(model)}
    wanted = [n for n in dict.fromkeys(names) if n and n not in inputs]
    try:
        probe, _ = with_outputs(model, wanted, elem_types)
        feeds = random_inputs(model, np.random.default_rng(seed), dims)
        sess = session(probe, arena=False)
        got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds), strict=True))
    except Exception as exc:  # noqa: BLE001 (an optional refinement: inference's shapes stand)
        log.info("shapes not observed: %s", (str(exc).splitlines() or [""])[0])
        return {}
    out: dict[str, Shape] = {n: tuple(int(d) for d in np.shape(got[n])) for n in wanted if n in got}
    out.update({n: dims[n] for n in names if n in dims})
    return out


def conv_shapes(model: onnx.ModelProto, given: dict[str, tuple[int, ...]]) -> dict[str, Shape]:
    """ONNX shape inference at ``given`` input dims (past shape arithmetic on static dims:
    :func:`onnx_sk.graph.shape_arith.infer_folded`), completed by one ONNX Runtime run for the
    inputs and outputs of the main-graph convs it left unsized (module docstring)."""
    shapes = infer_folded(model, given)
    consts = ConstantIndex(model.graph)
    names: list[str] = []
    types: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type != "Conv" or len(node.input) < 2:
            continue
        shape = shapes.get(node.input[0])
        if shape is not None and None not in shape:
            continue
        dtype = consts.dtype(node.input[1]) if node.input[1] in consts else None
        for t in (node.input[0], node.output[0]):
            names.append(t)
            if dtype is not None:
                types[t] = helper.np_dtype_to_tensor_dtype(dtype)
    if names:
        shapes.update(observed_shapes(model, given, names, types))
    return shapes
