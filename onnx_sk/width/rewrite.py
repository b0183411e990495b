"""WidenPass (Mode 2): give every channel space its new width, consistently, in one rewrite.

Every edit found by the channel rules is applied to a copy of the model:

- a constant that follows channels (:class:`~onnx_sk.width.rules.ConstEdit`) gets its new
  shape; old entries keep their values at the block-embedded positions
  (:meth:`~onnx_sk.width.analysis.ChannelAnalysis.positions`: with granularity ``d`` a space's ``d`` blocks
  each keep their old channels first, so group and shuffle structure map old onto old);
  new entries are He-normal weights (``he``) or the rule's neutral value (BN scale 1, bias 0);
  with ``preserve=True`` every weight that *consumes* a new channel is zero, so the new
  channels never reach the old ones and the widened network computes the same outputs;
- integer constants and attributes (:class:`~onnx_sk.width.rules.IntEdit`) are recomputed;
- a constant used elsewhere, or held in a ``Constant`` node, is written as a new initializer
  named after its node, so no other user sees the change; stale ``value_info`` is dropped.

Randomness comes from the caller's seeded generator, edit by edit in graph order.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnx_sk.width.rules import ConstEdit, IntEdit
from onnx_sk.width.analysis import ChannelAnalysis, Widths


def _widened(
    analysis: ChannelAnalysis, e: ConstEdit, old: np.ndarray, widths: Widths, preserve: bool,
    rng: np.random.Generator,
) -> np.ndarray:  # fmt: skip
    shape = analysis.new_shape(e, tuple(old.shape), widths)
    if e.fill == "he":
        fan_in = max(1, math.prod(shape[a] for a in e.fan_in))
        new = rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)
    else:
        new = np.full(shape, float(e.fill))
    new = new.astype(old.dtype)
    index: list[np.ndarray] = [np.arange(n) for n in old.shape]
    for axis, m in e.axes:
        index[axis] = analysis.positions(m, widths)
        if preserve and m.role == "in":
            fresh = np.ones(shape[axis], dtype=bool)
            fresh[index[axis]] = False
            sl = [slice(None)] * new.ndim
            sl[axis] = fresh
            new[tuple(sl)] = 0
    new[np.ix_(*index)] = old
    return new


class _Names:
    def __init__(self, graph: onnx.GraphProto) -> None:
        self.taken = {i.name for i in graph.initializer} | {o for n in graph.node for o in n.output}
        self.taken |= {n.name for n in graph.node} | {v.name for v in graph.input}

    def __call__(self, base: str) -> str:
        name, k = base, 1
        while name in self.taken:
            k += 1
            name = f"{base}_{k}"
        self.taken.add(name)
        return name


def _uses(graph: onnx.GraphProto) -> dict[str, int]:
    out: dict[str, int] = {}
    for n in graph.node:
        for t in n.input:
            out[t] = out.get(t, 0) + 1
    for v in graph.output:
        out[v.name] = out.get(v.name, 0) + 1
    return out


def _set_input(node: onnx.NodeProto, k: int, name: str) -> None:
    while len(node.input) <= k:
        node.input.append("")
    node.input[k] = name


def _int_edit(
    analysis: ChannelAnalysis, e: IntEdit, node: onnx.NodeProto, widths: Widths, names
) -> onnx.TensorProto | None:
    """Apply one IntEdit; returns the new int64 initializer when the value is an input."""
    parts = [np.atleast_1d(np.asarray(analysis.value(v, widths), dtype=np.int64)) for v in e.values]
    values = np.concatenate(parts)
    if e.attr is not None:
        keep = [a for a in node.attribute if a.name != e.attr]
        del node.attribute[:]
        node.attribute.extend(keep)
        value = int(values[0]) if e.scalar else [int(v) for v in values]
        node.attribute.append(helper.make_attribute(e.attr, value))
        return None
    assert e.input is not None
    base = node.name or node.output[0]
    tensor = numpy_helper.from_array(values, names(f"{base}/widen/input{e.input}"))
    _set_input(node, e.input, tensor.name)
    if e.drop_attr:
        keep = [a for a in node.attribute if a.name != e.drop_attr]
        del node.attribute[:]
        node.attribute.extend(keep)
    return tensor


def run_widen(
    model: onnx.ModelProto,
    analysis: ChannelAnalysis,
    widths: Widths,
    preserve: bool,
    rng: np.random.Generator,
) -> onnx.ModelProto:
    """A widened copy of ``model`` (the model ``analysis`` was made from)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    names = _Names(graph)
    uses = _uses(graph)
    inits = {i.name: i for i in graph.initializer}
    consts = analysis.walk.consts
    new_inits: list[onnx.TensorProto] = []
    for e in analysis.walk.const_edits:  # graph order, one draw after another
        node = graph.node[e.node]
        name = node.input[e.input]
        value = _widened(analysis, e, consts[name], widths, preserve, rng)
        if name in inits and uses.get(name, 0) == 1:
            inits[name].CopyFrom(numpy_helper.from_array(value, name))
            continue
        tensor = numpy_helper.from_array(value, names(f"{node.name or node.output[0]}/widen/{name}"))
        new_inits.append(tensor)
        node.input[e.input] = tensor.name
    for e in analysis.walk.int_edits:
        tensor = _int_edit(analysis, e, graph.node[e.node], widths, names)
        if tensor is not None:
            new_inits.append(tensor)
    graph.initializer.extend(new_inits)
    used = _uses(graph)
    keep = [i for i in graph.initializer if used.get(i.name)]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    del graph.value_info[:]
    return out
