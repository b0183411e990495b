"""Random-but-reproducible CNN graphs for the fuzz tests, described as plain data.

A :class:`Net` is a frozen description (its ``repr`` is valid Python), and :func:`build` turns
it into a checked ``ModelProto`` with ``onnx.helper``, weights drawn from ``Net.seed``. So a
failing example that hypothesis finds is pasted into ``test_fuzz_regressions.py`` as a literal.

Layers (``Net.layers``), each applied to the running tensor ``t`` [N, C, H, W]:

- ``("conv", ConvCfg)``: ``t = Conv(t)``, any kernel, stride, pads, dilations, group;
- ``("bn",)``: ``t = BatchNormalization(t)`` (random positive variance);
- ``("act", op)``: ``t = op(t)`` for Relu, LeakyRelu, Sigmoid, Tanh;
- ``("residual", ConvCfg)``: ``t = t + Conv(t)`` (a shape-preserving conv, c_out = C);
- ``("concat", ConvCfg, ConvCfg)``: ``t = Concat(Conv_a(t), Conv_b(t))``;
- ``("split", sizes, (ConvCfg, ...))``: ``Split(t, sizes)`` → one conv per part → ``Concat``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ACTIVATIONS = ("Relu", "LeakyRelu", "Sigmoid", "Tanh")


@dataclass(frozen=True)
class ConvCfg:
    c_out: int
    kernel: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)  # [top, left, bottom, right]
    dilations: tuple[int, int] = (1, 1)
    group: int = 1
    bias: bool = True
    auto_pad: str = "NOTSET"

    def out_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """Output (H, W) for an input of ``size`` (ONNX Conv's formula)."""
        out = []
        for i in range(2):
            if self.auto_pad in ("SAME_UPPER", "SAME_LOWER"):
                out.append(math.ceil(size[i] / self.strides[i]))
                continue
            pad = 0 if self.auto_pad == "VALID" else self.pads[i] + self.pads[i + 2]
            span = self.dilations[i] * (self.kernel[i] - 1) + 1
            out.append((size[i] + pad - span) // self.strides[i] + 1)
        return out[0], out[1]

    def attrs(self) -> dict:
        a = {
            "kernel_shape": list(self.kernel),
            "strides": list(self.strides),
            "dilations": list(self.dilations),
            "group": self.group,
        }
        if self.auto_pad == "NOTSET":
            a["pads"] = list(self.pads)
        else:
            a["auto_pad"] = self.auto_pad
        return a


@dataclass(frozen=True)
class Net:
    c_in: int
    #: (batch, H, W): an int is a fixed dim, a str a symbolic one
    dims: tuple = ("N", "H", "W")
    layers: tuple = ()
    #: also expose the tensor after this many layers as a second graph output (-1: none)
    extra_output: int = -1
    seed: int = 0
    opset: int = 17
    #: the spatial size the graph is meant to run at (the verifier's 64 for symbolic dims)
    size: tuple[int, int] = (64, 64)


class _Builder:
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def const(self, value: np.ndarray, prefix: str = "c") -> str:
        n = self.name(prefix)
        self.inits.append(numpy_helper.from_array(np.asarray(value), n))
        return n

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, **attrs) -> list[str]:
        base = self.name(op_type.lower())
        outs = [f"{base}_out{i}" if n_out > 1 else f"{base}_out" for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=base, **attrs))
        return outs

    def conv(self, x: str, c_in: int, cfg: ConvCfg) -> str:
        kh, kw = cfg.kernel
        fan_in = c_in // cfg.group * kh * kw
        w = self.rng.standard_normal((cfg.c_out, c_in // cfg.group, kh, kw)) / math.sqrt(fan_in)
        inputs = [x, self.const(w.astype(np.float32), "w")]
        if cfg.bias:
            inputs.append(
                self.const(self.rng.standard_normal(cfg.c_out).astype(np.float32) * 0.1, "b")
            )
        base = self.name("conv")
        self.nodes.append(
            helper.make_node("Conv", inputs, [f"{base}_out"], name=base, **cfg.attrs())
        )
        return f"{base}_out"

    def bn(self, x: str, c: int) -> str:
        r = self.rng
        params = [
            r.uniform(0.5, 1.5, c), r.standard_normal(c) * 0.1,
            r.standard_normal(c) * 0.1, r.uniform(0.5, 1.5, c),
        ]  # fmt: skip
        names = [self.const(p.astype(np.float32), "bn") for p in params]
        return self.op("BatchNormalization", [x, *names], epsilon=1e-5)[0]


def build(net: Net) -> onnx.ModelProto:
    """The ONNX model a :class:`Net` describes (full-checked)."""
    b = _Builder(net.seed)
    t, c = "x", net.c_in
    outputs: list[str] = []
    for i, layer in enumerate(net.layers):
        kind = layer[0]
        if kind == "conv":
            t, c = b.conv(t, c, layer[1]), layer[1].c_out
        elif kind == "bn":
            t = b.bn(t, c)
        elif kind == "act":
            attrs = {"alpha": 0.1} if layer[1] == "LeakyRelu" else {}
            t = b.op(layer[1], [t], **attrs)[0]
        elif kind == "residual":
            t = b.op("Add", [t, b.conv(t, c, layer[1])])[0]
        elif kind == "concat":
            t = b.op("Concat", [b.conv(t, c, layer[1]), b.conv(t, c, layer[2])], axis=1)[0]
            c = layer[1].c_out + layer[2].c_out
        elif kind == "split":
            sizes, cfgs = layer[1], layer[2]
            parts = b.op(
                "Split", [t, b.const(np.array(sizes, np.int64), "split")], len(sizes), axis=1
            )
            convs = [b.conv(p, s, cfg) for p, s, cfg in zip(parts, sizes, cfgs, strict=True)]
            t = b.op("Concat", convs, axis=1)[0]
            c = sum(cfg.c_out for cfg in cfgs)
        else:
            raise ValueError(f"unknown layer kind {kind!r}")
        if i == net.extra_output:
            outputs.append(t)
    outputs.append(t)
    batch, h, w = net.dims
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, net.c_in, h, w])
    ys = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in dict.fromkeys(outputs)]
    graph = helper.make_graph(b.nodes, "fuzz", [x], ys, b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", net.opset)])
    model.ir_version = 8
    inferred = onnx.shape_inference.infer_shapes(model)
    known = {vi.name: vi for vi in inferred.graph.output}
    for out in model.graph.output:
        out.CopyFrom(known[out.name])
    onnx.checker.check_model(model, full_check=True)
    return model


def feed_shape(net: Net) -> tuple[int, ...]:
    """The input shape the graph is meant to run at (symbolic batch → 1)."""
    batch = net.dims[0] if isinstance(net.dims[0], int) else 1
    return (batch, net.c_in, *net.size)
