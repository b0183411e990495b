"""The only code that writes SK nodes into a graph.

One dense ``Conv`` becomes the stages of a :class:`~onnx_sk.maths.designs.Realisation`:

- the spatial stage carries the conv's ``kernel_shape``, ``strides``, ``pads`` (asymmetric kept),
  ``dilations`` and ``auto_pad``; the other stages are 1×1 convs with their ``group``;
- only the last stage carries the bias (the original bias tensor, by name: no copy), and it
  writes the original output tensor, so consumers and graph outputs never move;
- a channel shuffle with ``g`` groups on ``C`` channels is either
  ``Reshape(x, [0, g, C/g, H·W]) → Transpose(perm=[0, 2, 1, 3]) → Reshape(·, [0, C, H, W])``
  (``"reshape"``, the default: constant targets with the batch copied, so shape inference keeps
  every static dim; where H or W is symbolic, ``Reshape(x, [0, g, C/g, -1])`` → Transpose →
  ``Reshape(·, Shape(x))``: nothing baked) or ``Gather(x, perm, axis=1)``
  (``"gather"``, with ``perm[o] = (o mod g)·(C/g) + o div g``); both give identical outputs;
- new nodes and tensors get deterministic names derived from the original conv's name.

The graph is edited in place, as a ``GraphProto``: each conv node is replaced by its new nodes at
its own position (the graph stays topologically sorted), new weights are appended as
initializers in graph order, and the old kernels are dropped, once, when nothing reads them.
Names are allocated in graph order from one :class:`~onnx_sk.graph.index.NameAllocator`, and
the nodes are spliced in from the last conv to the first, so the positions found in one scan
stay valid and the rewrite is linear in the number of nodes. Editing the proto in place
(rather than an import/export round trip through onnx-graphsurgeon, which copies every tensor)
keeps peak memory near one copy of the model, which matters for models of several GB.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TypedDict

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnx_sk.graph.index import NameAllocator, graph_names, subgraph_reads
from onnx_sk.maths.designs import Realisation, Stage, shuffle_permutation
from onnx_sk.maths.spec import ConvSpec


@dataclass
class Replacement:
    """One conv and what replaces it: the realisation and its stage weights; ``new_nodes``: the
    names of the nodes written (filled by :func:`apply_replacements`)."""

    name: str
    input: str
    output: str
    real: Realisation
    weights: list[np.ndarray]  # one per stage: [c_out, c_in // group, kh, kw]
    bias: np.ndarray | None = None
    new_nodes: list[str] = field(default_factory=list)
    #: relative error of the dense-equivalent kernel vs the original (weight space; on the
    #: calibration patches when there are some), recorded by the initialiser
    init_error: float | None = None
    init_output_error: float | None = None
    #: the conv's input and output spatial dims when static (a shuffle then reshapes to
    #: constant targets, so shape inference keeps every dim); None where a dim is symbolic
    in_spatial: tuple[int, ...] | None = None
    out_spatial: tuple[int, ...] | None = None


class ConvAttrs(TypedDict, total=False):
    """The attributes of a ``Conv`` node written here, as ``helper.make_node`` takes them."""

    kernel_shape: list[int]
    strides: list[int]
    dilations: list[int]
    auto_pad: str
    pads: list[int]
    group: int


def conv_attrs(spec: ConvSpec) -> ConvAttrs:
    """The spatial attributes of a conv, as ONNX spells them (auto_pad or explicit pads)."""
    a: ConvAttrs = {
        "kernel_shape": list(spec.kernel_shape),
        "strides": list(spec.strides),
        "dilations": list(spec.dilations),
    }
    if spec.auto_pad in ("SAME_UPPER", "SAME_LOWER", "VALID"):
        a["auto_pad"] = spec.auto_pad
    else:
        a["pads"] = list(spec.pads)
    return a


def _stage_attrs(stage: Stage, spec: ConvSpec) -> ConvAttrs:
    a: ConvAttrs = conv_attrs(spec) if stage.spatial else {"kernel_shape": [1] * spec.spatial_rank}
    a["group"] = stage.group
    return a


class Namer:
    """Deterministic, collision-free names under the original conv's name: ``<base>/sk/<suffix>``."""

    def __init__(self, base: str, names: NameAllocator) -> None:
        self.base, self.names = base, names

    def __call__(self, suffix: str) -> str:
        return self.names.fresh(f"{self.base}/sk/{suffix}")


