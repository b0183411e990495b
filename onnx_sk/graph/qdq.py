"""int8 convs in QDQ form: QuantizeLinear/DequantizeLinear around the convs ONNX Runtime fuses.

ONNX Runtime's CPU provider turns ``DQ(x) , DQ(w) , DQ(b) → Conv → Q(y)`` into one int8
``QLinearConv`` (graph optimisations on), and drops ``DQ → Reshape/Transpose/Gather → Q`` pairs
whose scales agree (the data-movement op then runs on uint8). So an int8 conv here is written as:

- its activations (input and output) uint8, asymmetric: for a calibrated range ``[lo, hi]``
  (widened to hold 0) ``scale = (hi - lo) / 255``, ``zero_point = round(-lo / scale)``
  (ONNX Runtime's default for x86 CPUs, U8S8);
- its weights int8 per output channel, symmetric: ``scale[o] = max|w[o]| / 127``,
  ``w_q = round(w / scale)`` in ``[-127, 127]``, dequantized on axis 0;
- its bias int32: ``b_q = round(b / (x_scale · scale[o]))``, zero point 0 (what the fusion takes);
- a ``Gemm`` (a fully connected layer, ``int8_gemms``) the same way, per output column: ONNX
  Runtime fuses it into ``QGemm``;
- an output read only by a ``Relu``, or by a ``Clip`` from 0 (ReLU6), is quantized after it
  (range ``[0, hi]``, within the clip's): ONNX Runtime folds it into the quantization;
- a data-movement op (``MOVES``, the channel shuffles of the SK designs) marked int8 gets a
  Q/DQ pair on its output with its input's scale;
- an ``Add`` marked int8 (``with_int8_joins``: both inputs quantized anyway) gets its inputs
  read through their DQs and its output (or its only reader Relu's) quantized: ``QLinearAdd``.

Every tensor read or written by a marked node gets one ``Q → DQ`` pair. A tensor a marked node
writes keeps its name as the DQ's output (the writer's output is renamed), so consumers and
graph outputs never move; a tensor written elsewhere (a graph input, an fp32 node) gets the pair
beside it and only the marked nodes read the DQ's output. The graph stays topologically sorted
(each pair follows its tensor's writer). Per-channel DequantizeLinear needs opset >= 13.
"""

from __future__ import annotations

from collections.abc import Iterable, Set
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnx_sk.graph.build import drop_unused_constants
from onnx_sk.graph.convs import TRAINED, ConvSite
from onnx_sk.graph.index import ConstantIndex, NameAllocator, graph_names, training_bound

#: data-movement ops whose output range is their input's (channel shuffles)
MOVES = ("Reshape", "Transpose", "Gather", "Identity")
#: element-wise ops of two activations ONNX Runtime fuses in QDQ form (QLinearAdd)
JOINS = ("Add",)
#: ops with constant weights written in int8 (ONNX Runtime's QLinearConv, QGemm)
WEIGHTED = ("Conv", "Gemm")
#: the lowest default-domain opset with per-axis DequantizeLinear
MIN_OPSET = 13
QMAX_W = 127


@dataclass(frozen=True)
class ActParams:
    """uint8 quantisation of an activation: ``x ≈ (q - zero_point) · scale``."""

    scale: float
    zero_point: int


def act_params(lo: float, hi: float) -> ActParams:
    """uint8 asymmetric parameters for the range ``[lo, hi]`` (widened to hold 0)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if not np.isfinite(lo) or not np.isfinite(hi) or hi - lo <= 0:
        return ActParams(1.0, 0)
    scale = float(np.float32((hi - lo) / 255.0))
    return ActParams(scale, int(np.clip(round(-lo / scale), 0, 255)))


def weight_params(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 per-output-channel symmetric quantisation of ``w  # [c_out, ...]``: (w_q, scale)."""
    peak = np.abs(w.reshape(w.shape[0], -1)).max(axis=1).astype(np.float32)
    scale = np.where(peak > 0, peak / QMAX_W, 1.0).astype(np.float32)
    shape = (-1,) + (1,) * (w.ndim - 1)
    q = np.clip(np.round(w / scale.reshape(shape)), -QMAX_W, QMAX_W).astype(np.int8)
    return q, scale


