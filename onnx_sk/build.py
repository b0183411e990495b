"""The only code that writes SK nodes into a graph (onnx-graphsurgeon).

One dense ``Conv`` becomes the stages of a :class:`~onnx_sk.designs.Realisation`:

- the spatial stage carries the conv's ``kernel_shape``, ``strides``, ``pads`` (asymmetric kept),
  ``dilations`` and ``auto_pad``; the other stages are 1×1 convs with their ``group``;
- only the last stage carries the bias, and it writes the original output tensor, so consumers
  and graph outputs never move;
- a channel shuffle with ``g`` groups on ``C`` channels is
  ``Reshape(x, [0, g, C/g, -1]) → Transpose(perm=[0, 2, 1, 3]) → Reshape(·, Shape(x))``:
  no baked batch, height or width, so dynamic shapes keep working; or, when the realisation's
  ``shuffle_impl`` is ``"gather"``, one ``Gather(x, perm, axis=1)`` with
  ``perm = designs.shuffle_permutation(C, g)`` (output channel ``o`` reads ``perm[o]``);
- new nodes and tensors get deterministic names derived from the original conv's name.

The original node is detached (its input/output lists cleared), never a shared tensor.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnx_sk.designs import Realisation, Stage, shuffle_permutation
from onnx_sk.spec import ConvSpec


def _spatial_attrs(spec: ConvSpec) -> dict:
    a = {
        "kernel_shape": list(spec.kernel_shape),
        "strides": list(spec.strides),
        "dilations": list(spec.dilations),
    }
    if spec.auto_pad in ("SAME_UPPER", "SAME_LOWER", "VALID"):
        a["auto_pad"] = spec.auto_pad
    else:
        a["pads"] = list(spec.pads)
    return a


def _stage_attrs(stage: Stage, spec: ConvSpec) -> dict:
    if stage.spatial:
        a = _spatial_attrs(spec)
    else:
        a = {"kernel_shape": [1] * spec.spatial_rank}
    a["group"] = stage.group
    return a


class _Namer:
    """Deterministic, collision-free names under the original conv's name."""

    def __init__(self, base: str, taken: set[str]) -> None:
        self.base, self.taken = base, taken

    def __call__(self, suffix: str) -> str:
        name, i = f"{self.base}/sk/{suffix}", 1
        while name in self.taken:
            i += 1
            name = f"{self.base}/sk/{suffix}_{i}"
        self.taken.add(name)
        return name


def _shuffle(graph: gs.Graph, x: gs.Variable, channels: int, groups: int, name) -> gs.Variable:
    """ShuffleNet channel shuffle of ``x`` [N, C, H, W] with ``groups`` groups."""
    shape_x = gs.Variable(name("shuffle/shape"), dtype=np.int64)
    graph.nodes.append(gs.Node("Shape", name("shuffle/Shape"), inputs=[x], outputs=[shape_x]))
    split = gs.Constant(
        name("shuffle/split_shape"), np.array([0, groups, channels // groups, -1], dtype=np.int64)
    )
    r1 = gs.Variable(name("shuffle/grouped"), dtype=x.dtype or np.float32)
    graph.nodes.append(gs.Node("Reshape", name("shuffle/Reshape"), inputs=[x, split], outputs=[r1]))
    t = gs.Variable(name("shuffle/transposed"), dtype=x.dtype or np.float32)
    graph.nodes.append(
        gs.Node("Transpose", name("shuffle/Transpose"), {"perm": [0, 2, 1, 3]}, [r1], [t])
    )
    out = gs.Variable(name("shuffle/out"), dtype=x.dtype or np.float32)
    graph.nodes.append(
        gs.Node("Reshape", name("shuffle/Reshape_back"), inputs=[t, shape_x], outputs=[out])
    )
    return out


def _shuffle_gather(graph: gs.Graph, x: gs.Variable, channels: int, groups: int, name) -> gs.Variable:
    """The same channel shuffle as one Gather on axis 1 with constant indices [C]."""
    perm = gs.Constant(name("shuffle/indices"), shuffle_permutation(channels, groups).astype(np.int64))
    out = gs.Variable(name("shuffle/out"), dtype=x.dtype or np.float32)
    graph.nodes.append(gs.Node("Gather", name("shuffle/Gather"), {"axis": 1}, [x, perm], [out]))
    return out


SHUFFLES = {"reshape": _shuffle, "gather": _shuffle_gather}


def replace_conv(
    graph: gs.Graph,
    node: gs.Node,
    real: Realisation,
    weights: list[np.ndarray],
    bias: np.ndarray | None,
    taken: set[str],
) -> list[str]:
    """Replace ``node`` (a Conv of ``graph``) by ``real``'s stages; returns the new node names."""
    x, y = node.inputs[0], node.outputs[0]
    node.inputs.clear()
    node.outputs.clear()
    graph.nodes.remove(node)
    name = _Namer(node.name or y.name, taken)
    created_from = len(graph.nodes)
    current = x
    last = len(real.stages) - 1
    for i, (stage, w) in enumerate(zip(real.stages, weights, strict=True)):
        tag = f"{i}_{stage.kind.lower()}"
        inputs = [current, gs.Constant(name(f"{tag}/weight"), w)]
        if i == last and bias is not None:
            inputs.append(gs.Constant(name(f"{tag}/bias"), bias))
        out = y if i == last and stage.shuffle <= 1 else gs.Variable(name(f"{tag}/out"), dtype=x.dtype or np.float32)
        graph.nodes.append(gs.Node("Conv", name(tag), _stage_attrs(stage, real.spec), inputs, [out]))
        current = out
        if stage.shuffle > 1:
            current = SHUFFLES[real.shuffle_impl](graph, current, stage.c_out, stage.shuffle, name)
    if current is not y:  # a shuffle after the last stage (never in the four designs)
        graph.nodes.append(gs.Node("Identity", name("out"), inputs=[current], outputs=[y]))
    return [n.name for n in graph.nodes[created_from:]]
