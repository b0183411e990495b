"""The channel rule of ``Reshape``: a channel shuffle, a reshape that keeps the channels, or a freeze.

(a) A channel shuffle ``Reshape(x, [.., g, C/g, ..]) → Transpose(swap) → Reshape(back, constant
or Shape(x))`` is recognised as one unit: ``x`` and the result get spaces tied by a shuffle
constraint (:meth:`~onnx_sk.maths.channel_spaces.Spaces.shuffle`), the two reshape targets are
recomputed from the new widths, and the Transpose and the second Reshape are skipped by the walk.

(b) A reshape that keeps the dims before the channel axis and merges the channels with trailing
dims (flatten-like) or keeps them (squeeze/unsqueeze-like) moves the layout; its target's
channel dim is recomputed.

(c) Anything else (a detection head reshaping channels into boxes) freezes the channels.

Registered in :data:`RESHAPE_RULES` with ``@rule(*op_types)``; a duplicate is an error.
"""

from __future__ import annotations

import math

import onnx

from onnx_sk.graph.convs import attrs
from onnx_sk.graph.shapes import Shape
from onnx_sk.maths.channel_spaces import Layout
from onnx_sk.width.edits import Count, IntEdit, IntValue
from onnx_sk.width.state import Rule, Walk, known, label, registrar

RESHAPE_RULES: dict[str, Rule] = {}
rule = registrar(RESHAPE_RULES)


def reshaped(s_in: Shape | None, target: list[int] | None) -> Shape | None:
    """The output dims of ``Reshape(x, target)`` (``allowzero`` 0: a 0 copies the input's dim,
    one -1 takes the rest) when ``x``'s dims are all known; None otherwise."""
    dims = known(s_in) if s_in is not None else None
    if dims is None or target is None:
        return None
    out = [dims[k] if t == 0 and k < len(dims) else t for k, t in enumerate(target)]
    if out.count(-1) > 1 or any(d < -1 for d in out):
        return None
    if -1 in out:
        rest = math.prod(d for d in out if d != -1)
        if rest == 0 or math.prod(dims) % rest:
            return None
        out[out.index(-1)] = math.prod(dims) // rest
    return tuple(out) if math.prod(out) == math.prod(dims) else None


@rule("Reshape")
def _reshape(w: Walk, i: int, node: onnx.NodeProto) -> None:
    lay = w.layouts.get(node.input[0])
    if lay is None:
        w.copy(node.input[0], node.output[0])
        return
    value = w.folded(node, 1)  # a constant, or computed from static dims alone
    s_in = w.shape(node.input[0])
    s_out = w.shapes.get(node.output[0]) or reshaped(s_in, value)
    if value is None or s_in is None or s_out is None:
        w.freeze_node(node, f"{label(node)}: target shape computed at run time")
        return
    target = value
    if _shuffle(w, i, node, lay, target, s_in, s_out):
        return
    ch = lay.axis
    c = w.total(lay) * lay.inner
    same_prefix = len(s_out) > ch and tuple(s_out[:ch]) == tuple(s_in[:ch])
    d_out = s_out[ch] if same_prefix else None
    rest_in, rest_out = known(s_in[ch + 1 :]), known(s_out[ch + 1 :] if len(s_out) > ch else ())
    if d_out and d_out % c == 0 and rest_in is not None and rest_out is not None:
        q = d_out // c
        k = next((k for k in range(len(rest_in) + 1) if math.prod(rest_in[:k]) == q), None)
        if k is not None and math.prod(rest_in[k:]) == math.prod(rest_out):
            if target[ch] > 0:
                new: list[IntValue] = list(target)
                new[ch] = Count(lay.atoms, mult=lay.inner * q)
                w.int_edits.append(IntEdit(i, tuple(new), input=1))
            elif target[ch] == 0 and q != 1:
                w.freeze_node(node, f"{label(node)}: copies a dim that widening changes")
                return
            w.layouts[node.output[0]] = Layout(ch, lay.atoms, lay.inner * q)
            return
    dims = "×".join(str(d) for d in s_out)
    w.freeze_node(node, f"{label(node)} reshapes {c} channels into {dims}")


def _shuffle(
    w: Walk, i: int, node: onnx.NodeProto, lay: Layout, target: list[int], s_in: Shape, s_out: Shape
) -> bool:
    """Reshape(x, [.., g, C/g, ..]) → Transpose(swap) → Reshape(back): a channel shuffle."""
    ch, c = lay.axis, w.total(lay)
    if lay.inner != 1 or len(s_out) < ch + 2 or len(target) < ch + 2:
        return False
    g, per = s_out[ch], s_out[ch + 1]
    if not g or not per or g * per != c or g == 1 or tuple(s_out[:ch]) != tuple(s_in[:ch]):
        return False
    transpose = w.only_consumer(node.output[0], "Transpose")
    if transpose is None:
        return False
    perm = list(attrs(transpose[1]).get("perm", []))
    swap = list(range(len(perm)))
    swap[ch], swap[ch + 1] = ch + 1, ch
    back = w.only_consumer(transpose[1].output[0], "Reshape")
    if perm != swap or back is None:
        return False
    k, r = back
    back_target = w.folded(r, 1)
    s_back = w.shapes.get(r.output[0]) or reshaped(tuple(s_out[p] for p in perm), back_target)
    if s_back is None or tuple(s_back) != tuple(s_in):
        return False
    source = w.index.producer(r.input[1])
    shape_of_x = (
        source is not None and source.op_type == "Shape" and source.input[0] == node.input[0]
    )
    if back_target is None and not shape_of_x:
        return False
    if target[ch] != g:
        return False
    post = (w.spaces.new(c),)
    w.spaces.shuffle(lay.atoms, post, g, label(node))
    if target[ch + 1] > 0:
        new: list[IntValue] = list(target)
        new[ch + 1] = Count(lay.atoms, div=g)
        w.int_edits.append(IntEdit(i, tuple(new), input=1))
    if back_target is not None:
        if back_target[ch] > 0:
            bt: list[IntValue] = list(back_target)
            bt[ch] = Count(post)
            w.int_edits.append(IntEdit(k, tuple(bt), input=1))
    w.skip.update({transpose[0], k})
    w.layouts[r.output[0]] = Layout(ch, post)
    return True
