"""Index torch rules: GatherND, ScatterND, ScatterElements, TopK, NonZero, CumSum, OneHot, Trilu,
Einsum.

GatherND (``batch_dims`` b): out[β, i] = data[β, indices[β, i]] for the b leading batch axes β,
shape indices.shape[:−1] + data.shape[b + k:] with k = indices.shape[−1].
ScatterND: out = data, then out[indices[i₀ … i_{q−2}]] = updates[i₀ … i_{q−2}] (``reduction``
add / mul accumulate; duplicate indices are undefined without a reduction, as in ONNX).
ScatterElements: out[… idx[j] …] = updates[j] along ``axis`` (negative indices count from the end).
TopK: the k largest (``largest`` 0: smallest) along ``axis``, sorted, with their indices.
CumSum: along ``axis`` (an input); ``exclusive`` shifts by one, ``reverse`` sums from the end.
OneHot: ``values`` [off, on] at depth classes along ``axis``, indices taken modulo depth.
Trilu: the upper (``upper`` 1) or lower triangle of the last two axes from diagonal k.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from onnx_sk.training.registry import Attrs, Interpreter, Node, Value, op, scalar


@op("GatherND")
def _gather_nd(
    m: Interpreter, node: Node, a: Attrs, data: torch.Tensor, indices: torch.Tensor
) -> torch.Tensor:
    b = a.get("batch_dims", 0)
    indices = indices.to(torch.int64)
    k = indices.shape[-1]
    batch = math.prod(data.shape[:b])
    flat = data.reshape(batch, *data.shape[b:])
    idx = indices.reshape(batch, -1, k)
    dims = torch.tensor(data.shape[b : b + k], device=idx.device)
    idx = torch.remainder(idx, dims)
    rows = torch.arange(batch, device=idx.device)[:, None].expand(batch, idx.shape[1])
    # a named tuple: a type checker for Python 3.10 reads flat[(rows, *…)] as 3.11's flat[rows, *…]
    where = (rows, *(idx[..., j] for j in range(k)))
    out = flat[where]  # [batch, M, rest…]
    return out.reshape((*indices.shape[:-1], *data.shape[b + k :]))


def _reduction_check(a: Attrs) -> str | None:
    r = a.get("reduction", "none")
    return None if r in ("none", "add", "mul") else f"reduction {r!r}"


@op("ScatterND", check=_reduction_check)
def _scatter_nd(
    m: Interpreter,
    node: Node,
    a: Attrs,
    data: torch.Tensor,
    indices: torch.Tensor,
    updates: torch.Tensor,
) -> torch.Tensor:
    indices = indices.to(torch.int64)
    k = indices.shape[-1]
    dims = torch.tensor(data.shape[:k], device=indices.device)
    idx = torch.remainder(indices, dims).reshape(-1, k)
    flat = updates.reshape(-1, *data.shape[k:])
    where = tuple(idx[:, i] for i in range(k))
    reduction = a.get("reduction", "none")
    if reduction == "mul":
        out = data.clone()
        for j in range(idx.shape[0]):  # index_put has no multiplying accumulate
            point = tuple(i[j] for i in where)
            out[point] = out[point] * flat[j]
        return out
    return data.index_put(where, flat, accumulate=reduction == "add")


@op("ScatterElements", check=_reduction_check)
def _scatter_elements(
    m: Interpreter,
    node: Node,
    a: Attrs,
    data: torch.Tensor,
    indices: torch.Tensor,
    updates: torch.Tensor,
) -> torch.Tensor:
    axis = a.get("axis", 0) % data.dim()
    idx = torch.remainder(indices.to(torch.int64), data.shape[axis])
    reduction = a.get("reduction", "none")
    if reduction == "none":
        return data.scatter(axis, idx, updates)
    return data.scatter_reduce(axis, idx, updates, "sum" if reduction == "add" else "prod")


@op("TopK", host=(1,), outputs=2)
def _topk(
    m: Interpreter, node: Node, a: Attrs, x: torch.Tensor, k: Value
) -> tuple[torch.Tensor, torch.Tensor]:
    axis = a.get("axis", -1) % x.dim()
    values, indices = torch.topk(x, int(scalar(k)), axis, bool(a.get("largest", 1)), True)
    return values, indices


@op("NonZero")
def _nonzero(m: Interpreter, node: Node, a: Attrs, x: torch.Tensor) -> torch.Tensor:
    return torch.nonzero(x).t().contiguous() if x.dim() else torch.nonzero(x.reshape(1)).t()


@op("CumSum", host=(1,))
def _cumsum(m: Interpreter, node: Node, a: Attrs, x: torch.Tensor, axis: Value) -> torch.Tensor:
    dim = int(scalar(axis)) % x.dim()
    if a.get("reverse", 0):
        x = x.flip(dim)
    y = torch.cumsum(x, dim)
    if a.get("exclusive", 0):
        y = y - x
    return y.flip(dim) if a.get("reverse", 0) else y


@op("OneHot", host=(1,))
def _one_hot(
    m: Interpreter,
    node: Node,
    a: Attrs,
    indices: torch.Tensor,
    depth: Value,
    values: torch.Tensor,
) -> torch.Tensor:
    n = int(scalar(depth))
    idx = torch.remainder(indices.to(torch.int64), n)
    hot = F.one_hot(idx, n).to(torch.bool)
    axis = a.get("axis", -1) % (indices.dim() + 1)
    hot = hot.movedim(-1, axis)
    return torch.where(hot, values[1], values[0])


@op("Trilu", host=(1,))
def _trilu(
    m: Interpreter, node: Node, a: Attrs, x: torch.Tensor, k: Value | None = None
) -> torch.Tensor:
    diagonal = int(scalar(k)) if k is not None else 0
    return torch.triu(x, diagonal) if a.get("upper", 1) else torch.tril(x, diagonal)


@op("Einsum", weights=(0, 1, 2))
def _einsum(m: Interpreter, node: Node, a: Attrs, *xs: torch.Tensor) -> torch.Tensor:
    return torch.einsum(a["equation"], *xs)
