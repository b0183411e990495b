"""Channel rules of ops that cut, join or move the channel axis.

- ``Concat`` on the channel axis joins layouts (segments); on another axis it ties its inputs.
- ``Split``/``Slice`` on the channel axis cut the range (the cut applies to the whole space);
  their sizes/bounds are recomputed from the new widths.
- ``Gather`` on the channel axis: a contiguous range is a Slice, a ShuffleNet permutation a
  channel shuffle (indices recomputed); anything else freezes.
- ``Transpose``/``Squeeze``/``Unsqueeze``/``Flatten``/``Reduce*`` track where the axis goes;
  ``Flatten`` makes each channel own ``H·W`` features (what a classifier Gemm consumes).
- ``Resize``/``Upsample``/``Pad``: channels pass if the channel axis is not scaled or padded.
- ``Softmax`` and friends over the channel axis, reductions over it: frozen.

``Reshape`` (channel shuffles, flatten-like reshapes) has its rule in
:mod:`onnx_sk.width.rules_reshape`. An op is registered in :data:`AXIS_RULES` with
``@rule(*op_types)``; a duplicate is an error.
"""

from __future__ import annotations

import math

import numpy as np
import onnx

from onnx_sk.graph.convs import attrs
from onnx_sk.maths.channel_spaces import Layout
from onnx_sk.maths.designs import shuffle_permutation
from onnx_sk.width.edits import Count, IntEdit, IntValue, Perm
from onnx_sk.width.state import Rule, Walk, axis_of, known, label, registrar

AXIS_RULES: dict[str, Rule] = {}
rule = registrar(AXIS_RULES)


@rule("Concat")
def _concat(w: Walk, i: int, node: onnx.NodeProto) -> None:
    rank = w.rank(node.output[0]) or w.rank(node.input[0])
    lays = [w.layouts.get(t) for t in node.input]
    if not any(lays):
        if any(t in w.opaque for t in node.input):
            w.opaque[node.output[0]] = next(w.opaque[t] for t in node.input if t in w.opaque)
        return
    axis = axis_of(int(attrs(node).get("axis", 0)), rank or 0)
    first = next(lay for lay in lays if lay)
    if axis != first.axis:
        for t in node.input:
            lay = w.layouts.get(t) or w.need(t, first.axis)
            if lay is None or lay.axis != first.axis:
                w.freeze_node(node, f"{label(node)}: an input has no channels on axis {first.axis}")
                return
            w.spaces.unite(first.atoms, lay.atoms)
        w.layouts[node.output[0]] = first
        return
    atoms: list[int] = []
    for t, lay in zip(node.input, lays, strict=False):
        if lay is None:
            dims = w.constants.dims(t)  # None: not a constant
            why = f"{label(node)}: input {t!r} is not a channel tensor"
            if dims is not None:
                lay = Layout(axis, (w.spaces.new(int(dims[axis]), why),), first.inner)
            else:
                lay = w.need(t, axis)
        if lay is None or lay.axis != axis or lay.inner != first.inner:
            w.freeze_node(node, f"{label(node)}: inputs hold channels differently")
            return
        atoms.extend(lay.atoms)
    w.layouts[node.output[0]] = Layout(axis, tuple(atoms), first.inner)


