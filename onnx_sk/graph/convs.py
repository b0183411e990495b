"""Every ``Conv`` of a model, where it sits, what it is, and why it can or cannot be replaced.

``why_not`` is the single eligibility check (check, then rewrite): it returns a reason string for
a conv that no SK design may replace, or ``None``. Skips are data in the report, not exceptions.
Convs inside ``If``/``Loop``/``Scan`` bodies are listed (with their scope) but never rewritten.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import onnx

from onnx_sk.errors import UserError
from onnx_sk.graph.index import ConstantIndex, GraphIndex, subgraphs, training_bound
from onnx_sk.graph.shapes import Shape, known_dims
from onnx_sk.graph.validity import check_conv_channels
from onnx_sk.maths.spec import DENSE, DEPTHWISE, GROUPED, POINTWISE, ConvSpec

QUANTIZED_CONVS = ("QLinearConv", "ConvInteger")
NOT_CONSTANT = "weights are not constant (a graph input or computed)"
#: IR >= 4: an initializer also listed as a graph input is a default the caller may override
OVERRIDABLE = (
    "weights are an initializer also listed as a graph input (a default a caller may override)"
)
#: the model's training_info reads or updates the weights (:func:`training_bound`)
TRAINED = "weights are updated by the model's training_info"
_SCOPE_NAMES = {"Loop": "a Loop body", "If": "an If branch", "Scan": "a Scan body"}


@dataclass
class ConvSite:
    """One Conv node with its resolved weights and shapes. ``scope`` is '' in the main graph.

    ``weight`` [c_out, c_in // group, kh, kw] and ``bias`` [c_out] are converted to numpy on
    first use only (``None`` when not constant).
    """

    node: onnx.NodeProto
    scope: str
    spec: ConvSpec | None
    consts: ConstantIndex
    in_shape: Shape | None
    out_shape: Shape | None
    first: bool = False
    reason: str | None = None

    @property
    def weight(self) -> np.ndarray | None:
        return self.consts.get(self.node.input[1])

    @property
    def weight_is_constant(self) -> bool:
        return self.node.input[1] in self.consts

    @property
    def bias_name(self) -> str:
        return self.node.input[2] if len(self.node.input) > 2 else ""

    @property
    def bias(self) -> np.ndarray | None:
        return self.consts.get(self.bias_name) if self.bias_name else None

    @property
    def name(self) -> str:
        return self.node.name or self.node.output[0]

    @property
    def out_spatial(self) -> tuple[int, ...] | None:
        return None if self.out_shape is None else known_dims(self.out_shape[2:])

    @property
    def in_spatial(self) -> tuple[int, ...] | None:
        return None if self.in_shape is None else known_dims(self.in_shape[2:])

    @property
    def batch(self) -> int | None:
        if self.out_shape is None or not self.out_shape:
            return None
        return self.out_shape[0]

    def macs(self) -> int | None:
        """MACs of this conv for the whole (static) batch, or None when a dim is symbolic."""
        if self.spec is None or self.out_spatial is None or self.batch is None:
            return None
        return self.spec.macs(self.out_spatial) * self.batch


def attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _decode(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def read_spec(node: onnx.NodeProto, weight_shape: tuple[int, ...], has_bias: bool) -> ConvSpec:
    a = attrs(node)
    group = int(a.get("group", 1))
    kernel = tuple(int(k) for k in a.get("kernel_shape", weight_shape[2:]))
    return ConvSpec(
        c_in=int(weight_shape[1]) * group,
        c_out=int(weight_shape[0]),
        kernel_shape=kernel,
        strides=tuple(int(s) for s in a.get("strides", ())),
        pads=tuple(int(p) for p in a.get("pads", ())),
        dilations=tuple(int(d) for d in a.get("dilations", ())),
        group=group,
        auto_pad=_decode(a.get("auto_pad", "NOTSET")),
        has_bias=has_bias,
        name=node.name or node.output[0],
    )


def why_not(site: ConvSite) -> str | None:
    """The reason no SK design may replace this conv, or None when it is eligible."""
    if site.scope:
        return f"inside {site.scope}"
    if site.spec is None:
        return "weight shape unknown"
    if not site.weight_is_constant:
        return NOT_CONSTANT
    if site.bias_name and site.bias_name not in site.consts:
        return "bias is not constant (a graph input or computed)"
    if site.spec.spatial_rank != 2:
        return f"not a 2-D convolution ({site.spec.spatial_rank} spatial axes)"
    kind = site.spec.kind
    if kind == POINTWISE:
        return "pointwise (1×1) conv"
    if kind == DEPTHWISE:
        return "depthwise conv"
    if kind == GROUPED:
        return f"grouped conv (group={site.spec.group})"
    assert kind == DENSE
    weight = site.weight
    assert weight is not None  # weight_is_constant was checked above
    dtype = weight.dtype
    if dtype != np.float32:
        return f"weights are {dtype}: only float32 convs are rewritten"
    if not np.isfinite(weight).all():
        return "weights hold NaN or Inf values: no design can fit them"
    return None


def _walk(graph: onnx.GraphProto, scope: str) -> Iterator[tuple[onnx.GraphProto, str]]:
    """``graph`` and every graph nested in it, with its scope ('' for ``graph`` itself; a
    nested graph takes the scope of its outermost enclosing node)."""
    yield graph, scope
    for node in graph.node:
        for sub in subgraphs(node):
            inner = _SCOPE_NAMES.get(node.op_type, f"a {node.op_type} subgraph")
            yield from _walk(sub, scope or inner)


def _function_bodies(model: onnx.ModelProto) -> Iterator[tuple[onnx.GraphProto, str]]:
    """The body of every model-local function a node calls (the graph, its subgraphs or another
    function), as a graph of its nodes, with its scope: ``local function 'F'``. Its convs are
    listed and kept (a function body is shared by every call and has no weights of its own)."""
    called = {(n.domain, n.op_type) for g, _ in _walk(model.graph, "") for n in g.node}
    for fn in model.functions:
        for n in fn.node:
            called |= {(m.domain, m.op_type) for g, _ in _walk_node(n) for m in g.node}
            called.add((n.domain, n.op_type))
    for fn in model.functions:
        if (fn.domain, fn.name) in called:
            body = onnx.GraphProto(name=fn.name)
            body.node.extend(fn.node)
            yield body, f"local function {fn.name!r}"


def _walk_node(node: onnx.NodeProto) -> Iterator[tuple[onnx.GraphProto, str]]:
    for sub in subgraphs(node):
        yield from _walk(sub, "")


def _first_convs(graph: onnx.GraphProto) -> set[str]:
    """Names of main-graph convs with no Conv among their ancestors (the network's first convs)."""
    index = GraphIndex(graph)
    first = set()
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        stack, seen, has_conv = list(node.input[:1]), set(), False
        while stack and not has_conv:
            t = stack.pop()
            p = index.producer(t)
            if t in seen or p is None:
                continue
            seen.add(t)
            if p.op_type in ("Conv", *QUANTIZED_CONVS):
                has_conv = True
            stack.extend(i for i in p.input if i)
        if not has_conv:
            first.add(node.output[0])
    return first


def find_convs(model: onnx.ModelProto, shapes: dict[str, Shape]) -> list[ConvSite]:
    """Every Conv of the model (subgraphs and the bodies of local functions included) with its
    spec, weights, shapes and reason."""
    sites = []
    first = _first_convs(model.graph)
    for graph, scope in _walk(model.graph, ""):
        consts = ConstantIndex(model.graph) if not scope else ConstantIndex(model.graph, graph)
        for node in graph.node:
            if node.op_type != "Conv":
                continue
            sites.append(_site(node, scope, consts, shapes, node.output[0] in first and not scope))
    for body, scope in _function_bodies(model):  # their own names: no shape of the graph's
        for graph, inner in _walk(body, scope):
            consts = ConstantIndex(body) if graph is body else ConstantIndex(body, graph)
            sites.extend(
                _site(n, inner, consts, {}, False) for n in graph.node if n.op_type == "Conv"
            )
    overridable = {i.name for i in model.graph.input} & {i.name for i in model.graph.initializer}
    trained = training_bound(model)
    for site in sites:
        if site.reason == NOT_CONSTANT and overridable.intersection(site.node.input[1:3]):
            site.reason = OVERRIDABLE
        elif site.reason is None and trained.intersection(site.node.input[1:3]):
            site.reason = TRAINED
    return sites


def _site(
    node: onnx.NodeProto,
    scope: str,
    consts: ConstantIndex,
    shapes: dict[str, Shape],
    first: bool,
) -> ConvSite:
    bias_name = node.input[2] if len(node.input) > 2 else ""
    w_shape = known_dims(consts.dims(node.input[1]) or shapes.get(node.input[1]))
    spec = None
    in_shape = shapes.get(node.input[0])
    if w_shape is not None and len(w_shape) >= 3:
        try:
            spec = read_spec(node, w_shape, bool(bias_name))
        except ValueError as exc:  # a computed weight whose inferred shape contradicts group
            raise UserError(str(exc)) from None
        check_conv_channels(node, w_shape, in_shape[1] if in_shape else None, spec.group)
    site = ConvSite(node, scope, spec, consts, in_shape, shapes.get(node.output[0]), first)
    site.reason = why_not(site)
    return site
