"""A model ONNX calls invalid is refused when it is loaded, with the defect named.

onnx-sk rewrites what it reads; reading an invalid model the way one consumer would (the last of
two initializers of the same name, say) while ONNX Runtime reads it another way gives a silently
wrong output. So every model is checked before anything else looks at it (``check_model``), in
one pass over each graph (subgraphs too, outer-scope names visible), and refused with a
:class:`~onnx_sk.errors.UserError` naming the first defect:

- names: an initializer or graph input listed twice, two nodes of the same (non-empty) name
  (ONNX Runtime refuses to load such a model), a tensor written by two nodes, a node output that
  is also an initializer or a graph input;
- order: a node reading a tensor before the node that writes it (nodes not sorted), a cycle, or a
  tensor nothing defines;
- tensors: data type UNDEFINED or unknown, data of the wrong length for the dims (``raw_data`` in
  bytes, or the typed field in values), dims without data;
- convs: a ``Conv`` without X and W or without an output; ``group`` < 1 or not dividing the
  weight's output channels; ``kernel_shape``, ``strides``, ``dilations``, ``pads`` of the wrong
  length or sign, or a ``kernel_shape`` that disagrees with the weight; a bias of the wrong size
  (:func:`check_conv_channels` adds the input's channels, once shapes are known);
- then ``onnx.checker.check_model`` for what remains (attributes an operator does not have or of
  the wrong type, input counts against the schema), on a copy without the main graph's weights
  (they become graph inputs of the same type and shape), so no weight is copied or serialised.

External data is checked against its file before it is read (:func:`check_external_size`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import numpy as np
import onnx

from onnx_sk.errors import UserError
from onnx_sk.graph.index import ConstantIndex, subgraphs
from onnx_sk.graph.tensors import EXTERNAL_DATA_THRESHOLD, all_tensors

T = onnx.TensorProto
#: the repeated field a tensor of each data type keeps its values in, and values per element
_TYPED_FIELD: dict[int, tuple[str, int]] = {
    T.FLOAT: ("float_data", 1),
    T.COMPLEX64: ("float_data", 2),
    T.DOUBLE: ("double_data", 1),
    T.COMPLEX128: ("double_data", 2),
    T.INT64: ("int64_data", 1),
    T.UINT32: ("uint64_data", 1),
    T.UINT64: ("uint64_data", 1),
    T.STRING: ("string_data", 1),
    **{
        t: ("int32_data", 1)
        for t in (T.INT32, T.INT16, T.INT8, T.UINT16, T.UINT8, T.BOOL, T.FLOAT16, T.BFLOAT16)
    },
}
_DATA_FIELDS = (
    "raw_data", "float_data", "double_data", "int32_data", "int64_data", "uint64_data",
    "string_data",
)  # fmt: skip


def _numel(dims: Iterable[int]) -> int:
    n = 1
    for d in dims:
        n *= d
    return n


def _elements_per_byte(data_type: int) -> int:
    """2 for the 4-bit types (packed two to a byte), 4 for the 2-bit ones, else 0 (not packed)."""
    name = T.DataType.Name(data_type)
    if name.endswith(("INT4", "FLOAT4E2M1")):
        return 2
    if name.endswith("INT2"):
        return 4
    return 0


def expected_bytes(tensor: onnx.TensorProto) -> int | None:
    """The bytes of ``raw_data`` (or external data) the dims and data type call for (None for
    strings)."""
    n = _numel(tensor.dims)
    packed = _elements_per_byte(tensor.data_type)
    if packed:
        return -(-n // packed)
    if tensor.data_type == T.STRING:
        return None
    return n * np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize


def _check_tensor(tensor: onnx.TensorProto) -> None:
    name = tensor.name
    if tensor.data_type == T.UNDEFINED:
        raise UserError(f"tensor {name!r} has data type UNDEFINED")
    if tensor.data_type not in T.DataType.values():
        raise UserError(f"tensor {name!r} has an unknown data type ({tensor.data_type})")
    if tensor.data_location == T.EXTERNAL:
        return  # checked against its file (check_external_size)
    n, dims = _numel(tensor.dims), list(tensor.dims)
    present = [f for f in _DATA_FIELDS if f != "raw_data" and len(getattr(tensor, f))]
    if tensor.HasField("raw_data"):
        present.append("raw_data")
    if len(present) > 1:
        raise UserError(f"tensor {name!r} holds its data in two fields ({', '.join(present)})")
    if not present:
        if n:
            raise UserError(f"tensor {name!r} has dims {dims} but no data")
        return
    if present[0] == "raw_data":
        want, got = expected_bytes(tensor), len(tensor.raw_data)
        if want is not None and got != want:
            raise UserError(
                f"tensor {name!r}: raw_data has {got} bytes, but dims {dims} of "
                f"{T.DataType.Name(tensor.data_type)} need {want}"
            )
        return
    field, per = _TYPED_FIELD.get(tensor.data_type, (None, 1))
    if field is None:
        return  # a rarer type in a typed field: the checker decides
    got = len(getattr(tensor, field))
    if present[0] != field or got != n * per:
        raise UserError(
            f"tensor {name!r}: {present[0]} has {len(getattr(tensor, present[0]))} values, but "
            f"dims {dims} of {T.DataType.Name(tensor.data_type)} need {n * per} in {field}"
        )


def check_external_size(tensor: onnx.TensorProto, location: str, file: str) -> None:
    """The external data of ``tensor`` lies inside ``file`` and has the length its dims need."""
    info = {e.key: e.value for e in tensor.external_data}
    try:
        offset, length = int(info.get("offset", 0)), info.get("length")
        length_value = None if length is None else int(length)
    except ValueError:
        raise UserError(
            f"tensor {tensor.name!r}: external data offset/length are not integers"
        ) from None
    want = expected_bytes(tensor)
    if offset < 0 or (length_value is not None and length_value < 0):
        raise UserError(f"tensor {tensor.name!r}: negative external data offset or length")
    if want is not None and length_value is not None and length_value != want:
        raise UserError(
            f"tensor {tensor.name!r}: external data length {length_value} bytes, but dims "
            f"{list(tensor.dims)} of {T.DataType.Name(tensor.data_type)} need {want}"
        )
    need = offset + (length_value if length_value is not None else (want or 0))
    size = os.path.getsize(file)
    if size < need:
        raise UserError(
            f"external data file {location!r} of tensor {tensor.name!r} has {size} bytes, "
            f"shorter than the tensor needs (offset {offset} + {need - offset} bytes)"
        )


def _node_name(node: onnx.NodeProto) -> str:
    return node.name or (node.output[0] if node.output else node.op_type)


def _check_names(graph: onnx.GraphProto, outer: set[str]) -> None:
    """Duplicate and conflicting names, and the order of the nodes."""
    inits: set[str] = set()
    for init in (*graph.initializer, *(s.values for s in graph.sparse_initializer)):
        if init.name in inits:
            raise UserError(f"initializer {init.name!r} is listed twice")
        inits.add(init.name)
    inputs: set[str] = set()
    for vi in graph.input:
        if vi.name in inputs:
            raise UserError(f"graph input {vi.name!r} is listed twice")
        inputs.add(vi.name)
    named: dict[str, str] = {}
    for node in graph.node:
        if node.name in named:
            raise UserError(
                f"node name {node.name!r} is used twice (a {named[node.name]} and a {node.op_type})"
            )
        if node.name:
            named[node.name] = node.op_type
    writer: dict[str, int] = {}
    for i, node in enumerate(graph.node):
        for o in node.output:
            if not o:
                continue
            if o in writer:
                first = _node_name(graph.node[writer[o]])
                raise UserError(
                    f"tensor {o!r} is written by two nodes ({first!r} and {_node_name(node)!r})"
                )
            if o in inits:
                raise UserError(
                    f"tensor {o!r} is both an initializer and the output of node {_node_name(node)!r}"
                )
            if o in inputs:
                raise UserError(
                    f"graph input {o!r} is also the output of node {_node_name(node)!r}"
                )
            writer[o] = i
    _check_order(graph, writer, outer | inits | inputs)


def _reads(node: onnx.NodeProto) -> set[str]:
    """What a node reads: its inputs and the outer-scope names its subgraphs read."""
    reads = {t for t in node.input if t}
    for sub in subgraphs(node):
        defined = {t for n in sub.node for t in n.output} | {i.name for i in sub.initializer}
        defined |= {i.name for i in sub.input}
        inner = set().union(*(_reads(n) for n in sub.node)) if sub.node else set()
        reads |= inner - defined
    return reads


def _check_order(graph: onnx.GraphProto, writer: dict[str, int], given: set[str]) -> None:
    """Every node reads only what is given or written by an earlier node; else name the defect:
    unsorted nodes, a cycle, or a tensor nothing defines."""
    for i, node in enumerate(graph.node):
        for t in sorted(_reads(node)):
            if t in given:
                continue
            w = writer.get(t)
            if w is None:
                raise UserError(
                    f"node {_node_name(node)!r} reads {t!r}, which no node, initializer or graph "
                    "input defines"
                )
            if w >= i:
                if _has_cycle(graph, writer, given):
                    raise UserError(
                        f"the graph has a cycle (through node {_node_name(node)!r} and {t!r})"
                    )
                raise UserError(
                    f"nodes are not topologically sorted: node {_node_name(node)!r} reads {t!r} "
                    f"before node {_node_name(graph.node[w])!r} writes it"
                )


def _has_cycle(graph: onnx.GraphProto, writer: dict[str, int], given: set[str]) -> bool:
    """Kahn's algorithm on the nodes: True when some node can never run."""
    deps = [{writer[t] for t in _reads(n) if t not in given and t in writer} for n in graph.node]
    users: dict[int, list[int]] = {}
    for i, d in enumerate(deps):
        for j in d:
            users.setdefault(j, []).append(i)
    waiting = [len(d) for d in deps]
    ready = [i for i, k in enumerate(waiting) if k == 0]
    done = 0
    while ready:
        j = ready.pop()
        done += 1
        for i in users.get(j, ()):
            waiting[i] -= 1
            if waiting[i] == 0:
                ready.append(i)
    return done < len(deps)