def why_not_int8(site: ConvSite) -> str | None:
    """Why this conv cannot be written in int8 QDQ form here, or None."""
    if site.scope:
        return f"inside {site.scope}"
    spec = site.spec
    if spec is None or spec.spatial_rank != 2:
        return "not a 2-D convolution with known weights"
    if not site.weight_is_constant or (site.bias_name and site.bias_name not in site.consts):
        return "weights or bias not constant"
    if site.reason == TRAINED:
        return TRAINED
    if site.consts.dtype(site.node.input[1]) != np.float32:
        return "weights are not float32"
    if not all(_finite(site.consts.get(t)) for t in (site.node.input[1], site.bias_name) if t):
        return NOT_FINITE
    return None


#: int8 cannot hold a NaN or an infinity (the scale of its channel would be NaN)
NOT_FINITE = "weights or bias hold NaN or Inf values"


def _finite(value: np.ndarray | None) -> bool:
    return value is None or bool(np.isfinite(value).all())


def why_not_int8_gemm(
    node: onnx.NodeProto, consts: ConstantIndex, trained: Set[str] = frozenset()
) -> str | None:
    """Why this main-graph ``Gemm`` (a fully connected layer) cannot be written in int8 QDQ
    form, or None: it needs ``alpha = beta = 1``, ``transA = 0``, a constant float32 2-D weight
    and a bias that is absent or a constant float32 vector of its output width, neither of them
    one the model's training_info updates (``trained``: :func:`~onnx_sk.graph.index.training_bound`)."""
    if any(t in trained for t in node.input[1:3]):
        return TRAINED
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0 or attrs.get("transA", 0):
        return "alpha, beta or transA not the defaults"
    w = consts.get(node.input[1]) if len(node.input) > 1 else None
    if w is None or w.dtype != np.float32 or w.ndim != 2:
        return "weights not a constant float32 matrix"
    if len(node.input) > 2 and node.input[2]:
        b = consts.get(node.input[2])
        width = w.shape[0] if attrs.get("transB", 0) else w.shape[1]
        if b is None or b.dtype != np.float32 or b.shape != (width,):
            return "bias not a constant float32 vector of the output width"
        if not _finite(b):
            return NOT_FINITE
    if not _finite(w):
        return NOT_FINITE
    return None


def int8_gemms(model: onnx.ModelProto) -> dict[str, str]:
    """Output → name of every main-graph ``Gemm`` that can be written in int8
    (:func:`why_not_int8_gemm`; the model's training_info counts)."""
    consts, trained = ConstantIndex(model.graph), training_bound(model)
    return {
        n.output[0]: n.name or n.output[0]
        for n in model.graph.node
        if n.op_type == "Gemm" and why_not_int8_gemm(n, consts, trained) is None
    }


def opset_of(model: onnx.ModelProto) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def activation_tensors(graph: onnx.GraphProto, marked: Iterable[str]) -> list[str]:
    """The tensors whose ranges the QDQ form needs (:func:`insert_qdq`), in graph order: the
    inputs and outputs of the marked Conv nodes (named by their first output), the output of a
    ``Relu`` that is an int8 conv's only reader, and the input of a marked data-movement op."""
    marked = set(marked)
    readers = _readers(graph)
    outputs = {o.name for o in graph.output}
    consts = ConstantIndex(graph)
    need: dict[str, None] = {}
    for node in graph.node:
        if node.output[0] not in marked:
            continue
        for t in _activations(node):
            need[t] = None
        if node.op_type in JOINS or node.op_type in WEIGHTED:
            need[_quantized_output(node, readers, outputs, consts)] = None
    return list(need)


def _activations(node: onnx.NodeProto) -> list[str]:
    """The activation inputs of a marked node (both of an Add; the first of the others)."""
    return list(node.input[:2]) if node.op_type in JOINS else [node.input[0]]