@rule("Split")
def _split(w: Walk, i: int, node: onnx.NodeProto) -> None:
    lay = w.layouts.get(node.input[0])
    outs = [t for t in node.output]
    if lay is None:
        for t in outs:
            w.copy(node.input[0], t)
        return
    rank = w.rank(node.input[0]) or 0
    axis = axis_of(int(attrs(node).get("axis", 0)), rank)
    if axis != lay.axis:
        for t in outs:
            w.layouts[t] = lay
        return
    total = w.total(lay) * lay.inner
    sizes = w.ints(node, 1, "split")
    if sizes is None:
        if total % len(outs):
            w.freeze_node(node, f"{label(node)}: uneven split")
            return
        sizes = [total // len(outs)] * len(outs)
    if len(node.input) > 1 and node.input[1] and node.input[1] not in w.constants:
        w.freeze_node(node, f"{label(node)}: split sizes computed at run time")
        return
    if any(s % lay.inner for s in sizes) or sum(sizes) != total:
        w.freeze_node(node, f"{label(node)}: split sizes do not follow whole channels")
        return
    offsets = list(np.cumsum([s // lay.inner for s in sizes])[:-1])
    pieces = w.spaces.cut(lay.atoms, [int(o) for o in offsets if 0 < o < w.total(lay)])
    pieces = _align_pieces(w, lay, sizes, pieces)
    for t, p in zip(outs, pieces, strict=False):
        w.layouts[t] = Layout(axis, p, lay.inner)
    values = tuple(Count(p, mult=lay.inner) for p in pieces)
    if w.opset >= 13:
        w.int_edits.append(IntEdit(i, values, input=1, drop_attr="num_outputs"))
    else:
        w.int_edits.append(IntEdit(i, values, attr="split"))


def _align_pieces(
    w: Walk, lay: Layout, sizes: list[int], pieces: list[tuple[int, ...]]
) -> list[tuple[int, ...]]:
    """Pieces for every output, empty ones included (a zero-size split gets no atoms)."""
    out: list[tuple[int, ...]] = []
    k = 0
    for s in sizes:
        if s == 0:
            out.append(())
        else:
            out.append(pieces[k])
            k += 1
    return out


@rule("Slice")
def _slice(w: Walk, i: int, node: onnx.NodeProto) -> None:
    """Bounds may be computed at run time where they come from static dims alone (torch's
    ``chunk``): they are folded, and written back as constants of the new widths. A slice of
    other axes passes the channels whatever its bounds."""
    lay = w.layouts.get(node.input[0])
    if lay is None:
        w.copy(node.input[0], node.output[0])
        return
    if w.opset < 10:
        w.freeze_node(node, f"{label(node)}: attribute-form Slice (opset < 10)")
        return
    rank = w.rank(node.input[0]) or 0
    given_axes = len(node.input) > 3 and bool(node.input[3])
    axes = w.folded(node, 3) if given_axes else None
    if given_axes and axes is None:
        w.freeze_node(node, f"{label(node)}: axes computed at run time")
        return
    if axes is not None and lay.axis not in [axis_of(a, rank) for a in axes]:
        w.layouts[node.output[0]] = lay
        return
    starts, ends = w.folded(node, 1), w.folded(node, 2)
    steps = w.folded(node, 4) if len(node.input) > 4 and node.input[4] else None
    if starts is None or ends is None or (len(node.input) > 4 and node.input[4] and not steps):
        w.freeze_node(node, f"{label(node)}: bounds computed at run time")
        return
    axes = [axis_of(a, rank) for a in (axes or range(len(starts)))]
    steps = steps or [1] * len(starts)
    if lay.axis not in axes:
        w.layouts[node.output[0]] = lay
        return
    k = axes.index(lay.axis)
    total = w.total(lay)
    if steps[k] != 1 or lay.inner != 1:
        w.freeze_node(node, f"{label(node)}: strided slice of channels")
        return
    s, e = starts[k], ends[k]
    s = min(max(s + total if s < 0 else s, 0), total)
    e = min(max(e + total if e < 0 else e, 0), total)
    if e <= s:
        w.freeze_node(node, f"{label(node)}: empty slice of channels")
        return
    cuts = [c for c in (s, e) if 0 < c < total]
    pieces = w.spaces.cut(lay.atoms, cuts)
    before = pieces[0] if s > 0 else ()
    mid = pieces[1] if s > 0 else pieces[0]
    w.layouts[node.output[0]] = Layout(lay.axis, mid, 1)
    new_s: list[IntValue] = list(starts)
    new_s[k] = Count(before) if s > 0 else 0
    w.int_edits.append(IntEdit(i, tuple(new_s), input=1))
    new_e: list[IntValue] = list(ends)
    new_e[k] = Count(before + mid)
    w.int_edits.append(IntEdit(i, tuple(new_e), input=2))


@rule("Gather")
def _gather(w: Walk, i: int, node: onnx.NodeProto) -> None:
    lay = w.layouts.get(node.input[0])
    if lay is None:
        w.copy(node.input[0], node.output[0])
        return
    rank = w.rank(node.input[0]) or 0
    axis = axis_of(int(attrs(node).get("axis", 0)), rank)
    idx = w.const(node, 1)
    if idx is None:
        w.freeze_node(node, f"{label(node)}: indices computed at run time")
        return
    if axis != lay.axis:
        moved = lay.axis if axis > lay.axis else lay.axis + idx.ndim - 1
        w.layouts[node.output[0]] = Layout(moved, lay.atoms, lay.inner)
        return
    total = w.total(lay)
    flat = idx.reshape(-1).astype(np.int64)
    flat = np.where(flat < 0, flat + total, flat)
    if idx.ndim != 1 or lay.inner != 1:
        w.freeze_node(node, f"{label(node)}: picks channels in a way widening cannot follow")
        return
    if len(flat) and np.array_equal(flat, np.arange(flat[0], flat[0] + len(flat))):
        s, e = int(flat[0]), int(flat[0]) + len(flat)
        pieces = w.spaces.cut(lay.atoms, [c for c in (s, e) if 0 < c < total])
        before = pieces[0] if s > 0 else ()
        mid = pieces[1] if s > 0 else pieces[0]
        w.layouts[node.output[0]] = Layout(axis, mid)
        w.int_edits.append(IntEdit(i, (Perm(mid, 1, Count(before)),), input=1))
        return
    for g in range(2, total):
        if (
            total % g == 0
            and len(flat) == total
            and np.array_equal(flat, shuffle_permutation(total, g))
        ):
            post = (w.spaces.new(total),)
            w.spaces.shuffle(lay.atoms, post, g, label(node))
            w.layouts[node.output[0]] = Layout(axis, post)
            w.int_edits.append(IntEdit(i, (Perm(lay.atoms, g),), input=1))
            return
    w.freeze_node(node, f"{label(node)}: picks channels in a way widening cannot follow")


@rule("Transpose")
def _transpose(w: Walk, i: int, node: onnx.NodeProto) -> None:
    lay = w.layouts.get(node.input[0])
    if lay is None:
        w.copy(node.input[0], node.output[0])
        return
    rank = w.rank(node.input[0]) or 0
    perm = list(attrs(node).get("perm", list(range(rank))[::-1]))
    w.layouts[node.output[0]] = Layout(perm.index(lay.axis), lay.atoms, lay.inner)


@rule("Squeeze", "Unsqueeze")
def _squeeze(w: Walk, i: int, node: onnx.NodeProto) -> None:
    lay = w.layouts.get(node.input[0])
    if lay is None:
        w.copy(node.input[0], node.output[0])
        return
    axes = w.ints(node, 1, "axes")
    rank_in = w.rank(node.input[0])
    if axes is None or rank_in is None:
        if node.op_type == "Squeeze" and rank_in is not None and axes is None:
            s = w.shape(node.input[0]) or ()
            axes = [k for k, d in enumerate(s) if d == 1]
        else:
            w.freeze_node(node, f"{label(node)}: axes unknown")
            return
    if node.op_type == "Squeeze":
        axes = [axis_of(a, rank_in) for a in axes]
        if lay.axis in axes:
            w.freeze_node(node, f"{label(node)}: squeezes the channel axis")
            return
        moved = lay.axis - sum(1 for a in axes if a < lay.axis)
    else:
        rank_out = rank_in + len(axes)
        axes = sorted(axis_of(a, rank_out) for a in axes)
        moved = lay.axis
        for a in axes:
            if a <= moved:
                moved += 1
    w.layouts[node.output[0]] = Layout(moved, lay.atoms, lay.inner)


REDUCES = (
    "ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceProd", "ReduceL1", "ReduceL2",
    "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare",
)  # fmt: skip


@rule(*REDUCES)
def _reduce(w: Walk, i: int, node: onnx.NodeProto) -> None:
    lay = w.layouts.get(node.input[0])
    if lay is None:
        w.copy(node.input[0], node.output[0])
        return
    a = attrs(node)
    rank = w.rank(node.input[0]) or 0
    axes = w.ints(node, 1, "axes")
    if len(node.input) > 1 and node.input[1] and axes is None:
        w.freeze_node(node, f"{label(node)}: axes computed at run time")
        return
    if not axes:
        if a.get("noop_with_empty_axes", 0):
            w.layouts[node.output[0]] = lay
            return
        axes = list(range(rank))
    axes = [axis_of(x, rank) for x in axes]
    if lay.axis in axes:
        w.freeze_node(node, f"{label(node)}: reduces over the channels")
        return
    keep = int(a.get("keepdims", 1))
    moved = lay.axis if keep else lay.axis - sum(1 for x in axes if x < lay.axis)
    w.layouts[node.output[0]] = Layout(moved, lay.atoms, lay.inner)


@rule("Softmax", "LogSoftmax", "Hardmax")
def _softmax(w: Walk, i: int, node: onnx.NodeProto) -> None:
    lay = w.layouts.get(node.input[0])
    if lay is None:
        w.copy(node.input[0], node.output[0])
        return
    rank = w.rank(node.input[0]) or 0
    axis = axis_of(int(attrs(node).get("axis", -1 if w.opset >= 13 else 1)), rank)
    covers = axis == lay.axis if w.opset >= 13 else axis <= lay.axis
    if covers:
        w.freeze_node(node, f"{label(node)}: normalises over the channels")
        return
    w.layouts[node.output[0]] = lay


@rule("Resize", "Upsample")
def _resize(w: Walk, i: int, node: onnx.NodeProto) -> None:
    lay = w.layouts.get(node.input[0])
    if lay is None:
        w.copy(node.input[0], node.output[0])
        return
    k_scales = 1 if node.op_type == "Upsample" or w.opset < 11 else 2
    scales = w.const(node, k_scales)
    sizes = w.const(node, 3) if node.op_type == "Resize" and w.opset >= 11 else None
    has = [len(node.input) > k and bool(node.input[k]) for k in (k_scales, 3)]
    if (has[0] and scales is None) or (has[1] and sizes is None) or "axes" in attrs(node):
        w.freeze_node(node, f"{label(node)}: scales/sizes computed at run time")
        return
    if scales is not None and scales.size and float(scales.reshape(-1)[lay.axis]) != 1.0:
        w.freeze_node(node, f"{label(node)}: scales the channel axis")
        return
    if sizes is not None and sizes.size:
        new: list[IntValue] = [int(v) for v in sizes.reshape(-1)]
        new[lay.axis] = Count(lay.atoms, mult=lay.inner)
        w.int_edits.append(IntEdit(i, tuple(new), input=3))
    w.layouts[node.output[0]] = lay


@rule("Pad")
def _pad(w: Walk, i: int, node: onnx.NodeProto) -> None:
    lay = w.layouts.get(node.input[0])
    if lay is None:
        w.copy(node.input[0], node.output[0])
        return
    pads = w.ints(node, 1, "pads")
    rank = w.rank(node.input[0]) or 0
    axes = w.ints(node, 3, "-") if len(node.input) > 3 and node.input[3] else list(range(rank))
    if pads is None or axes is None:
        w.freeze_node(node, f"{label(node)}: pads computed at run time")
        return
    axes = [axis_of(a, rank) for a in axes]
    n = len(axes)
    if lay.axis in axes:
        k = axes.index(lay.axis)
        if pads[k] or pads[k + n]:
            w.freeze_node(node, f"{label(node)}: pads the channel axis")
            return
    w.layouts[node.output[0]] = lay


@rule("Flatten")
def _flatten(w: Walk, i: int, node: onnx.NodeProto) -> None:
    lay = w.layouts.get(node.input[0])
    if lay is None:
        w.copy(node.input[0], node.output[0])
        return
    s = w.shape(node.input[0])
    axis = axis_of(int(attrs(node).get("axis", 1)), len(s) if s else 0)
    trailing = known(s[lay.axis + 1 :]) if s else None
    if axis != lay.axis or trailing is None:
        w.freeze_node(node, f"{label(node)}: mixes the channels with other axes")
        return
    w.layouts[node.output[0]] = Layout(1, lay.atoms, lay.inner * math.prod(trailing))
