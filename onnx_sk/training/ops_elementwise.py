"""Element-wise torch rules: activations, arithmetic (numpy-style broadcasting), comparisons, Cast.

ONNX formulas where torch's differ in a default: HardSigmoid(x) = max(0, min(1, α·x + β))
(α 0.2, β 0.5); HardSwish(x) = x · max(0, min(1, x/6 + 1/2)); Softplus(x) = log(1 + eˣ);
Elu(x) = α(eˣ − 1) for x < 0; Mish(x) = x·tanh(Softplus(x)); Selu(x) = γ·Elu_α(x); Gelu with ``approximate`` "none" | "tanh".
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from onnx_sk.training.registry import Attrs, Interpreter, Node, Value, op, scalar, torch_dtype

_UNARY: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "Relu": torch.relu,
    "Sigmoid": torch.sigmoid,
    "Tanh": torch.tanh,
    "Exp": torch.exp,
    "Log": torch.log,
    "Sqrt": torch.sqrt,
    "Neg": torch.neg,
    "Abs": torch.abs,
    "Reciprocal": torch.reciprocal,
    "Floor": torch.floor,
    "Ceil": torch.ceil,
    "Round": torch.round,  # half to even, like ONNX
    "Erf": torch.erf,
    "Sin": torch.sin,
    "Cos": torch.cos,
    "Sign": torch.sign,
    "Not": torch.logical_not,
    "Softplus": lambda x: torch.log1p(torch.exp(-x.abs())) + x.clamp(min=0),
    "Softsign": lambda x: x / (1 + x.abs()),
    "Mish": lambda x: x * torch.tanh(F.softplus(x)),
}


@op(*_UNARY)
def _unary(m: Interpreter, node: Node, a: Attrs, x: torch.Tensor) -> torch.Tensor:
    return _UNARY[node.op_type](x)


@op("LeakyRelu")
def _leaky(m: Interpreter, node: Node, a: Attrs, x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, a.get("alpha", 0.01))


@op("Elu")
def _elu(m: Interpreter, node: Node, a: Attrs, x: torch.Tensor) -> torch.Tensor:
    return F.elu(x, a.get("alpha", 1.0))


@op("Selu")
def _selu(m: Interpreter, node: Node, a: Attrs, x: torch.Tensor) -> torch.Tensor:
    alpha = a.get("alpha", 1.67326319217681884765625)
    return a.get("gamma", 1.05070102214813232421875) * F.elu(x, alpha)


@op("Celu")
def _celu(m: Interpreter, node: Node, a: Attrs, x: torch.Tensor) -> torch.Tensor:
    return F.celu(x, a.get("alpha", 1.0))


@op("ThresholdedRelu")
def _thresholded_relu(m: Interpreter, node: Node, a: Attrs, x: torch.Tensor) -> torch.Tensor:
    return torch.where(x > a.get("alpha", 1.0), x, torch.zeros_like(x))


@op("Shrink")
def _shrink(m: Interpreter, node: Node, a: Attrs, x: torch.Tensor) -> torch.Tensor:
    lambd, bias = a.get("lambd", 0.5), a.get("bias", 0.0)
    return torch.where(x < -lambd, x + bias, torch.where(x > lambd, x - bias, torch.zeros_like(x)))


@op("HardSigmoid")
def _hard_sigmoid(m: Interpreter, node: Node, a: Attrs, x: torch.Tensor) -> torch.Tensor:
    return torch.clamp(a.get("alpha", 0.2) * x + a.get("beta", 0.5), 0.0, 1.0)


@op("HardSwish")
def _hard_swish(m: Interpreter, node: Node, a: Attrs, x: torch.Tensor) -> torch.Tensor:
    return x * torch.clamp(x / 6.0 + 0.5, 0.0, 1.0)


@op("Gelu", check=lambda a: None if a.get("approximate", "none") in ("none", "tanh") else "mode")
def _gelu(m: Interpreter, node: Node, a: Attrs, x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate=a.get("approximate", "none"))


@op("PRelu", weights=(1,))
def _prelu(
    m: Interpreter, node: Node, a: Attrs, x: torch.Tensor, slope: torch.Tensor
) -> torch.Tensor:
    return torch.where(x < 0, x * slope, x)


@op("Clip", host=(1, 2))
def _clip(
    m: Interpreter,
    node: Node,
    a: Attrs,
    x: torch.Tensor,
    lo: Value | None = None,
    hi: Value | None = None,
) -> torch.Tensor:
    low = a.get("min") if lo is None else scalar(lo)
    high = a.get("max") if hi is None else scalar(hi)
    return torch.clamp(x, low, high)


_BINARY: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "Add": torch.add,
    "Sub": torch.sub,
    "Mul": torch.mul,
    "Pow": torch.pow,
    "Equal": torch.eq,
    "Less": torch.lt,
    "LessOrEqual": torch.le,
    "Greater": torch.gt,
    "GreaterOrEqual": torch.ge,
    "And": torch.logical_and,
    "Or": torch.logical_or,
    "Xor": torch.logical_xor,
}


@op(*_BINARY, affine=True)
def _binary(m: Interpreter, node: Node, a: Attrs, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    out = _BINARY[node.op_type](x, y)
    if node.op_type == "Pow" and out.dtype != x.dtype:
        out = out.to(x.dtype)  # ONNX Pow keeps the base's type
    return out


@op("Div", affine=True)
def _div(m: Interpreter, node: Node, a: Attrs, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if x.dtype.is_floating_point or y.dtype.is_floating_point:
        return torch.div(x, y)
    return torch.div(x, y, rounding_mode="trunc")  # integer division truncates in ONNX


@op("Mod")
def _mod(m: Interpreter, node: Node, a: Attrs, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.fmod(x, y) if a.get("fmod", 0) else torch.remainder(x, y)


@op("Max", "Min", "Sum", "Mean", affine=True)
def _variadic(m: Interpreter, node: Node, a: Attrs, *xs: torch.Tensor) -> torch.Tensor:
    out = xs[0]
    for x in xs[1:]:
        if node.op_type == "Max":
            out = torch.maximum(out, x)
        elif node.op_type == "Min":
            out = torch.minimum(out, x)
        else:
            out = out + x
    return out / len(xs) if node.op_type == "Mean" else out


@op("Where")
def _where(
    m: Interpreter,
    node: Node,
    a: Attrs,
    cond: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
) -> torch.Tensor:
    return torch.where(cond.to(torch.bool), x, y)


@op("Cast", check=lambda a: _cast_check(a.get("to", 0)))
def _cast(m: Interpreter, node: Node, a: Attrs, x: torch.Tensor) -> torch.Tensor:
    return x.to(torch_dtype(a["to"], "Cast"))


def _cast_check(to: int) -> str | None:
    try:
        torch_dtype(to, "Cast")
    except ValueError as e:
        return str(e)
    return None


@op("CastLike")
def _cast_like(
    m: Interpreter, node: Node, a: Attrs, x: torch.Tensor, like: torch.Tensor
) -> torch.Tensor:
    return x.to(like.dtype)


@op("Identity", "Dropout", host=(1, 2))
def _identity(
    m: Interpreter, node: Node, a: Attrs, x: torch.Tensor, *rest: Value | None
) -> torch.Tensor:
    if node.op_type == "Dropout" and m.training:
        ratio = rest[0] if rest else None  # None too when only training_mode is given
        return F.dropout(
            x, float(scalar(ratio)) if ratio is not None else a.get("ratio", 0.5), True
        )
    return x


@op("IsNaN")
def _isnan(m: Interpreter, node: Node, a: Attrs, x: torch.Tensor) -> torch.Tensor:
    return torch.isnan(x)


@op("IsInf")
def _isinf(m: Interpreter, node: Node, a: Attrs, x: torch.Tensor) -> torch.Tensor:
    pos, neg = a.get("detect_positive", 1), a.get("detect_negative", 1)
    return (torch.isposinf(x) & bool(pos)) | (torch.isneginf(x) & bool(neg))
