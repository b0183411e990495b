"""Reductions and normalisations as torch rules: Reduce*, ArgMax/ArgMin, (Log)Softmax, norms.

Reduce* take ``axes`` as an attribute before opset 13 (ReduceSum) or 18 (the others) and as an
optional input from then on; no axes reduce every axis unless ``noop_with_empty_axes``. Softmax
and LogSoftmax before opset 13 flatten to 2-D at ``axis`` (default 1) and normalise the trailing
block; from 13 on they normalise along ``axis`` (default −1).
InstanceNormalization: y = scale·(x − μ)/√(σ² + ε) + B, μ and σ² over the spatial axes of each
sample and channel; LayerNormalization: the same over the axes from ``axis`` on (default −1).
LRN: see its rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from onnx_sk.training.registry import Attrs, Interpreter, Node, Value, axis_list, op

#: x, the sorted axes, keepdims → the reduction
_REDUCE: dict[str, Callable[[torch.Tensor, tuple[int, ...], bool], torch.Tensor]] = {
    "ReduceSum": lambda x, d, k: x.sum(dim=d, keepdim=k),
    "ReduceMean": lambda x, d, k: x.mean(dim=d, keepdim=k),
    "ReduceMax": lambda x, d, k: x.amax(dim=d, keepdim=k),
    "ReduceMin": lambda x, d, k: x.amin(dim=d, keepdim=k),
    "ReduceProd": lambda x, d, k: _prod(x, d, k),
    "ReduceL1": lambda x, d, k: x.abs().sum(dim=d, keepdim=k),
    "ReduceL2": lambda x, d, k: (x * x).sum(dim=d, keepdim=k).sqrt(),
    "ReduceSumSquare": lambda x, d, k: (x * x).sum(dim=d, keepdim=k),
    "ReduceLogSumExp": lambda x, d, k: torch.logsumexp(x, dim=d, keepdim=k),
}


def _prod(x: torch.Tensor, dims: tuple[int, ...], keep: bool) -> torch.Tensor:
    for d in sorted(dims, reverse=True):
        x = x.prod(dim=d, keepdim=keep)
    return x


@op(*_REDUCE, host=(1,))
def _reduce(
    m: Interpreter, node: Node, a: Attrs, x: torch.Tensor, axes: Value | None = None
) -> torch.Tensor:
    axes = axes if axes is not None else a.get("axes")
    dims = axis_list(axes, x.dim()) if axes is not None else []
    if not dims:
        if a.get("noop_with_empty_axes", 0):
            return x
        dims = list(range(x.dim()))
    if x.dim() == 0:
        return x
    return _REDUCE[node.op_type](x, tuple(sorted(set(dims))), bool(a.get("keepdims", 1)))


@op("ArgMax", "ArgMin")
def _arg(m: Interpreter, node: Node, a: Attrs, x: torch.Tensor) -> torch.Tensor:
    axis, keep = a.get("axis", 0) % x.dim(), bool(a.get("keepdims", 1))
    if a.get("select_last_index", 0):
        flipped = x.flip(axis)
        i = flipped.argmax(axis, keep) if node.op_type == "ArgMax" else flipped.argmin(axis, keep)
        return x.shape[axis] - 1 - i
    return x.argmax(axis, keep) if node.op_type == "ArgMax" else x.argmin(axis, keep)


@op("Softmax", "LogSoftmax", "Hardmax")
def _softmax(m: Interpreter, node: Node, a: Attrs, x: torch.Tensor) -> torch.Tensor:
    fn: dict[str, Callable[[torch.Tensor, int], torch.Tensor]] = {
        "Softmax": torch.softmax,
        "LogSoftmax": torch.log_softmax,
        "Hardmax": _hardmax,
    }
    f = fn[node.op_type]
    if m.opset >= 13:
        return f(x, a.get("axis", -1) % max(x.dim(), 1))
    axis = a.get("axis", 1) % max(x.dim(), 1)
    flat = x.reshape(math.prod(x.shape[:axis]), -1)
    return f(flat, 1).reshape(x.shape)


def _hardmax(x: torch.Tensor, axis: int) -> torch.Tensor:
    return F.one_hot(x.argmax(axis), x.shape[axis]).movedim(-1, axis).to(x.dtype)


@op("InstanceNormalization", weights=(1, 2))
def _instance_norm(
    m: Interpreter,
    node: Node,
    a: Attrs,
    x: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor,
) -> torch.Tensor:
    return F.instance_norm(x, weight=scale, bias=bias, eps=a.get("epsilon", 1e-5))


@op("LayerNormalization", weights=(1, 2), outputs=1)
def _layer_norm(
    m: Interpreter,
    node: Node,
    a: Attrs,
    x: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    axis = a.get("axis", -1) % x.dim()
    shape = x.shape[axis:]
    return F.layer_norm(
        x,
        shape,
        scale.expand(shape),
        None if bias is None else bias.expand(shape),
        a.get("epsilon", 1e-5),
    )


@op("LRN", check=lambda a: None if a.get("size", 1) % 2 else f"even size {a.get('size')}")
def _lrn(m: Interpreter, node: Node, a: Attrs, x: torch.Tensor) -> torch.Tensor:
    """y = x / (bias + α/size · Σ x²)^β, the sum over channels c − ⌊(size − 1)/2⌋ … c + ⌈(size − 1)/2⌉."""
    size = a["size"]
    n, c = x.shape[0], x.shape[1]
    sq = (x * x).reshape(n, 1, c, -1)
    sq = F.pad(sq, (0, 0, (size - 1) // 2, size - 1 - (size - 1) // 2))
    total = F.avg_pool2d(sq, (size, 1), stride=1) * size  # [n, 1, c, spatial]
    scale = a.get("bias", 1.0) + a.get("alpha", 1e-4) / size * total.reshape(x.shape)
    return x / scale ** a.get("beta", 0.75)


@op("LpNormalization")
def _lp_norm(m: Interpreter, node: Node, a: Attrs, x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, p=a.get("p", 2), dim=a.get("axis", -1), eps=0.0)