def _ints(node: onnx.NodeProto, name: str) -> list[int] | None:
    """The integer(s) of attribute ``name`` (``group``: INT, the others: INTS), None if absent."""
    want = onnx.AttributeProto.INT if name == "group" else onnx.AttributeProto.INTS
    for a in node.attribute:
        if a.name != name:
            continue
        if a.type != want:
            raise UserError(
                f"{node.op_type} {_node_name(node)!r}: attribute {name!r} is "
                f"{onnx.AttributeProto.AttributeType.Name(a.type)}, expected "
                f"{onnx.AttributeProto.AttributeType.Name(want)}"
            )
        return list(a.ints) if want == onnx.AttributeProto.INTS else [a.i]
    return None


def _check_conv(
    node: onnx.NodeProto, consts: ConstantIndex, declared: dict[str, tuple[int, ...]]
) -> None:
    name = _node_name(node)
    if len(node.input) < 2 or not node.input[0] or not node.input[1]:
        raise UserError(f"Conv {name!r} has {len(node.input)} input(s): it needs X and W")
    if not node.output or not node.output[0]:
        raise UserError(f"Conv {name!r} has no output")
    group = (_ints(node, "group") or [1])[0]
    if group < 1:
        raise UserError(f"Conv {name!r} has group {group}: it must be at least 1")
    w = consts.dims(node.input[1]) or declared.get(node.input[1])
    rank = None if w is None else len(w) - 2
    for attr, count in (("kernel_shape", 1), ("strides", 1), ("dilations", 1), ("pads", 2)):
        values = _ints(node, attr)
        if values is None:
            continue
        low = 0 if attr == "pads" else 1
        if any(v < low for v in values):
            raise UserError(f"Conv {name!r} has {attr} {values}: each must be at least {low}")
        if rank is not None and len(values) != count * rank:
            raise UserError(
                f"Conv {name!r} has {attr} {values}, but its weight {node.input[1]!r} "
                f"{list(w or ())} has {rank} spatial axes"
            )
    if w is None:
        return
    if len(w) < 3:
        raise UserError(
            f"Conv {name!r}: weight {node.input[1]!r} has shape {list(w)}; expected "
            "[c_out, c_in/group, k1, ...]"
        )
    if w[0] % group:
        raise UserError(
            f"Conv {name!r}: group {group} does not divide the {w[0]} output channels of its "
            f"weight {node.input[1]!r} {list(w)}"
        )
    kernel = _ints(node, "kernel_shape")
    if kernel is not None and tuple(kernel) != tuple(w[2:]):
        raise UserError(
            f"Conv {name!r}: kernel_shape {kernel} disagrees with its weight {node.input[1]!r} "
            f"{list(w)}"
        )
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
    b = consts.dims(bias) if bias else None
    if b is not None and tuple(b) != (w[0],):
        raise UserError(
            f"Conv {name!r}: bias {bias!r} has shape {list(b)}, but the weight has {w[0]} "
            "output channels"
        )


