"""The information field read off an ONNX graph: the path between two tensors, and conv units.

``field_between(graph, src, dst)`` walks back from tensor ``dst`` along each node's data input
until it reaches tensor ``src``, then composes, from ``src`` forward, the field of every node
(:mod:`onnx_sk.maths.infofield` gives the algebra):

- ``Conv``: ``[c_out, c_in // group, *kernel_shape]`` from the weight's shape (initializer,
  ``Constant`` node or inferred shape), ``group``, ``strides``, ``dilations``. Structural: a conv
  whose weight blocks are all zero still counts its full group structure.
- channel permutations: a run of ``Reshape``/``Transpose`` nodes (ShuffleNet's
  Reshape(N, g, C/g, H, W) → Transpose(0, 2, 1, 3, 4) → Reshape(N, C, H, W)) is simulated on an
  array of (channel, position) indices, with ONNX's ``0`` (copy, unless ``allowzero=1``) and
  ``-1`` (infer) shape entries; it must leave every position in place and permute channels only.
  ``Gather`` on axis 1 with constant 1-D indices selects channels (output ``o`` ← ``indices[o]``).
- ``MaxPool``/``AveragePool``/``LpPool``: a per-channel spatial window (a depthwise field).
- ops that never mix channels: unary activations, ``BatchNormalization``, ``Identity``,
  ``Dropout``, ``Cast``, and elementwise binary ops whose other inputs are constants.

Anything else on the path raises :class:`FieldPathError` naming the node and its op.

``unit_fields(model)`` finds the maximal chains of convs joined only by permutations, ``Gather``
and per-channel ops, through tensors with a single consumer (a ShuffleNet unit
PWG → shuffle → DW → PWG is one chain), and reports each chain's field size and whether its
channel field is full (every output depends on every input of the chain).

This module uses ``onnx`` and numpy only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx

from onnx_sk.errors import UserError
from onnx_sk.graph.index import GraphIndex
from onnx_sk.graph.shapes import Shape, known_dims
from onnx_sk.maths.infofield import Field

UNARY = frozenset(
    {
        "BatchNormalization", "Relu", "Identity", "LeakyRelu", "PRelu", "Sigmoid", "Tanh",
        "Clip", "HardSigmoid", "HardSwish", "Elu", "Selu", "Celu", "Softplus", "Softsign",
        "Mish", "Gelu", "Dropout", "Cast", "Neg", "Abs", "Exp", "Log", "Sqrt", "Reciprocal",
        "Floor", "Ceil", "Round", "ThresholdedRelu", "Erf", "QuantizeLinear",
        "DequantizeLinear", "Swish",
    }
)  # fmt: skip
BINARY = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean"})
POOLS = frozenset({"MaxPool", "AveragePool", "LpPool"})
PERMUTES = frozenset({"Reshape", "Transpose"})


class FieldPathError(UserError):
    """The path between two tensors holds an op whose field onnx-sk cannot read."""


def _attr(node: onnx.NodeProto, name: str, default: object = None) -> Any:
    """Attribute ``name`` of ``node`` as onnx decodes it, or ``default`` when absent. Any: the
    value's type (int, float, bytes, list, tensor…) is whatever the model's attribute holds."""
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _int_attr(node: onnx.NodeProto, name: str, default: int) -> int:
    return int(_attr(node, name, default))


def _ints_attr(node: onnx.NodeProto, name: str) -> tuple[int, ...]:
    """An ints attribute (``strides``, ``kernel_shape``…); ``()`` when absent or empty."""
    return tuple(_attr(node, name) or ())


def _node_label(node: onnx.NodeProto) -> str:
    return f"{node.name or node.output[0]!r} ({node.op_type})"


class _Index(GraphIndex):
    """What a walk needs of a graph: the shared :class:`GraphIndex` (producers, consumers,
    constants, outputs) and the static shapes of the graph's value infos."""

    def __init__(
        self, graph: onnx.GraphProto, value_infos: Sequence[onnx.ValueInfoProto] = ()
    ) -> None:
        super().__init__(graph)
        self._shapes: dict[str, Shape] = {}
        for vi in (*graph.input, *graph.output, *graph.value_info, *value_infos):
            t = vi.type.tensor_type
            if t.HasField("shape"):
                self._shapes[vi.name] = tuple(
                    d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim
                )

    @property
    def steps(self) -> int:
        """More steps than any walk along the graph's nodes takes without a cycle."""
        return len(self.graph.node) + 1

    def shape(self, tensor: str) -> Shape | None:
        """The static shape of ``tensor``: a constant's own dims (its header), else the value
        info's."""
        dims = self.constants.dims(tensor)
        return dims if dims is not None else self._shapes.get(tensor)

    def data_input(self, node: onnx.NodeProto) -> str | None:
        """The one non-constant input a supported node reads, or None if unsupported."""
        op = node.op_type
        if op in ("Conv", "Gather") or op in UNARY or op in POOLS or op in PERMUTES:
            return node.input[0]
        if op in BINARY:
            live = [i for i in node.input if i and i not in self.constants]
            return live[0] if len(live) == 1 else None
        return None


