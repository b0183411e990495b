"""The structural half of verification: the ONNX checker and the information field of every
inserted subgraph.

1. ``check`` / ``check_file``: ``onnx.checker.check_model(full_check=True)`` on the result
   (through a temporary file for models above 2 GB);
2. ``check_fields``: for every replaced conv, the information field of the inserted subgraph,
   read off its ONNX nodes between the conv's input and output tensors
   (:func:`onnx_sk.graph.fields.field_between`), equals the dense conv's;
3. ``structure``: a fingerprint of the graph outside the replaced convs (before) or outside the
   inserted subgraphs (after): one digest per node (the node and the constants it reads) and the
   graph's input and output names. Equal fingerprints mean the rewrite touched nothing else,
   which is what lets a per-subgraph comparison stand for the whole model.

A failure raises :class:`~onnx_sk.errors.VerificationError` (nothing is written). The numeric
half (the result against its dense twin in ONNX Runtime) is :mod:`onnx_sk.runtime.verify`.
"""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import onnx

from onnx_sk.errors import VerificationError
from onnx_sk.graph.build import Replacement
from onnx_sk.graph.fields import field_between
from onnx_sk.graph.save import save_model
from onnx_sk.graph.shapes import infer_shapes
from onnx_sk.graph.tensors import is_large
from onnx_sk.maths.infofield import field_of_conv


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def check_file(path: Path) -> None:
    """The full ONNX checker on a model file."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:
        raise VerificationError(
            f"the optimized model fails onnx.checker: {first_line(exc)}"
        ) from None


@contextlib.contextmanager
def _io_shapes_declared(
    model: onnx.ModelProto, input_shapes: dict[str, tuple[int, ...]] | None
) -> Iterator[None]:
    """Graph inputs and outputs without a shape (unknown rank, as onnx-graphsurgeon and other
    tools write them, and as the loader accepts) given one for the check: the rank shape
    inference finds (an input's from ``input_shapes``, ``--input-shape``), every dim unknown (no
    rank found: an empty shape); removed again after."""
    g = model.graph
    bare = [
        vi
        for vi in (*g.input, *g.output)
        if vi.type.HasField("tensor_type") and not vi.type.tensor_type.HasField("shape")
    ]
    if bare:
        inferred = infer_shapes(model, input_shapes)
        for vi in bare:
            shape = vi.type.tensor_type.shape
            shape.SetInParent()
            for _ in inferred.get(vi.name) or ():
                shape.dim.add()
    try:
        yield
    finally:
        for vi in bare:
            vi.type.tensor_type.ClearField("shape")


def check(
    model: onnx.ModelProto,
    large: bool | None = None,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
) -> None:
    """The full ONNX checker (through a temporary file for models above 2 GB); ``input_shapes``
    give the rank of an input declared without a shape."""
    with _io_shapes_declared(model, input_shapes):
        _check(model, large)


def _check(model: onnx.ModelProto, large: bool | None) -> None:
    if is_large(model, large):
        with tempfile.TemporaryDirectory() as tmp:
            check_file(save_model(model, Path(tmp) / "model.onnx", external_data=True))
        return
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        raise VerificationError(
            f"the optimized model fails onnx.checker: {first_line(exc)}"
        ) from None


class GraphParts:
    """A model's main-graph nodes and initializers by name, looked up once for every conv."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.position = {n.name: i for i, n in enumerate(model.graph.node)}
        self.graph = model.graph
        self.inits = {t.name: t for t in model.graph.initializer}


def inserted_subgraph(
    result: onnx.ModelProto, r: Replacement, parts: GraphParts | None = None
) -> onnx.GraphProto:
    """The nodes that replaced one conv, with their weights: a graph from r.input to r.output
    (``parts``: the result's lookup, built once when there are many convs)."""
    parts = parts or GraphParts(result)
    at = sorted(parts.position[name] for name in r.new_nodes if name in parts.position)
    nodes = [parts.graph.node[i] for i in at]  # in graph order
    reads = dict.fromkeys(t for n in nodes for t in n.input)
    inits = [parts.inits[t] for t in reads if t in parts.inits]
    x = onnx.helper.make_tensor_value_info(
        r.input,
        onnx.TensorProto.FLOAT,
        ["N", r.real.spec.c_in, *(r.in_spatial or "HW"[: r.real.spec.spatial_rank])],
    )
    y = onnx.helper.make_tensor_value_info(r.output, onnx.TensorProto.FLOAT, None)
    return onnx.helper.make_graph(nodes, "inserted", [x], [y], inits)


def check_fields(result: onnx.ModelProto, replacements: list[Replacement]) -> int:
    """Each inserted subgraph's information field, read off its ONNX nodes, equals the conv's."""
    parts = GraphParts(result)
    for r in replacements:
        got = field_between(inserted_subgraph(result, r, parts), r.input, r.output)
        want = field_of_conv(r.real.spec)
        if not got.equals(want):
            raise VerificationError(
                f"conv {r.name!r}: the inserted {r.real.design} subgraph has information field "
                f"{got.size} but the dense conv has {want.size}"
            )
    return len(replacements)


def structure(graph: onnx.GraphProto, skip: Callable[[onnx.NodeProto], bool]) -> Counter[str]:
    """The fingerprint of ``graph`` outside the nodes ``skip`` selects (module docstring)."""
    inits = {t.name: t for t in graph.initializer}
    prints: Counter[str] = Counter()
    for node in graph.node:
        if skip(node):
            continue
        h = hashlib.blake2b(node.SerializeToString(deterministic=True), digest_size=16)
        for name in node.input:
            if name in inits:
                h.update(inits[name].SerializeToString(deterministic=True))
        prints[h.hexdigest()] += 1
    ins, outs = ",".join(i.name for i in graph.input), ",".join(o.name for o in graph.output)
    prints[f"io: {ins} -> {outs}"] += 1
    return prints


def replaced_conv(replacements: list[Replacement]) -> Callable[[onnx.NodeProto], bool]:
    """Selects the convs ``replacements`` replace (in the graph before the rewrite)."""
    outputs = {r.output for r in replacements}
    return lambda n: n.op_type == "Conv" and bool(n.output) and n.output[0] in outputs


def inserted_node(replacements: list[Replacement]) -> Callable[[onnx.NodeProto], bool]:
    """Selects the nodes the rewrite inserted (in the graph after it)."""
    names = {name for r in replacements for name in r.new_nodes}
    return lambda n: n.name in names
