"""Shape and layout torch rules: Shape, Reshape, Gather, Concat, Split, Slice, Pad, Expand, Range …

Attribute-versus-input forms across opsets 11-20: Split's sizes are the ``split`` attribute
before 13 and an input from 13 (``num_outputs`` from 18; without either, equal parts of
⌈dim / n⌉ with a smaller last part); Squeeze/Unsqueeze ``axes`` become an input at 13; Pad's
``pads`` (and ``value``) become inputs at 11, ``axes`` at 18, mode ``wrap`` at 19.
Slice (inputs since 10): per axis, start and end are taken modulo the dim when negative and
clamped to [0, dim] (step > 0) or [−1, dim − 1] (step < 0); the result is range(start, end, step).
Pad indices per axis for pads (b, e), i ∈ [−b, dim + e): edge clamps i to [0, dim − 1], reflect
mirrors it without repeating the border, wrap takes i mod dim; negative pads crop.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from onnx import numpy_helper

from onnx_sk.training.registry import Attrs, Interpreter, Node, Value, axis_list, ints, op, scalar


@op("Shape")
def _shape(m: Interpreter, node: Node, a: Attrs, x: torch.Tensor) -> np.ndarray:
    dims = tuple(int(d) for d in x.shape)  # ints even while torch.jit traces
    return np.array(dims[a.get("start", 0) : a.get("end", len(dims))], dtype=np.int64)


@op("Size")
def _size(m: Interpreter, node: Node, a: Attrs, x: torch.Tensor) -> np.ndarray:
    return np.array(math.prod(int(d) for d in x.shape), dtype=np.int64)


@op("Reshape", host=(1,))
def _reshape(m: Interpreter, node: Node, a: Attrs, x: torch.Tensor, shape: Value) -> torch.Tensor:
    dims = ints(shape)
    if not a.get("allowzero", 0):
        dims = [x.shape[i] if s == 0 else s for i, s in enumerate(dims)]
    return x.reshape(dims)


@op("Transpose")
def _transpose(m: Interpreter, node: Node, a: Attrs, x: torch.Tensor) -> torch.Tensor:
    return x.permute(a.get("perm", list(reversed(range(x.dim())))))


@op("Gather")
def _gather(
    m: Interpreter, node: Node, a: Attrs, x: torch.Tensor, idx: torch.Tensor
) -> torch.Tensor:
    axis = a.get("axis", 0) % x.dim()
    idx = idx.to(torch.int64)
    flat = torch.remainder(idx.reshape(-1), x.shape[axis])  # negative indices count from the end
    out = torch.index_select(x, axis, flat)
    return out.reshape((*x.shape[:axis], *idx.shape, *x.shape[axis + 1 :]))


@op("GatherElements")
def _gather_elements(
    m: Interpreter, node: Node, a: Attrs, x: torch.Tensor, idx: torch.Tensor
) -> torch.Tensor:
    axis = a.get("axis", 0) % x.dim()
    return torch.gather(x, axis, torch.remainder(idx.to(torch.int64), x.shape[axis]))


@op("Concat")
def _concat(m: Interpreter, node: Node, a: Attrs, *xs: torch.Tensor) -> torch.Tensor:
    dtype = xs[0].dtype
    for x in xs[1:]:
        dtype = torch.promote_types(dtype, x.dtype)
    return torch.cat([x.to(dtype) for x in xs], a["axis"] % max(xs[0].dim(), 1))


@op("Flatten")
def _flatten(m: Interpreter, node: Node, a: Attrs, x: torch.Tensor) -> torch.Tensor:
    axis = a.get("axis", 1) % (x.dim() + 1)
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


@op("Squeeze", host=(1,))
def _squeeze(
    m: Interpreter, node: Node, a: Attrs, x: torch.Tensor, axes: Value | None = None
) -> torch.Tensor:
    axes = axes if axes is not None else a.get("axes")
    if axes is None:
        return x.squeeze()
    for ax in sorted(axis_list(axes, x.dim()), reverse=True):
        x = x.squeeze(ax)
    return x


@op("Unsqueeze", host=(1,))
def _unsqueeze(
    m: Interpreter, node: Node, a: Attrs, x: torch.Tensor, axes: Value | None = None
) -> torch.Tensor:
    dims = ints(axes if axes is not None else a["axes"])
    for ax in sorted(ax % (x.dim() + len(dims)) for ax in dims):
        x = x.unsqueeze(ax)
    return x


@op("Split", host=(1,), outputs=0)
def _split(
    m: Interpreter, node: Node, a: Attrs, x: torch.Tensor, split: Value | None = None
) -> tuple[torch.Tensor, ...]:
    axis = a.get("axis", 0) % x.dim()
    dim = int(x.shape[axis])
    if split is not None or "split" in a:
        sizes = ints(split if split is not None else a["split"])
    else:
        n = a.get("num_outputs", node.n_outputs)
        size = math.ceil(dim / n)
        sizes = [min(size, dim - i * size) for i in range(n)]
    return tuple(torch.split(x, sizes, axis))


def _slice_range(dim: int, start: int, end: int, step: int) -> range:
    start = start + dim if start < 0 else start
    end = end + dim if end < 0 else end
    if step > 0:
        return range(min(max(start, 0), dim), min(max(end, 0), dim), step)
    return range(min(max(start, 0), dim - 1), min(max(end, -1), dim - 1), step)


@op("Slice", host=(1, 2, 3, 4))
def _slice(
    m: Interpreter,
    node: Node,
    a: Attrs,
    x: torch.Tensor,
    starts: Value | None = None,
    ends: Value | None = None,
    axes: Value | None = None,
    steps: Value | None = None,
) -> torch.Tensor:
    if starts is None or ends is None:  # opset < 10: attributes (from 10 on, inputs both)
        starts, ends, axes = a["starts"], a["ends"], a.get("axes")
    first, last = ints(starts), ints(ends)
    dims = axis_list(axes, x.dim()) if axes is not None else list(range(len(first)))
    by = ints(steps) if steps is not None else [1] * len(first)
    for ax, s, e, st in zip(dims, first, last, by, strict=True):
        r = _slice_range(int(x.shape[ax]), s, e, st)
        if st > 0:
            x = (
                x.narrow(ax, r.start, len(r))
                if st == 1
                else x[(slice(None),) * ax + (slice(r.start, r.stop, st),)]
            )
        else:
            x = torch.index_select(x, ax, torch.tensor(list(r), dtype=torch.int64, device=x.device))
    return x


@op("Expand", host=(1,))
def _expand(m: Interpreter, node: Node, a: Attrs, x: torch.Tensor, shape: Value) -> torch.Tensor:
    return x.expand(torch.broadcast_shapes(tuple(x.shape), tuple(ints(shape))))


@op("Tile", host=(1,))
def _tile(m: Interpreter, node: Node, a: Attrs, x: torch.Tensor, repeats: Value) -> torch.Tensor:
    return x.repeat(ints(repeats))


@op("Range", host=(0, 1, 2))
def _range(
    m: Interpreter, node: Node, a: Attrs, start: Value, limit: Value, delta: Value
) -> torch.Tensor:
    like = start if isinstance(start, torch.Tensor) else torch.from_numpy(np.array(start))
    first, stop, step = scalar(start), scalar(limit), scalar(delta)
    n = max(math.ceil((stop - first) / step), 0)
    steps = torch.arange(n, dtype=like.dtype, device=like.device)
    return first + steps * step if n else steps


@op("ConstantOfShape", host=(0,))
def _constant_of_shape(m: Interpreter, node: Node, a: Attrs, shape: Value) -> torch.Tensor:
    if "value" not in a:
        return torch.zeros(ints(shape), dtype=torch.float32)
    value = torch.from_numpy(numpy_helper.to_array(a["value"]).copy()).reshape(-1)
    return value.expand(ints(shape)).clone() if ints(shape) else value[0].clone()


def _pad_check(a: Attrs) -> str | None:
    mode = a.get("mode", "constant")
    return None if mode in ("constant", "reflect", "edge", "wrap") else f"mode {mode!r}"


@op("Pad", host=(1, 2, 3), check=_pad_check)
def _pad(
    m: Interpreter,
    node: Node,
    a: Attrs,
    x: torch.Tensor,
    pads: Value | None = None,
    value: Value | None = None,
    axes: Value | None = None,
) -> torch.Tensor:
    widths = ints(pads if pads is not None else a["pads"])
    dims = axis_list(axes, x.dim()) if axes is not None else list(range(x.dim()))
    begin, end = widths[: len(dims)], widths[len(dims) :]
    mode = a.get("mode", "constant")
    if mode == "constant":
        fill = scalar(value) if value is not None and np.size(value) else a.get("value", 0.0)
        flat = [0] * (2 * x.dim())
        for ax, b, e in zip(dims, begin, end, strict=True):
            flat[2 * (x.dim() - 1 - ax)] = b
            flat[2 * (x.dim() - 1 - ax) + 1] = e
        return F.pad(x, flat, value=fill)
    for ax, b, e in zip(dims, begin, end, strict=True):
        if b or e:
            x = torch.index_select(x, ax, _pad_indices(x.shape[ax], b, e, mode, x.device))
    return x


def _pad_indices(dim: int, begin: int, end: int, mode: str, device: torch.device) -> torch.Tensor:
    i = torch.arange(-begin, dim + end, device=device)
    if mode == "edge":
        return i.clamp(0, dim - 1)
    if mode == "wrap":
        return torch.remainder(i, dim)
    period = 2 * (dim - 1)  # reflect: …, 2, 1, [0, 1, …, dim − 1], dim − 2, …
    i = torch.remainder(i, max(period, 1))
    return torch.where(i < dim, i, period - i)


@op("DepthToSpace", "SpaceToDepth")
def _depth_space(m: Interpreter, node: Node, a: Attrs, x: torch.Tensor) -> torch.Tensor:
    b = a["blocksize"]
    n, c, h, w = x.shape
    if node.op_type == "SpaceToDepth":
        y = x.reshape(n, c, h // b, b, w // b, b).permute(0, 3, 5, 1, 2, 4)
        return y.reshape(n, c * b * b, h // b, w // b)
    if a.get("mode", "DCR") == "DCR":
        y = x.reshape(n, b, b, c // (b * b), h, w).permute(0, 3, 4, 1, 5, 2)
    else:
        y = x.reshape(n, c // (b * b), b, b, h, w).permute(0, 1, 4, 2, 5, 3)
    return y.reshape(n, c // (b * b), h * b, w * b)
