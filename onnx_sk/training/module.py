"""ONNX → trainable ``torch.nn.Module``: the module and its op rules (imports torch; see training.export).

A small interpreter rather than code generation: :class:`OnnxModule` keeps the graph's nodes and
runs them in order with one function per op type (registry ``OPS``). Every floating-point
initializer (or ``Constant``) becomes an ``nn.Parameter`` — conv, Gemm and MatMul weights and
biases, BN scale and shift — except a BN's running mean and variance, which are buffers that
``BatchNormalization`` updates in training mode (batch statistics; ONNX ``momentum`` m is torch's
``1 − m``) and uses in eval mode. Integer constants (shapes, axes) stay Python lists, and
``Shape`` gives a tuple of ints, so a channel shuffle's Shape → Reshape needs no tensor maths and
``torch.onnx.export`` can trace the module again. An op without a rule is a :class:`UserError`
naming it. Only the main graph of a model with float32 inputs is converted.

Supported ops: Conv (group, pads, strides, dilations, auto_pad), BatchNormalization, Relu,
LeakyRelu, Sigmoid, Tanh, Clip, Add, Sub, Mul, Div, Identity, Dropout, Reshape (allowzero),
Transpose, Shape, Gather (of a shape), Concat, Flatten, Squeeze, Unsqueeze, MaxPool,
AveragePool, GlobalAveragePool, ReduceMean, Softmax, Gemm, MatMul, Constant.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from onnx_sk.errors import UserError

OPS: dict[str, Callable] = {}


def op(*names: str) -> Callable[[Callable], Callable]:
    def register(fn: Callable) -> Callable:
        for name in names:
            if name in OPS:
                raise ValueError(f"op {name!r} registered twice")
            OPS[name] = fn
        return fn

    return register


class Node(NamedTuple):
    op_type: str
    name: str


def _attrs(node: onnx.NodeProto) -> dict:
    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def _ints(value) -> list[int]:
    """A shape-like value (tuple, list or integer tensor) as a list of Python ints."""
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value]
    return [int(v) for v in value.reshape(-1).tolist()]


def _pad_args(x, a: dict, kernel: list[int], torch_f):
    """(padded x, symmetric padding for the op) from ONNX pads / auto_pad."""
    n = len(kernel)
    strides = a.get("strides", [1] * n)
    dil = a.get("dilations", [1] * n)
    auto = a.get("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = []
        for size, s, k, d in zip(x.shape[2:], strides, kernel, dil, strict=False):
            total = max(0, (math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size)
            small = total // 2
            pads.append((small, total - small) if auto == "SAME_UPPER" else (total - small, small))
        begin, end = [p[0] for p in pads], [p[1] for p in pads]
    elif auto == "VALID":
        begin, end = [0] * n, [0] * n
    else:
        p = a.get("pads", [0] * 2 * n)
        begin, end = list(p[:n]), list(p[n:])
    if begin == end:
        return x, begin
    flat = []
    for b, e in zip(reversed(begin), reversed(end), strict=False):
        flat += [b, e]
    return torch_f.pad(x, flat), [0] * n


@op("Conv")
def _conv(m, node, a, x, w, b=None):
    f = m.F
    kernel = list(w.shape[2:])
    x, pad = _pad_args(x, a, kernel, f)
    conv = {1: f.conv1d, 2: f.conv2d, 3: f.conv3d}[len(kernel)]
    return conv(x, w, b, a.get("strides", 1), pad, a.get("dilations", 1), a.get("group", 1))


@op("BatchNormalization")
def _bn(m, node, a, x, scale, bias, mean, var):
    return m.F.batch_norm(
        x, mean, var, scale, bias, m.training, 1.0 - a.get("momentum", 0.9), a.get("epsilon", 1e-5)
    )


@op("Relu")
def _relu(m, node, a, x):
    return m.F.relu(x)


@op("LeakyRelu")
def _leaky(m, node, a, x):
    return m.F.leaky_relu(x, a.get("alpha", 0.01))


@op("Sigmoid")
def _sigmoid(m, node, a, x):
    return m.torch.sigmoid(x)


@op("Tanh")
def _tanh(m, node, a, x):
    return m.torch.tanh(x)


@op("Clip")
def _clip(m, node, a, x, lo=None, hi=None):
    lo = a.get("min") if lo is None else float(lo)
    hi = a.get("max") if hi is None else float(hi)
    return m.torch.clamp(x, lo, hi)


@op("Add", "Sub", "Mul", "Div")
def _binary(m, node, a, x, y):
    fn = {"Add": m.torch.add, "Sub": m.torch.sub, "Mul": m.torch.mul, "Div": m.torch.div}
    return fn[node.op_type](x, y)


@op("Identity", "Dropout")
def _identity(m, node, a, x, *rest):
    if node.op_type == "Dropout" and m.training:
        return m.F.dropout(x, float(rest[0]) if rest else a.get("ratio", 0.5), True)
    return x


@op("Reshape")
def _reshape(m, node, a, x, shape):
    shape = _ints(shape)
    if not a.get("allowzero", 0):
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


@op("Transpose")
def _transpose(m, node, a, x):
    return x.permute(a.get("perm", list(reversed(range(x.dim())))))


@op("Shape")
def _shape(m, node, a, x):
    dims = tuple(x.shape)
    return dims[a.get("start", 0) : a.get("end", len(dims))]


@op("Gather")
def _gather(m, node, a, x, idx):
    if isinstance(x, tuple):
        i = _ints(idx)
        return x[i[0]] if isinstance(idx, int) or np.ndim(idx) == 0 else tuple(x[j] for j in i)
    return m.torch.index_select(x, a.get("axis", 0), m.torch.as_tensor(idx).reshape(-1)).squeeze(
        a.get("axis", 0)
    )


@op("Concat")
def _concat(m, node, a, *xs):
    if all(isinstance(x, (tuple, list, int)) for x in xs):
        out: list = []
        for x in xs:
            out += list(x) if isinstance(x, (tuple, list)) else [x]
        return tuple(out)
    return m.torch.cat(xs, a["axis"])


@op("Flatten")
def _flatten(m, node, a, x):
    axis = a.get("axis", 1) % max(x.dim(), 1)
    return x.reshape(math.prod(x.shape[:axis]) if axis else 1, -1)


@op("Squeeze")
def _squeeze(m, node, a, x, axes=None):
    axes = _ints(axes) if axes is not None else a.get("axes")
    if axes is None:
        return x.squeeze()
    for ax in sorted((ax % x.dim() for ax in axes), reverse=True):
        x = x.squeeze(ax)
    return x


@op("Unsqueeze")
def _unsqueeze(m, node, a, x, axes=None):
    axes = _ints(axes) if axes is not None else a["axes"]
    for ax in sorted(ax % (x.dim() + len(axes)) for ax in axes):
        x = x.unsqueeze(ax)
    return x


@op("MaxPool", "AveragePool")
def _pool(m, node, a, x):
    f = m.F
    kernel = a["kernel_shape"]
    if a.get("ceil_mode", 0) or any(d != 1 for d in a.get("dilations", [1])):
        raise UserError(f"{node.op_type} {node.name!r}: ceil_mode / dilations are not supported")
    pads = a.get("pads", [0] * 2 * len(kernel))
    strides = a.get("strides", [1] * len(kernel))
    if node.op_type == "MaxPool":
        if list(pads[: len(kernel)]) != list(pads[len(kernel) :]):
            x, pad = f.pad(x, _flip(pads, len(kernel)), value=-math.inf), [0] * len(kernel)
        else:
            x, pad = _pad_args(x, a, kernel, f)
        return f.max_pool2d(x, kernel, strides, pad)
    x, pad = _pad_args(x, a, kernel, f)
    return f.avg_pool2d(
        x, kernel, strides, pad, count_include_pad=bool(a.get("count_include_pad", 0))
    )


def _flip(pads, n):
    flat = []
    for b, e in zip(reversed(pads[:n]), reversed(pads[n:]), strict=False):
        flat += [b, e]
    return flat


@op("GlobalAveragePool")
def _gap(m, node, a, x):
    return x.mean(dim=tuple(range(2, x.dim())), keepdim=True)


@op("ReduceMean")
def _reduce_mean(m, node, a, x, axes=None):
    axes = _ints(axes) if axes is not None else a.get("axes")
    dims = tuple(range(x.dim())) if axes is None else tuple(axes)
    return x.mean(dim=dims, keepdim=bool(a.get("keepdims", 1)))


@op("Softmax")
def _softmax(m, node, a, x):
    return m.torch.softmax(x, a.get("axis", -1))


@op("Gemm")
def _gemm(m, node, a, x, w, c=None):
    x = x.t() if a.get("transA", 0) else x
    w = w.t() if a.get("transB", 0) else w
    y = a.get("alpha", 1.0) * (x @ w)
    return y if c is None else y + a.get("beta", 1.0) * c


@op("MatMul")
def _matmul(m, node, a, x, y):
    return m.torch.matmul(x, y)


def _key(i: int, name: str) -> str:
    return f"t{i}_" + re.sub(r"[^0-9A-Za-z_]", "_", name)[-40:]


class OnnxModule(torch.nn.Module):
    """An ONNX graph run node by node; float constants are parameters, BN statistics buffers."""

    torch = torch  # class attributes for the op rules (never pickled with an instance)
    F = torch.nn.functional

    torch = torch  # class attributes for the op rules (never pickled with an instance)
    F = torch.nn.functional

    def __init__(self, model: onnx.ModelProto) -> None:
        super().__init__()
        graph = model.graph
        consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        nodes = []
        for n in graph.node:
            if n.op_type == "Constant":
                consts[n.output[0]] = _constant(n)
                continue
            if n.op_type not in OPS:
                raise UserError(
                    f"export-torch: op {n.op_type!r} (node {n.name!r}) is not supported; "
                    f"supported: {', '.join(sorted(OPS))}"
                )
            if n.domain not in ("", "ai.onnx"):
                raise UserError(f"export-torch: op {n.domain}.{n.op_type} is not supported")
            nodes.append((Node(n.op_type, n.name), list(n.input), list(n.output), _attrs(n)))
        stats = {
            n.input[i] for n in graph.node if n.op_type == "BatchNormalization" for i in (3, 4)
        }
        self.keys: dict[str, str] = {}
        self.lists: dict[str, object] = {}
        for i, (name, value) in enumerate(consts.items()):
            if np.issubdtype(value.dtype, np.floating):
                key = _key(i, name)
                t = torch.from_numpy(np.array(value, dtype=np.float32))
                if name in stats:
                    self.register_buffer(key, t)
                else:
                    self.register_parameter(key, torch.nn.Parameter(t))
                self.keys[name] = key
            else:
                self.lists[name] = value.tolist() if value.ndim else int(value)
        self.nodes = nodes
        inits = set(consts)
        self.inputs = [i.name for i in graph.input if i.name not in inits]
        self.outputs = [o.name for o in graph.output]

    def _value(self, env: dict, name: str):
        if name in env:
            return env[name]
        if name in self.keys:
            return getattr(self, self.keys[name])
        return self.lists[name]

    def forward(self, *args):
        env = dict(zip(self.inputs, args, strict=False))
        for node, ins, outs, a in self.nodes:
            values = [self._value(env, i) if i else None for i in ins]
            while values and values[-1] is None:
                values.pop()
            env[outs[0]] = OPS[node.op_type](self, node, a, *values)
        result = [env[o] for o in self.outputs]
        return result[0] if len(result) == 1 else tuple(result)


def _constant(node: onnx.NodeProto) -> np.ndarray:
    a = node.attribute[0]
    if a.name == "value":
        return numpy_helper.to_array(a.t)
    value = onnx.helper.get_attribute_value(a)
    return np.array(value, dtype=np.float32 if a.name.startswith("value_float") else np.int64)