def check_conv_channels(
    node: onnx.NodeProto, weight: tuple[int, ...], channels: int | None, group: int
) -> None:
    """The conv's input has the channels its weight [c_out, c_in/group, …] and group expect."""
    if channels is None or channels == weight[1] * group:
        return
    raise UserError(
        f"Conv {_node_name(node)!r}: its input {node.input[0]!r} has {channels} channels, but "
        f"its weight {node.input[1]!r} {list(weight)} with group {group} expects "
        f"{weight[1] * group}"
    )


def _check_graph(graph: onnx.GraphProto, outer: set[str], outer_consts: list) -> None:
    _check_names(graph, outer)
    consts = ConstantIndex(*outer_consts, graph)
    visible = (
        outer
        | {i.name for i in graph.initializer}
        | {i.name for i in graph.input}
        | {o for n in graph.node for o in n.output}
    )
    declared = {}  # graph inputs with a static shape: a weight given as an input has one
    for vi in graph.input:
        dims = vi.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            declared[vi.name] = tuple(d.dim_value for d in dims)
    for node in graph.node:
        if node.op_type == "Conv" and node.domain in ("", "ai.onnx"):
            _check_conv(node, consts, declared)
        for sub in subgraphs(node):
            _check_graph(sub, visible, [*outer_consts, graph])