def _shapes_of(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    """Inferred value infos of a bare graph (best effort; an empty list when inference fails)."""
    try:
        model = onnx.helper.make_model(graph)
        return list(onnx.shape_inference.infer_shapes(model).graph.value_info)
    except Exception:  # inference is a convenience here: static shapes help, none are required
        return []


def field_between(graph: onnx.GraphProto, src: str, dst: str) -> Field:
    """Information field of tensor ``dst`` with respect to tensor ``src`` (``src`` upstream)."""
    index = _Index(graph, _shapes_of(graph))
    return _field_between(index, src, dst)


def _path(index: _Index, src: str, dst: str) -> list[onnx.NodeProto]:
    nodes: list[onnx.NodeProto] = []
    tensor = dst
    while tensor != src:
        node = index.producer(tensor)
        if node is None:
            raise FieldPathError(
                f"no path from tensor {src!r} to {dst!r}: {tensor!r} has no producer"
            )
        data = index.data_input(node)
        if data is None:
            raise FieldPathError(
                f"node {_node_label(node)} on the path {src!r} → {dst!r} may mix channels; "
                f"onnx-sk reads only Conv, Reshape/Transpose permutations, Gather(axis=1), pools "
                f"and per-channel ops"
            )
        nodes.append(node)
        if len(nodes) > index.steps:
            raise FieldPathError(f"cycle on the path {src!r} → {dst!r}")
        tensor = data
    return nodes[::-1]


def _src_channels(index: _Index, src: str, nodes: list[onnx.NodeProto]) -> tuple[int, int]:
    """(channels, spatial rank) at ``src``: its static shape, or the first op that tells."""
    shape = index.shape(src)
    rank = len(shape) - 2 if shape and len(shape) >= 3 else None
    if shape and len(shape) >= 2 and shape[1]:
        return shape[1], rank if rank is not None else 2
    for node in nodes:
        if node.op_type == "Conv":
            w = _weight_shape(index, node)
            return w[1] * _int_attr(node, "group", 1), rank or len(w) - 2
        if node.op_type == "BatchNormalization" and (scale := index.shape(node.input[1])):
            if scale[0] is not None:  # a symbolic scale length tells nothing: read on
                return scale[0], rank or 2
        if node.op_type in PERMUTES or node.op_type == "Gather":
            break
    raise FieldPathError(f"cannot tell the channel count of tensor {src!r}; give it a static shape")


def _weight_shape(index: _Index, node: onnx.NodeProto) -> tuple[int, ...]:
    shape = known_dims(index.shape(node.input[1]))
    if not shape:
        raise FieldPathError(
            f"conv {_node_label(node)}: weight {node.input[1]!r} has no static shape"
        )
    return shape  # [c_out, c_in // group, *kernel_shape]


def _field_between(index: _Index, src: str, dst: str) -> Field:
    nodes = _path(index, src, dst)
    channels, rank = _src_channels(index, src, nodes)
    field = Field.identity(channels, rank)
    i = 0
    while i < len(nodes):
        node = nodes[i]
        op = node.op_type
        if op in PERMUTES:
            j = i
            while j < len(nodes) and nodes[j].op_type in PERMUTES:
                j += 1
            perm = _simulate_permutation(index, nodes[i:j], field.c_out, field.rank)
            field = field.then_permutation(perm)
            i = j
            continue
        if op == "Conv":
            field = field.then(_conv_field(index, node, field.c_out))
        elif op in POOLS:
            field = field.then(_pool_field(node, field.c_out))
        elif op == "Gather":
            field = field.then_permutation(_gather_indices(index, node, field.c_out))
        i += 1
    return field


def _conv_field(index: _Index, node: onnx.NodeProto, c_in: int) -> Field:
    w = _weight_shape(index, node)
    group = _int_attr(node, "group", 1)
    kernel_shape = _ints_attr(node, "kernel_shape") or w[2:]
    if w[1] * group != c_in:
        raise FieldPathError(
            f"conv {_node_label(node)} reads {w[1] * group} channels (weight {list(w)}, "
            f"group {group}) but {c_in} arrive"
        )
    return Field.conv(
        c_in,
        w[0],
        kernel_shape,
        _ints_attr(node, "strides"),
        _ints_attr(node, "dilations"),
        group,
    )


def _pool_field(node: onnx.NodeProto, channels: int) -> Field:
    kernel_shape: tuple[int, ...] = tuple(_attr(node, "kernel_shape"))  # required by ONNX
    return Field.conv(
        channels,
        channels,
        kernel_shape,
        _ints_attr(node, "strides"),
        _ints_attr(node, "dilations"),
        channels,
    )


def _gather_indices(index: _Index, node: onnx.NodeProto, channels: int) -> np.ndarray:
    axis = _int_attr(node, "axis", 0)
    if axis != 1:
        raise FieldPathError(
            f"node {_node_label(node)}: Gather on axis {axis}, not the channel axis 1"
        )
    idx = index.constants.get(node.input[1])
    if idx is None:
        raise FieldPathError(f"node {_node_label(node)}: Gather indices are not a constant")
    if idx.ndim != 1:
        raise FieldPathError(
            f"node {_node_label(node)}: Gather indices must be 1-D, got {idx.shape}"
        )
    idx = np.where(idx < 0, idx + channels, idx).astype(np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= channels):
        raise FieldPathError(f"node {_node_label(node)}: Gather index out of range for {channels}")
    return idx


def _reshape_target(node: onnx.NodeProto, shape: tuple[int, ...], target: np.ndarray) -> list[int]:
    """ONNX Reshape: 0 copies the input dim (unless allowzero=1), -1 is inferred."""
    allowzero = _int_attr(node, "allowzero", 0)
    out = [
        shape[i] if (t == 0 and not allowzero and i < len(shape)) else int(t)
        for i, t in enumerate(target.tolist())
    ]
    if out.count(-1) == 1:
        known = math.prod(d for d in out if d != -1)
        out[out.index(-1)] = math.prod(shape) // known if known else 0
    return out


def _is_shape_of(index: _Index, tensor: str, of: str) -> bool:
    """True when ``tensor`` is ``Shape(of)`` (how build.py restores a shuffle's dynamic shape)."""
    node = index.producer(tensor)
    return (
        node is not None and node.op_type == "Shape" and not node.attribute and node.input[0] == of
    )


def _simulate_permutation(
    index: _Index, nodes: list[onnx.NodeProto], channels: int, rank: int
) -> np.ndarray:
    """Run Reshape/Transpose nodes on (channel, position) labels; return perm [c_out]."""
    first = nodes[0]
    label = ", ".join(_node_label(n) for n in nodes)
    known = index.shape(first.input[0])
    if known and len(known) >= 2:
        shape = tuple(1 if d is None else int(d) for d in known)
        shape = (shape[0], channels, *shape[2:])
    else:
        shape = (1, channels, *(1,) * rank)
    batch, spatial = shape[0], shape[2:]
    positions = batch * math.prod(spatial)
    # label = channel · positions + flat (batch, spatial) position
    pos = np.arange(positions).reshape(batch, 1, *spatial)
    chan = np.arange(channels).reshape(1, channels, *(1,) * len(spatial))
    x = chan * positions + pos
    try:
        for node in nodes:
            if node.op_type == "Reshape":
                target = index.constants.get(node.input[1])
                if target is None and _is_shape_of(index, node.input[1], first.input[0]):
                    target = np.asarray(shape)  # Reshape(·, Shape(x)): back to x's own shape
                if target is None:
                    raise FieldPathError(
                        f"node {_node_label(node)}: the shape is computed at run time; fold "
                        f"constants first (static shapes) so the permutation can be read"
                    )
                x = x.reshape(_reshape_target(node, x.shape, np.asarray(target)))
            else:
                axes: list[int] | None = _attr(node, "perm")  # None: reverse the axes
                x = np.transpose(x, axes)
    except ValueError as exc:
        raise FieldPathError(
            f"nodes {label}: cannot simulate on shape {list(shape)}: {exc}"
        ) from exc
    if x.shape[0] != batch or tuple(x.shape[2:]) != tuple(spatial) or x.ndim != len(shape):
        raise FieldPathError(
            f"nodes {label}: output shape {list(x.shape)} is not a channel permutation of "
            f"{list(shape)}"
        )
    if np.any(x % positions != pos):
        raise FieldPathError(f"nodes {label}: moves spatial positions, not only channels")
    src = x // positions  # [batch, c_out, *spatial]
    perm = src.reshape(batch, src.shape[1], -1)[0, :, 0]
    if np.any(src != perm.reshape(1, -1, *(1,) * len(spatial))):
        raise FieldPathError(f"nodes {label}: channel order depends on the position")
    return perm.astype(np.int64)


# --- conv units --------------------------------------------------------------------------------


def _link_successor(index: _Index, conv: onnx.NodeProto) -> onnx.NodeProto | None:
    """The conv that reads this conv's output through permutations / per-channel ops only."""
    tensor = conv.output[0]
    for _ in range(index.steps):
        # a Shape reader only restores a shuffle's dynamic shape (build.py): not a branch
        users = [u for u in index.consumers(tensor) if u.op_type != "Shape"]
        if len(users) != 1 or tensor in index.outputs:
            return None
        node = users[0]
        if node.op_type == "Conv":
            return node if node.input[0] == tensor else None
        if node.op_type in POOLS or index.data_input(node) != tensor:
            return None
        if node.op_type == "Gather" and (
            _int_attr(node, "axis", 0) != 1 or node.input[1] not in index.constants
        ):
            return None
        tensor = node.output[0]
    return None


def _model_index(model: onnx.ModelProto) -> _Index:
    try:
        inferred = list(onnx.shape_inference.infer_shapes(model).graph.value_info)
    except Exception:  # best effort, as in field_between
        inferred = []
    return _Index(model.graph, inferred)


def _chains(index: _Index, graph: onnx.GraphProto) -> list[list[onnx.NodeProto]]:
    convs = [n for n in graph.node if n.op_type == "Conv"]
    succ = {id(c): _link_successor(index, c) for c in convs}
    has_pred = {id(s) for s in succ.values() if s is not None}
    chains = []
    for conv in convs:
        if id(conv) in has_pred:
            continue
        chain = [conv]
        while (nxt := succ[id(chain[-1])]) is not None and len(chain) <= len(convs):
            chain.append(nxt)
        chains.append(chain)
    return chains


def _unit_report(index: _Index, chain: list[onnx.NodeProto]) -> dict:
    src, dst = chain[0].input[0], chain[-1].output[0]
    f = _field_between(index, src, dst)
    return {
        "nodes": [n.name or n.output[0] for n in chain],
        "src": src,
        "dst": dst,
        "size": list(f.size),
        "extent": list(f.extent),
        "c_in": f.c_in,
        "c_out": f.c_out,
        "full": f.full_channels,
        "grouped": any(_int_attr(n, "group", 1) > 1 for n in chain),
    }


def unit_fields(model: onnx.ModelProto) -> list[dict]:
    """One entry per maximal conv chain: node names, field size, full channel field or not.

    A chain whose field cannot be read (e.g. a Reshape that is not a permutation) is reported
    conv by conv instead.
    """
    index = _model_index(model)
    out = []
    for chain in _chains(index, model.graph):
        try:
            out.append(_unit_report(index, chain))
        except FieldPathError:
            for conv in chain:
                try:
                    out.append(_unit_report(index, [conv]))
                except FieldPathError as exc:
                    out.append({"nodes": [conv.name or conv.output[0]], "error": str(exc)})
    return out
