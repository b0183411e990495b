"""Conv, ConvTranspose, pooling, BatchNormalization, Gemm and MatMul as torch rules (1-3 spatial dims).

Padding: explicit ``pads`` [b₁ … bₙ, e₁ … eₙ], or ``auto_pad`` SAME_UPPER / SAME_LOWER (total
max(0, (⌈in / s⌉ − 1)·s + (k − 1)·d + 1 − in), the odd element at the end / at the start) or
VALID. ConvTranspose: out = s·(in − 1) + output_padding + (k − 1)·d + 1 − b − e; with
``output_shape`` the total padding is that formula's excess over it, split as ONNX says (SAME_UPPER:
the odd element at the end, else at the start). It runs torch's transposed conv without padding,
then crops b / e (negative: zero-pads) and adds the bias, so the ``output_padding`` rows get the
bias only, as in ONNX. Pooling: out = ⌊(in + b + e − ((k − 1)·d + 1)) / s⌋ + 1, with ``ceil_mode``
⌈·⌉ + 1 less a last window that would start in the end padding. Max pools pad with −∞; average
pools divide a sum by the count of input (``count_include_pad``: input and pad) cells per window.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from onnx_sk.training.registry import Attrs, Interpreter, Node, op


def _pads(x: torch.Tensor, a: Attrs, kernel: list[int]) -> tuple[list[int], list[int]]:
    """(begin, end) padding per spatial axis from ONNX pads / auto_pad."""
    n = len(kernel)
    strides = a.get("strides", [1] * n)
    dil = a.get("dilations", [1] * n)
    auto = a.get("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        begin: list[int] = []
        end: list[int] = []
        for size, s, k, d in zip(x.shape[2:], strides, kernel, dil, strict=False):
            total = max(0, (math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size)
            small = total // 2
            begin.append(small if auto == "SAME_UPPER" else total - small)
            end.append(total - small if auto == "SAME_UPPER" else small)
        return begin, end
    if auto == "VALID":
        return [0] * n, [0] * n
    p = a.get("pads", [0] * 2 * n)
    return list(p[:n]), list(p[n:])


def _flat(begin: list[int], end: list[int]) -> list[int]:
    """torch.nn.functional.pad order: last axis first."""
    flat: list[int] = []
    for b, e in zip(reversed(begin), reversed(end), strict=True):
        flat += [b, e]
    return flat


@op("Conv", weights=(1, 2))
def _conv(
    m: Interpreter,
    node: Node,
    a: Attrs,
    x: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor | None = None,
) -> torch.Tensor:
    kernel = list(w.shape[2:])
    begin, end = _pads(x, a, kernel)
    if begin != end:
        x, begin = F.pad(x, _flat(begin, end)), [0] * len(kernel)
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[len(kernel)]
    return conv(x, w, b, a.get("strides", 1), begin, a.get("dilations", 1), a.get("group", 1))


@op("ConvTranspose", weights=(1, 2))
def _conv_transpose(
    m: Interpreter,
    node: Node,
    a: Attrs,
    x: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor | None = None,
) -> torch.Tensor:
    n = w.dim() - 2
    group = a.get("group", 1)
    strides, dil = a.get("strides", [1] * n), a.get("dilations", [1] * n)
    kernel = a.get("kernel_shape", list(w.shape[2:]))
    out_pad = a.get("output_padding", [0] * n)
    natural = [
        s * (i - 1) + op_ + (k - 1) * d + 1
        for i, s, op_, k, d in zip(x.shape[2:], strides, out_pad, kernel, dil, strict=True)
    ]
    if "output_shape" in a:
        totals = [nat - o for nat, o in zip(natural, a["output_shape"][-n:], strict=True)]
        upper = a.get("auto_pad", "NOTSET") == "SAME_UPPER"
        begin = [t // 2 if upper else t - t // 2 for t in totals]
        end = [t - t // 2 if upper else t // 2 for t in totals]
    elif a.get("auto_pad", "NOTSET") in ("SAME_UPPER", "SAME_LOWER"):
        totals = [nat - i * s for nat, i, s in zip(natural, x.shape[2:], strides, strict=True)]
        upper = a["auto_pad"] == "SAME_UPPER"
        begin = [t // 2 if upper else t - t // 2 for t in totals]
        end = [t - t // 2 if upper else t // 2 for t in totals]
    else:
        p = a.get("pads", [0] * 2 * n)
        begin, end = list(p[:n]), list(p[n:])
    conv = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[n]
    y = conv(x, w, None, strides, 0, 0, group, dil)
    # output_padding: rows past the end that no input reaches (then cropped like the pads)
    y = F.pad(y, _flat([-v for v in begin], [o - v for o, v in zip(out_pad, end, strict=True)]))
    return y if b is None else y + b.reshape(1, -1, *([1] * n))


@op(
    "BatchNormalization",
    weights=(1, 2),
    check=lambda a: "training_mode 1" if a.get("training_mode", 0) else None,
)
def _bn(
    m: Interpreter,
    node: Node,
    a: Attrs,
    x: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor,
    mean: torch.Tensor,
    var: torch.Tensor,
) -> torch.Tensor:
    return F.batch_norm(
        x, mean, var, scale, bias, m.training, 1.0 - a.get("momentum", 0.9), a.get("epsilon", 1e-5)
    )


def _pool_check(a: Attrs) -> str | None:
    if a.get("storage_order", 0):
        return "storage_order 1"
    return None


@op("MaxPool", "AveragePool", "LpPool", check=_pool_check)
def _pool(m: Interpreter, node: Node, a: Attrs, x: torch.Tensor) -> torch.Tensor:
    kernel = list(a["kernel_shape"])
    n = len(kernel)
    strides, dil = a.get("strides", [1] * n), a.get("dilations", [1] * n)
    begin, end = _pads(x, a, kernel)
    extra: list[int] = []  # the ceil_mode overhang past the end padding, per axis
    for size, s, k, d, b, e in zip(x.shape[2:], strides, kernel, dil, begin, end, strict=True):
        span = size + b + e - ((k - 1) * d + 1)
        out = span // s + 1
        if a.get("ceil_mode", 0):
            out = math.ceil(span / s) + 1
            if (out - 1) * s >= size + b:
                out -= 1
        extra.append(max(0, (out - 1) * s + (k - 1) * d + 1 - (size + b + e)))
    end_all = [e + x_ for e, x_ in zip(end, extra, strict=True)]
    pool_max = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[n]
    if node.op_type == "MaxPool":
        return pool_max(F.pad(x, _flat(begin, end_all), value=-math.inf), kernel, strides, 0, dil)
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[n]
    ones = torch.ones((x.shape[1], 1, *kernel), dtype=x.dtype, device=x.device)
    if node.op_type == "LpPool":
        p = a.get("p", 2)
        summed = conv(
            F.pad(x.abs() ** p, _flat(begin, end_all)), ones, None, strides, 0, dil, x.shape[1]
        )
        return summed ** (1.0 / p)
    summed = conv(F.pad(x, _flat(begin, end_all)), ones, None, strides, 0, dil, x.shape[1])
    mask = torch.ones((1, 1, *x.shape[2:]), dtype=x.dtype, device=x.device)
    if a.get("count_include_pad", 0):
        mask = F.pad(mask, _flat(begin, end), value=1.0)
        mask = F.pad(mask, _flat([0] * n, extra))
    else:
        mask = F.pad(mask, _flat(begin, end_all))
    count = conv(mask, ones[:1], None, strides, 0, dil)
    return summed / count


@op("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(m: Interpreter, node: Node, a: Attrs, x: torch.Tensor) -> torch.Tensor:
    dims = tuple(range(2, x.dim()))
    return (
        x.mean(dim=dims, keepdim=True)
        if node.op_type == "GlobalAveragePool"
        else x.amax(dim=dims, keepdim=True)
    )


@op("Gemm", weights=(1, 2))
def _gemm(
    m: Interpreter,
    node: Node,
    a: Attrs,
    x: torch.Tensor,
    w: torch.Tensor,
    c: torch.Tensor | None = None,
) -> torch.Tensor:
    x = x.t() if a.get("transA", 0) else x
    w = w.t() if a.get("transB", 0) else w
    y = a.get("alpha", 1.0) * (x @ w)
    return y if c is None else y + a.get("beta", 1.0) * c


@op("MatMul", weights=(0, 1))
def _matmul(m: Interpreter, node: Node, a: Attrs, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.matmul(x, y)