def _shuffle(
    x: str,
    channels: int,
    groups: int,
    how: str,
    spatial: tuple[int, ...] | None,
    name: Namer,
    nodes: list[onnx.NodeProto],
    inits: list[onnx.TensorProto],
) -> str:
    """Channel shuffle of ``x`` [N, C, H, W] with ``groups`` groups; returns the output name.

    ``spatial``: (H, W) when static: both reshape targets are then constants with the batch
    copied (``0``), so shape inference keeps every static dim; else the target of the second
    reshape is ``Shape(x)``."""
    out = name("shuffle/out")
    if how == "gather":
        perm = name("shuffle/perm")
        inits.append(
            numpy_helper.from_array(shuffle_permutation(channels, groups).astype(np.int64), perm)
        )
        nodes.append(helper.make_node("Gather", [x, perm], [out], name("shuffle/Gather"), axis=1))
        return out
    split, grouped, moved = (
        name("shuffle/split_shape"),
        name("shuffle/grouped"),
        name("shuffle/transposed"),
    )
    pixels = -1 if spatial is None else int(np.prod(spatial, dtype=np.int64))
    inits.append(
        numpy_helper.from_array(np.array([0, groups, channels // groups, pixels], np.int64), split)
    )
    if spatial is not None:
        back = name("shuffle/shape")
        inits.append(numpy_helper.from_array(np.array([0, channels, *spatial], np.int64), back))
        nodes += [
            helper.make_node("Reshape", [x, split], [grouped], name("shuffle/Reshape")),
            helper.make_node(
                "Transpose", [grouped], [moved], name("shuffle/Transpose"), perm=[0, 2, 1, 3]
            ),
            helper.make_node("Reshape", [moved, back], [out], name("shuffle/Reshape_back")),
        ]
        return out
    shape_x = name("shuffle/shape")
    nodes += [
        helper.make_node("Shape", [x], [shape_x], name("shuffle/Shape")),
        helper.make_node("Reshape", [x, split], [grouped], name("shuffle/Reshape")),
        helper.make_node(
            "Transpose", [grouped], [moved], name("shuffle/Transpose"), perm=[0, 2, 1, 3]
        ),
        helper.make_node("Reshape", [moved, shape_x], [out], name("shuffle/Reshape_back")),
    ]
    return out


def sk_nodes(
    conv: onnx.NodeProto,
    real: Realisation,
    weights: list[np.ndarray],
    names: NameAllocator,
    shuffle: str = "reshape",
    in_spatial: tuple[int, ...] | None = None,
    out_spatial: tuple[int, ...] | None = None,
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """The nodes and initializers that compute ``conv`` as ``real``'s stages (``in_spatial``,
    ``out_spatial``: the conv's static spatial dims, when known)."""
    x, y = conv.input[0], conv.output[0]
    bias = conv.input[2] if len(conv.input) > 2 and conv.input[2] else None
    name = Namer(conv.name or y, names)
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    current, last = x, len(real.stages) - 1
    spatial = in_spatial  # the stages up to the spatial one keep the input's H, W
    for i, (stage, w) in enumerate(zip(real.stages, weights, strict=True)):
        if stage.spatial:
            spatial = out_spatial
        tag = f"{i}_{stage.kind.lower()}"
        w_name = name(f"{tag}/weight")
        inits.append(numpy_helper.from_array(np.ascontiguousarray(w), w_name))
        inputs = [current, w_name] + ([bias] if i == last and bias else [])
        out = y if i == last and stage.shuffle <= 1 else name(f"{tag}/out")
        nodes.append(
            helper.make_node("Conv", inputs, [out], name(tag), **_stage_attrs(stage, real.spec))
        )
        current = out
        if stage.shuffle > 1:
            current = _shuffle(
                current, stage.c_out, stage.shuffle, shuffle, _2d(spatial), name, nodes, inits
            )
    if current != y:  # a shuffle after the last stage (never in the four designs)
        nodes.append(helper.make_node("Identity", [current], [y], name("out")))
    return nodes, inits


def _2d(spatial: tuple[int, ...] | None) -> tuple[int, ...] | None:
    return spatial if spatial is not None and len(spatial) == 2 else None


def drop_unused_constants(graph: onnx.GraphProto, candidates: set[str]) -> None:
    """Remove the initializers / Constant nodes named in ``candidates`` that nothing reads."""
    used = {t for n in graph.node for t in n.input} | {o.name for o in graph.output}
    used |= subgraph_reads(graph)
    dead = candidates - used
    if not dead:
        return
    for i in reversed(range(len(graph.initializer))):
        if graph.initializer[i].name in dead:
            del graph.initializer[i]
    for i in reversed(range(len(graph.node))):
        node = graph.node[i]
        if node.op_type == "Constant" and node.output[0] in dead:
            del graph.node[i]


def apply_replacements(graph: onnx.GraphProto, replacements: list[Replacement]) -> None:
    """Write every replacement into ``graph`` in place; fills each one's ``new_nodes``.

    The convs are found in one scan; their nodes are built in graph order (names allocated in
    that order), then spliced in from the last conv to the first; the new weights are appended
    in graph order and the old kernels dropped once nothing reads them.
    """
    if not replacements:
        return
    position: dict[str, int] = {}
    for i, node in enumerate(graph.node):
        if node.op_type == "Conv":
            position.setdefault(node.output[0], i)
    names = NameAllocator(graph_names(graph))
    splices: list[tuple[int, list[onnx.NodeProto]]] = []
    new_inits: list[onnx.TensorProto] = []
    old_kernels: set[str] = set()
    for r in replacements:
        i = position[r.output]
        conv = graph.node[i]
        nodes, inits = sk_nodes(
            conv, r.real, r.weights, names, r.real.shuffle_impl, r.in_spatial, r.out_spatial
        )
        r.new_nodes = [n.name for n in nodes]
        splices.append((i, nodes))
        new_inits.extend(inits)
        old_kernels.add(conv.input[1])
    for i, nodes in sorted(splices, key=lambda s: s[0], reverse=True):
        del graph.node[i]
        for k, node in enumerate(nodes):
            graph.node.insert(i + k, node)
    graph.initializer.extend(new_inits)
    drop_unused_constants(graph, old_kernels)


def replace_conv(
    graph: onnx.GraphProto,
    conv_output: str,
    real: Realisation,
    weights: list[np.ndarray],
    shuffle: str | None = None,
    in_spatial: tuple[int, ...] | None = None,
    out_spatial: tuple[int, ...] | None = None,
) -> list[str]:
    """Replace the one Conv writing ``conv_output`` by ``real``'s stages in place; new node names.

    ``shuffle``: "reshape" or "gather"; by default the realisation's ``shuffle_impl``;
    ``in_spatial``, ``out_spatial``: the conv's static spatial dims (constant shuffle targets).
    """
    conv = next(n for n in graph.node if n.op_type == "Conv" and n.output[0] == conv_output)
    if shuffle is not None and shuffle != real.shuffle_impl:
        real = dataclasses.replace(real, shuffle_impl=shuffle)
    r = Replacement(conv.name or conv_output, conv.input[0], conv_output, real, weights)
    r.in_spatial, r.out_spatial = in_spatial, out_spatial
    apply_replacements(graph, [r])
    return r.new_nodes