def with_int8_joins(graph: onnx.GraphProto, marked: Iterable[str]) -> list[str]:
    """``marked`` and every ``Add`` both of whose inputs the QDQ form quantizes anyway (inputs or
    quantized outputs of marked nodes, or of such Adds, in graph order): written in int8 too
    (ONNX Runtime's ``QLinearAdd``), it saves the two DequantizeLinear and the QuantizeLinear
    its int8 neighbours would put around an fp32 Add."""
    out = list(marked)
    readers = _readers(graph)
    outputs = {o.name for o in graph.output}
    consts = ConstantIndex(graph)
    quantized = set(activation_tensors(graph, out))
    for node in graph.node:
        if node.op_type in JOINS and len(node.input) == 2 and node.output[0] not in out:
            if all(t in quantized for t in node.input):
                out.append(node.output[0])
                quantized.add(_quantized_output(node, readers, outputs, consts))
    return out


def _readers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for t in dict.fromkeys(node.input):
            if t:
                readers.setdefault(t, []).append(node)
    return readers


def _quantized_output(
    conv: onnx.NodeProto,
    readers: dict[str, list[onnx.NodeProto]],
    outputs: set[str],
    consts: ConstantIndex | None = None,
) -> str:
    """The tensor whose Q follows the conv: the conv's output, or its only reader's if a Relu or
    a Clip from 0 (:func:`_folds`)."""
    y = conv.output[0]
    after = readers.get(y, [])
    if y not in outputs and len(after) == 1 and _folds(after[0], consts):
        return after[0].output[0]
    return y


def _folds(node: onnx.NodeProto, consts: ConstantIndex | None) -> bool:
    """A ``Relu``, or a ``Clip`` from 0 (ReLU6): ONNX Runtime folds it into the Q that follows
    it (its range ``[0, hi]`` lies within the clip's)."""
    if node.op_type == "Relu":
        return True
    if node.op_type != "Clip" or consts is None:
        return False
    low: object = None
    for a in node.attribute:  # opset < 11: min/max attributes
        if a.name == "min":
            low = a.f
    if len(node.input) > 1 and node.input[1]:
        value = consts.get(node.input[1])
        low = None if value is None or value.size != 1 else float(value.reshape(-1)[0])
    return low == 0.0


def insert_qdq(
    graph: onnx.GraphProto, marked: Iterable[str], ranges: dict[str, tuple[float, float]]
) -> int:
    """Write the marked nodes (by first output name: Convs and ``MOVES``) in QDQ form, in place
    (module docstring); ``ranges``: tensor → (lo, hi) for every :func:`activation_tensors`
    tensor. Returns the number of Q/DQ pairs inserted."""
    marked = set(marked)
    consts = ConstantIndex(graph)
    names = NameAllocator(graph_names(graph))
    readers = _readers(graph)
    outputs = {o.name for o in graph.output}
    nodes = list(graph.node)
    writer = {o: n for n in nodes for o in n.output if o}
    params: dict[str, ActParams] = {}
    written_int8: dict[str, onnx.NodeProto] = {}  # tensor → the int8 node (or Relu) writing it
    int8_nodes = [n for n in nodes if n.output[0] in marked]  # before any output is renamed
    for node in int8_nodes:
        x = node.input[0]
        for t in _activations(node):
            src = ranges.get(t)
            if src is None:  # a marked move after another marked node: the range it passes on
                assert t in params, f"no range for {t}"
            else:
                params.setdefault(t, act_params(*src))
        if node.op_type in WEIGHTED or node.op_type in JOINS:
            y = _quantized_output(node, readers, outputs, consts)
            params[y] = act_params(*ranges[y])
            written_int8[y] = writer[y]
        else:  # a move: same scale as its input
            params[node.output[0]] = params[x]
            written_int8[node.output[0]] = node
    inits: list[onnx.TensorProto] = []
    after: dict[int, list[onnx.NodeProto]] = {}  # id(writer) (0: graph inputs) → nodes after it
    dq_of: dict[str, str] = {}  # tensor written outside the int8 nodes → its DQ output
    for t, p in params.items():
        base = t
        scale, zp = names.fresh(f"{base}/q/scale"), names.fresh(f"{base}/q/zero_point")
        inits += [
            numpy_helper.from_array(np.array(p.scale, np.float32), scale),
            numpy_helper.from_array(np.array(p.zero_point, np.uint8), zp),
        ]
        q = names.fresh(f"{base}/q")
        w = written_int8.get(t)
        if w is not None:  # the writer's output renamed, the DQ writes t
            raw = names.fresh(f"{base}/f32")
            w.output[list(w.output).index(t)] = raw
            pair = [
                helper.make_node("QuantizeLinear", [raw, scale, zp], [q], names.fresh(f"{base}/Q")),
                helper.make_node(
                    "DequantizeLinear", [q, scale, zp], [t], names.fresh(f"{base}/DQ")
                ),
            ]
            after.setdefault(id(w), []).extend(pair)
            continue
        dq = names.fresh(f"{base}/dq")
        dq_of[t] = dq
        pair = [
            helper.make_node("QuantizeLinear", [t, scale, zp], [q], names.fresh(f"{base}/Q")),
            helper.make_node("DequantizeLinear", [q, scale, zp], [dq], names.fresh(f"{base}/DQ")),
        ]
        src_node = writer.get(t)
        after.setdefault(id(src_node) if src_node is not None else 0, []).extend(pair)
    old_weights: set[str] = set()
    for node in int8_nodes:
        x = node.input[0]
        for k, t in enumerate(_activations(node)):
            node.input[k] = dq_of.get(t, t)
        if node.op_type in WEIGHTED:
            old_weights.update(t for t in node.input[1:3] if t)
            _quantize_weights(node, consts, params[x], names, inits, after)
    order: list[onnx.NodeProto] = list(after.get(0, []))
    for node in nodes:
        order.append(node)
        order.extend(after.get(id(node), []))
    del graph.node[:]
    graph.node.extend(order)
    graph.initializer.extend(inits)
    drop_unused_constants(graph, old_weights)
    return len(params)


