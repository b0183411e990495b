"""Integer tensors a graph computes from its static dims, evaluated without a runtime.

torch exports ``x.chunk(2, dim=1)`` (YOLOv8's C2f split) as shape arithmetic::

    c = Gather(Shape(x), 1);  h = Mul(Div(Add(c, 1), 2), 1);  a = Slice(x, 0, h, axes=[1])
                                                                b = Slice(x, h, 2·h, axes=[1])

ONNX shape inference propagates data through ``Shape``/``Gather``/``Add``/``Mul`` but not
``Div``, so the bounds stay unknown. :func:`fold_ints` evaluates such a tensor when it is
computed only from constants and the dims of ``Shape`` outputs that are static, through the ops
of :data:`FOLDABLE`, with ONNX's integer semantics (``Div`` truncates toward zero). Each value
carries a mask of the entries that are known: ``Shape`` of a tensor with a symbolic batch knows
every dim but the batch, and a ``Gather`` of dim 1 is known. The result is None unless every
entry is known, so a folded value never depends on a symbolic dim.

:func:`infer_folded` is ONNX shape inference that goes past such arithmetic: the folded inputs
of the shape-taking ops (:data:`SHAPE_INPUTS`) are written as constants into a light copy of the
model (the model itself is not touched) and inference runs again, up to ``ROUNDS`` times while
it learns more. On the YOLOv8s-style export, the tensors after every C2f split get their shapes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnx

from onnx_sk.graph.index import ConstantIndex, GraphIndex
from onnx_sk.graph.shapes import Shape, infer_shapes, light_copy

#: a value being folded: the int64 entries and which of them are known
Partial = tuple[np.ndarray, np.ndarray]
#: the most producers followed back from the tensor asked for
MAX_NODES = 64
INT_TYPES = (onnx.TensorProto.INT64, onnx.TensorProto.INT32)
#: op type → its inputs that are integer shape data (bounds, targets, sizes, axes)
SHAPE_INPUTS: dict[str, tuple[int, ...]] = {
    "Slice": (1, 2, 3, 4),
    "Reshape": (1,),
    "Split": (1,),
    "Expand": (1,),
    "Tile": (1,),
    "Resize": (3,),
    "Pad": (1, 3),
    "ConstantOfShape": (0,),
    "Unsqueeze": (1,),
    "Squeeze": (1,),
}
#: the most rounds of fold-then-infer
ROUNDS = 4


def _attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _trunc_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    b = np.where(b == 0, 1, b)  # an unknown entry may hold 0; its result stays unknown
    return np.sign(a) * np.sign(b) * (np.abs(a) // np.abs(b))


_BINARY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "Add": np.add,
    "Sub": np.subtract,
    "Mul": np.multiply,
    "Div": _trunc_div,
    "Min": np.minimum,
    "Max": np.maximum,
}
#: the ops folded (with Constant and constant initializers, read through ConstantIndex)
FOLDABLE = (
    *_BINARY,
    "Shape",
    "Gather",
    "Concat",
    "Unsqueeze",
    "Squeeze",
    "Cast",
    "Identity",
    "Neg",
)


class _Folder:
    def __init__(
        self,
        producer: Callable[[str], onnx.NodeProto | None],
        constants: ConstantIndex,
        shapes: dict[str, Shape],
    ) -> None:
        self.producer, self.constants, self.shapes = producer, constants, shapes
        self.visited = 0

    def value(self, name: str) -> Partial | None:
        const = self.constants.get(name) if name in self.constants else None
        if const is not None:
            if not np.issubdtype(const.dtype, np.integer):
                return None
            v = np.asarray(const, dtype=np.int64)
            return v, np.ones(v.shape, dtype=bool)
        node = self.producer(name)
        self.visited += 1
        if node is None or node.domain not in ("", "ai.onnx") or self.visited > MAX_NODES:
            return None
        if node.op_type not in FOLDABLE:
            return None
        return self._node(node)

    def _inputs(self, node: onnx.NodeProto) -> list[Partial] | None:
        out = []
        for t in node.input:
            v = self.value(t) if t else None
            if v is None:
                return None
            out.append(v)
        return out

    def _node(self, node: onnx.NodeProto) -> Partial | None:
        op = node.op_type
        if op == "Shape":
            return self._shape(node)
        if op == "Cast" and _attr(node, "to") not in INT_TYPES:
            return None
        ins = self._inputs(node)
        if ins is None:
            return None
        if op in _BINARY:
            (a, ka), (b, kb) = ins
            return _BINARY[op](a, b), np.broadcast_to(ka & kb, np.broadcast(a, b).shape).copy()
        if op in ("Cast", "Identity"):
            return ins[0]
        if op == "Neg":
            return -ins[0][0], ins[0][1]
        if op == "Gather":
            (data, known), (idx, idx_known) = ins
            if data.ndim != 1 or int(_attr(node, "axis", 0) or 0) != 0 or not idx_known.all():
                return None
            idx = np.where(idx < 0, idx + len(data), idx)
            if ((idx < 0) | (idx >= len(data))).any():
                return None
            return data[idx], known[idx]
        if op == "Concat":
            if any(v.ndim != 1 for v, _ in ins):
                return None
            return np.concatenate([v for v, _ in ins]), np.concatenate([k for _, k in ins])
        return self._axes_op(node, ins)

    def _shape(self, node: onnx.NodeProto) -> Partial | None:
        dims = self.shapes.get(node.input[0])
        if dims is None:
            return None
        start = int(_attr(node, "start", 0) or 0)
        end = _attr(node, "end", None)
        cut = list(dims)[start : None if end is None else int(end)]
        values = np.array([d if d is not None else 0 for d in cut], dtype=np.int64)
        return values, np.array([d is not None for d in cut], dtype=bool)

    def _axes_op(self, node: onnx.NodeProto, ins: list[Partial]) -> Partial | None:
        """Unsqueeze / Squeeze (axes as attribute before opset 13, as input from 13)."""
        (v, k), *rest = ins
        axes_value = rest[0][0] if rest else _attr(node, "axes", None)
        axes = (
            [int(a) for a in np.asarray(axes_value).reshape(-1)] if axes_value is not None else []
        )
        if node.op_type == "Unsqueeze":
            if not axes:
                return None
            rank = v.ndim + len(axes)
            shape = list(v.shape)
            for a in sorted(a + rank if a < 0 else a for a in axes):
                shape.insert(a, 1)
            return v.reshape(shape), k.reshape(shape)
        if not axes:  # Squeeze: every dim of size 1
            return np.squeeze(v), np.squeeze(k)
        norm = tuple(a + v.ndim if a < 0 else a for a in axes)
        return np.squeeze(v, axis=norm), np.squeeze(k, axis=norm)


def fold_ints(index: GraphIndex, shapes: dict[str, Shape], name: str) -> np.ndarray | None:
    """The int64 value of tensor ``name`` when the graph of ``index`` computes it from constants
    and static dims alone (module docstring); None otherwise."""
    try:
        got = _Folder(index.producer, index.constants, shapes).value(name)
    except (ValueError, IndexError):  # shapes that do not broadcast or squeeze: not foldable
        return None
    if got is None or not got[1].all():
        return None
    return got[0]


def infer_folded(
    model: onnx.ModelProto, input_shapes: dict[str, tuple[int, ...]] | None = None
) -> dict[str, Shape]:
    """Every tensor's shape ONNX inference can tell once shape arithmetic on static dims is
    folded (module docstring); ``None`` for symbolic dims, as :func:`infer_shapes`."""
    shapes = infer_shapes(model, input_shapes)
    index = GraphIndex(model.graph)
    folded: dict[str, np.ndarray] = {}
    for _ in range(ROUNDS):
        found = {
            t: v
            for node in model.graph.node
            for k in SHAPE_INPUTS.get(node.op_type, ())
            if len(node.input) > k
            and (t := node.input[k])
            and t not in folded
            and t not in index.constants
            and (v := fold_ints(index, shapes, t)) is not None
        }
        if not found:
            break
        folded.update(found)
        light = light_copy(model)
        names = {t: f"{t}/folded" for t in folded}
        for node in light.graph.node:
            for k, t in enumerate(node.input):
                if t in names:
                    node.input[k] = names[t]
        light.graph.initializer.extend(
            onnx.numpy_helper.from_array(v, names[t]) for t, v in folded.items()
        )
        learned = False
        for name, dims in infer_shapes(light, input_shapes).items():
            old = shapes.get(name)
            if name not in names.values() and (old is None or old.count(None) > dims.count(None)):
                shapes[name], learned = dims, True
        if not learned:
            break
    return shapes
