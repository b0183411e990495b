"""WidenPass (Mode 2): give every channel space its new width, consistently, in one rewrite.

Every edit found by the channel rules is applied to a copy of the model:

- a constant that follows channels (:class:`~onnx_sk.width.edits.ConstEdit`) gets its new
  shape; old entries keep their values at the block-embedded positions
  (:meth:`~onnx_sk.width.analysis.ChannelAnalysis.positions`: with granularity ``d`` a space's
  ``d`` blocks each keep their old channels first, so group and shuffle structure map old onto old);
  new entries are He-normal weights (``he``) or the rule's neutral value (BN scale 1, bias 0);
  with ``preserve=True`` every weight that *consumes* a new channel is zero, so the new
  channels never reach the old ones and the widened network computes the same outputs;
- integer constants and attributes (:class:`~onnx_sk.width.edits.IntEdit`) are recomputed;
- a constant used elsewhere, or held in a ``Constant`` node, is written as a new initializer
  named after its node, so no other user sees the change; stale ``value_info`` is dropped;
- an integer input computed at run time from static dims (torch's ``chunk`` bounds, folded by
  :mod:`onnx_sk.graph.shape_arith`) becomes a constant of the new widths, and the nodes that
  computed it, read by nothing else now, are removed.

Randomness comes from the caller's seeded generator, edit by edit in graph order
(:func:`~onnx_sk.maths.weight_init.he_normal`); new names come from the graph's
:class:`~onnx_sk.graph.index.NameAllocator`.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnx_sk.graph.index import GraphIndex, NameAllocator, subgraph_reads
from onnx_sk.maths.weight_init import he_normal
from onnx_sk.width.analysis import ChannelAnalysis, Widths
from onnx_sk.width.edits import ConstEdit, IntEdit


def _widened(
    analysis: ChannelAnalysis,
    e: ConstEdit,
    old: np.ndarray,
    widths: Widths,
    preserve: bool,
    rng: np.random.Generator,
) -> np.ndarray:
    """The new value of the constant ``old`` under edit ``e``: old entries embedded, new drawn."""
    shape = analysis.new_shape(e, tuple(old.shape), widths)
    if e.fill == "he":
        fan_in = max(1, math.prod(shape[a] for a in e.fan_in))
        new = he_normal(shape, fan_in, rng, old.dtype)
    else:
        new = np.full(shape, float(e.fill)).astype(old.dtype)
    index: list[np.ndarray] = [np.arange(n) for n in old.shape]
    for axis, m in e.axes:
        index[axis] = analysis.positions(m, widths)
        if preserve and m.role == "in":
            fresh = np.ones(shape[axis], dtype=bool)
            fresh[index[axis]] = False
            sl: list[slice | np.ndarray] = [slice(None)] * new.ndim
            sl[axis] = fresh
            new[tuple(sl)] = 0
    new[np.ix_(*index)] = old
    return new


def _set_input(node: onnx.NodeProto, k: int, name: str) -> None:
    while len(node.input) <= k:
        node.input.append("")
    node.input[k] = name


def _drop_attr(node: onnx.NodeProto, name: str) -> None:
    keep = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(keep)


def _int_edit(
    analysis: ChannelAnalysis,
    e: IntEdit,
    node: onnx.NodeProto,
    widths: Widths,
    names: NameAllocator,
) -> onnx.TensorProto | None:
    """Apply one IntEdit; returns the new int64 initializer when the value is an input."""
    parts = [np.atleast_1d(np.asarray(analysis.value(v, widths), dtype=np.int64)) for v in e.values]
    values = np.concatenate(parts)
    if e.attr is not None:
        _drop_attr(node, e.attr)
        value = int(values[0]) if e.scalar else [int(v) for v in values]
        node.attribute.append(helper.make_attribute(e.attr, value))
        return None
    assert e.input is not None
    base = node.name or node.output[0]
    tensor = numpy_helper.from_array(values, names.fresh(f"{base}/widen/input{e.input}"))
    _set_input(node, e.input, tensor.name)
    if e.drop_attr:
        _drop_attr(node, e.drop_attr)
    return tensor


def _drop_dead(graph: onnx.GraphProto, tensors: set[str]) -> None:
    """Remove the nodes that computed ``tensors`` and whose outputs nothing reads now (going
    back through their inputs); ONNX ops have no side effects."""
    outputs = {o.name for o in graph.output}  # and what If/Loop bodies read from outside
    outputs |= subgraph_reads(graph)
    todo = set(tensors)
    while todo:
        index = GraphIndex(graph)
        dead = [
            i
            for i, node in enumerate(graph.node)
            if any(o in todo for o in node.output)
            and not any(o in outputs or index.uses(o) for o in node.output if o)
        ]
        if not dead:
            return
        todo = {t for i in dead for t in graph.node[i].input if t}
        for i in reversed(dead):
            del graph.node[i]


def run_widen(
    model: onnx.ModelProto,
    analysis: ChannelAnalysis,
    widths: Widths,
    preserve: bool,
    rng: np.random.Generator,
    skip: set[tuple[int, int]] | frozenset[tuple[int, int]] = frozenset(),
    copy: bool = True,
) -> onnx.ModelProto:
    """A widened copy of ``model`` (the model ``analysis`` was made from); ``copy=False``
    widens ``model`` itself and returns it (no second copy of the weights in memory).

    ``skip``: the (node, input) constants left as they are, for a caller that replaces those
    nodes right after (the kernels of the convs Mode 1 replaces in he mode: their new weights
    are drawn fresh, so the widened dense kernel is never formed).
    """
    out = model
    if copy:
        out = onnx.ModelProto()
        out.CopyFrom(model)
    graph = out.graph
    before = GraphIndex(graph)  # uses and names of the graph as it was, before any edit
    names = before.names
    inits = {i.name: i for i in graph.initializer}
    nested = subgraph_reads(graph)  # read by name inside If/Loop/Scan bodies: never edited there
    constants = analysis.walk.constants
    new_inits: list[onnx.TensorProto] = []
    for e in analysis.walk.const_edits:  # graph order, one draw after another
        if (e.node, e.input) in skip:
            continue
        node = graph.node[e.node]
        name = node.input[e.input]
        old = constants.get(name)
        assert old is not None  # the rules edit constants only
        value = _widened(analysis, e, old, widths, preserve, rng)
        if name in inits and before.uses(name) == 1 and name not in nested:
            inits[name].CopyFrom(numpy_helper.from_array(value, name))
            continue
        base = node.name or node.output[0]
        tensor = numpy_helper.from_array(value, names.fresh(f"{base}/widen/{name}"))
        new_inits.append(tensor)
        node.input[e.input] = tensor.name
    replaced: set[str] = set()
    for ie in analysis.walk.int_edits:
        node = graph.node[ie.node]
        if ie.input is not None and len(node.input) > ie.input:
            replaced.add(node.input[ie.input])
        int_tensor = _int_edit(analysis, ie, node, widths, names)
        if int_tensor is not None:
            new_inits.append(int_tensor)
    graph.initializer.extend(new_inits)
    _drop_dead(graph, replaced)
    after = GraphIndex(graph)  # the edited graph: drop the initializers nothing reads now
    keep = [i for i in graph.initializer if after.uses(i.name) or i.name in nested]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    del graph.value_info[:]
    return out