def _quantize_weights(
    conv: onnx.NodeProto,
    consts: ConstantIndex,
    x: ActParams,
    names: NameAllocator,
    inits: list[onnx.TensorProto],
    after: dict[int, list[onnx.NodeProto]],
) -> None:
    """The conv's weight (and bias) as int8 (int32) constants read through DequantizeLinear;
    a ``Gemm``'s per output column (axis 0 of its weight with ``transB``, else axis 1)."""
    w = consts.get(conv.input[1])
    assert w is not None and w.dtype == np.float32  # why_not_int8 checked it
    axis = 0
    if conv.op_type == "Gemm":
        axis = 0 if any(a.name == "transB" and a.i for a in conv.attribute) else 1
    if axis:  # [K, N]: quantized as its transpose, per N
        w_q, w_scale = weight_params(np.ascontiguousarray(w.T))
        w_q = np.ascontiguousarray(w_q.T)
    else:
        w_q, w_scale = weight_params(w)  # [c_out, c_in // group, kh, kw], [c_out]
    base = conv.name or conv.output[0]
    n = {k: names.fresh(f"{base}/int8/{k}") for k in ("w", "w_scale", "w_zero", "w_dq")}
    inits += [
        numpy_helper.from_array(w_q, n["w"]),
        numpy_helper.from_array(w_scale, n["w_scale"]),
        numpy_helper.from_array(np.zeros_like(w_q, shape=(w_scale.shape[0],)), n["w_zero"]),
    ]
    dqs = [
        helper.make_node(
            "DequantizeLinear", [n["w"], n["w_scale"], n["w_zero"]], [n["w_dq"]],
            names.fresh(f"{base}/int8/w_DQ"), axis=axis,
        )
    ]  # fmt: skip
    conv.input[1] = n["w_dq"]
    if len(conv.input) > 2 and conv.input[2]:
        b = consts.get(conv.input[2])
        assert b is not None
        b_scale = (np.float32(x.scale) * w_scale).astype(np.float32)
        b_q = np.clip(np.round(b / b_scale), -(2**31), 2**31 - 1).astype(np.int32)
        m = {k: names.fresh(f"{base}/int8/{k}") for k in ("b", "b_scale", "b_zero", "b_dq")}
        inits += [
            numpy_helper.from_array(b_q, m["b"]),
            numpy_helper.from_array(b_scale, m["b_scale"]),
            numpy_helper.from_array(np.zeros_like(b_q), m["b_zero"]),
        ]
        dqs.append(
            helper.make_node(
                "DequantizeLinear", [m["b"], m["b_scale"], m["b_zero"]], [m["b_dq"]],
                names.fresh(f"{base}/int8/b_DQ"), axis=0,
            )
        )  # fmt: skip
        conv.input[2] = m["b_dq"]
    after.setdefault(0, []).extend(dqs)