def _copy_fields(source: Any, target: Any, skip: tuple[str, ...]) -> None:
    """Copy every set field of protobuf message ``source`` into ``target``, but ``skip``."""
    for f, value in source.ListFields():
        if f.name in skip:
            continue
        if hasattr(value, "extend"):  # a repeated field
            getattr(target, f.name).extend(value)
        elif hasattr(value, "CopyFrom"):
            getattr(target, f.name).CopyFrom(value)
        else:
            setattr(target, f.name, value)


def _without_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of the model whose main-graph initializers are graph inputs of the same type and
    shape: what the checker needs beyond the checks above, without copying any weight."""
    light = onnx.ModelProto()
    _copy_fields(model, light, ("graph",))
    graph = model.graph
    _copy_fields(graph, light.graph, ("initializer", "sparse_initializer"))
    inputs = {i.name for i in graph.input}
    for init in graph.initializer:
        if init.name not in inputs:
            light.graph.input.append(
                onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims))
            )
    # a graph input or output without a shape (unknown rank) is what exporters and tools write
    # and ONNX Runtime runs; the checker wants the field: present (empty) in this copy only
    for vi in (*light.graph.input, *light.graph.output, *light.graph.value_info):
        if vi.type.HasField("tensor_type") and not vi.type.tensor_type.HasField("shape"):
            vi.type.tensor_type.shape.SetInParent()
    return light


def _checker(model: onnx.ModelProto) -> None:
    """onnx.checker (the attributes against the operator schemas, input and output counts …) on
    the model without its weights (checked above)."""
    light = _without_initializers(model)
    if light.ByteSize() > EXTERNAL_DATA_THRESHOLD:
        return  # Constant nodes above protobuf's limit: the checks above hold
    try:
        onnx.checker.check_model(light)
    except Exception as exc:
        lines = str(exc).strip().splitlines()
        raise UserError(f"onnx.checker: {lines[0] if lines else type(exc).__name__}") from None


def check_model(model: onnx.ModelProto, what: str) -> None:
    """Refuse a model ONNX calls invalid: ``{what} is not a valid ONNX model: <defect>``."""
    try:
        for tensor in all_tensors(model):
            _check_tensor(tensor)
        _check_graph(model.graph, set(), [])
        _checker(model)
    except UserError as exc:
        raise UserError(f"{what} is not a valid ONNX model: {exc}") from None
