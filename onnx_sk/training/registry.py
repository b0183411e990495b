"""The torch op registry: one :class:`Rule` per ONNX op type, and the value conventions they share.

A value in :class:`~onnx_sk.training.module.OnnxModule` is either a ``torch.Tensor`` (data, and
anything computed from data) or a numpy array, a *host* value: an integer constant, a shape, or
what a shape subgraph (Shape → Gather → Concat → Reshape, Range, ConstantOfShape …) computes from
them. Host values are recomputed from the input's actual shape on every forward, so the module is
correct for any input shape, and they never travel to the accelerator. A rule is written once,
for tensors: when every input of a node is a host value the module runs the rule on CPU tensors
and turns its outputs back into numpy (``host_call``). A rule's ``host`` input slots
(Reshape's shape, Slice's starts, Resize's scales …) reach it as given, host value or tensor, and
are read with :func:`ints` / :func:`floats`; every other slot gets a tensor.

The slots also say what a floating-point constant becomes (``OnnxModule`` docstring): in a
``weights`` slot (conv/Gemm/MatMul/RNN weights, BN scale and shift) an ``nn.Parameter``; in an
``affine`` op (Add, Sub, Mul, Div, PRelu) a parameter too when it has more than one element (a
bias or a per-channel scale), else a buffer; in a ``host`` slot a host value; elsewhere a buffer.

``check(attrs)`` says why a node cannot be converted (``None`` when it can), so every refusal is
found before the first forward and named in one error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import numpy as np
import onnx
import torch

#: a value of the module: a tensor, or a host value (module docstring); a ``host`` slot gets either
Value = torch.Tensor | np.ndarray
#: a node's attributes by name (``attrs_of``): ints, floats, strings, lists of them, tensors
Attrs = dict[str, Any]
#: a rule: ``fn(module, node, attrs, *inputs)`` (an :class:`Interpreter`, a :class:`Node`,
#: ``Attrs``) → one output, or a tuple of them; its inputs differ by op (tensors, host values,
#: None for an absent optional input)
RuleFn = Callable[..., Any]


class Node(NamedTuple):
    """What a rule reads of its ONNX node (``OnnxModule`` keeps these, not the protobufs)."""

    op_type: str
    name: str
    n_outputs: int


class Interpreter(Protocol):
    """What a rule reads of the module that runs it (``OnnxModule``)."""

    opset: int
    training: bool


@dataclass(frozen=True)
class Rule:
    fn: RuleFn
    host: frozenset[int] = frozenset()  # input slots read as Python values (never made tensors)
    weights: frozenset[int] = frozenset()  # input slots whose float constants are parameters
    affine: bool = False  # a float constant of > 1 element in another slot is a parameter
    outputs: int = 1  # how many outputs the rule returns (0: one per node output, as a tuple)
    check: Callable[[Attrs], str | None] | None = None


OPS: dict[str, Rule] = {}


def op(
    *names: str,
    host: tuple[int, ...] = (),
    weights: tuple[int, ...] = (),
    affine: bool = False,
    outputs: int = 1,
    check: Callable[[Attrs], str | None] | None = None,
) -> Callable[[RuleFn], RuleFn]:
    """Register ``fn(module, node, attrs, *inputs)`` for each op type in ``names``."""

    def register(fn: RuleFn) -> RuleFn:
        for name in names:
            if name in OPS:
                raise ValueError(f"op {name!r} registered twice")
            OPS[name] = Rule(fn, frozenset(host), frozenset(weights), affine, outputs, check)
        return fn

    return register


def attrs_of(node: onnx.NodeProto) -> Attrs:
    out: Attrs = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode()
        elif isinstance(v, list) and v and isinstance(v[0], bytes):
            v = [s.decode() for s in v]  # e.g. an RNN's activations
        out[a.name] = v
    return out


def ints(value: Value | Sequence[int]) -> list[int]:
    """A shape-like value (list, numpy array or tensor, any rank) as a list of Python ints."""
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value]
    if isinstance(value, torch.Tensor):
        return [int(v) for v in value.reshape(-1).tolist()]
    return [int(v) for v in np.asarray(value).reshape(-1).tolist()]


def floats(value: Value | Sequence[float]) -> list[float]:
    if isinstance(value, torch.Tensor):
        return [float(v) for v in value.reshape(-1).tolist()]
    return [float(v) for v in np.asarray(value).reshape(-1).tolist()]


def scalar(value: Value) -> float | int:
    """A one-element value as a Python number (int for integer dtypes)."""
    if isinstance(value, torch.Tensor):
        return value.reshape(-1)[0].item()
    return np.asarray(value).reshape(-1)[0].item()


DTYPES: dict[int, torch.dtype] = {
    onnx.TensorProto.FLOAT: torch.float32,
    onnx.TensorProto.DOUBLE: torch.float64,
    onnx.TensorProto.FLOAT16: torch.float16,
    onnx.TensorProto.BFLOAT16: torch.bfloat16,
    onnx.TensorProto.INT64: torch.int64,
    onnx.TensorProto.INT32: torch.int32,
    onnx.TensorProto.INT16: torch.int16,
    onnx.TensorProto.INT8: torch.int8,
    onnx.TensorProto.UINT8: torch.uint8,
    onnx.TensorProto.BOOL: torch.bool,
}


def torch_dtype(onnx_type: int, what: str) -> torch.dtype:
    if onnx_type not in DTYPES:
        name = onnx.TensorProto.DataType.Name(onnx_type)
        raise ValueError(f"{what}: element type {name} is not supported")
    return DTYPES[onnx_type]


def axis_list(axes: Value | Sequence[int], rank: int) -> list[int]:
    return [ax % rank for ax in ints(axes)] if rank else []


def host_call(fn: RuleFn, *args: object) -> Any:
    """Run a rule on host values: CPU tensors in, numpy out (tuples element by element); what it
    returns is the rule's (one value or a tuple: ``Rule.outputs``)."""
    out = fn(*args)

    def back(v: object) -> object:
        return v.numpy() if isinstance(v, torch.Tensor) else v

    return tuple(back(v) for v in out) if isinstance(out, tuple) else back(out)
