"""ONNX → trainable ``torch.nn.Module``: :class:`OnnxModule` (imports torch; see training.export).

A small interpreter rather than code generation: the module keeps the graph's nodes and runs them
in order, one rule per op type (``registry.OPS``, filled by the ``ops_*`` modules). What each
constant (initializer or ``Constant`` node) becomes follows from the input slots it feeds
(``registry`` docstring): the weights of Conv, ConvTranspose, Gemm, MatMul, Einsum, LSTM, GRU, PRelu,
the norms, and a BN's scale and shift are ``nn.Parameter``s, and so is a float constant of more
than one element added to or multiplied with a tensor (a bias, a per-channel scale); a BN's
running mean and variance are buffers that ``BatchNormalization`` updates in training mode (batch
statistics; ONNX ``momentum`` m is torch's ``1 − m``); other float constants (scalars, grids,
RNN initial states) are buffers; integer constants and the float constants read as attributes
(Resize scales, Clip bounds, Pad values) are host values, numpy arrays that shape subgraphs
compute with, from the input's real shape on every call.

``keys`` maps each parameter's or buffer's ONNX name to its attribute name (``weights.weights_into``
writes trained values back by it). Every node is checked when the module is built: an op type without a rule, a custom domain, an
attribute value a rule refuses (``check``) or a used output it does not compute makes one
:class:`UserError` that names every such op. Only the main graph is converted (no If / Loop).
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import overload

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from onnx_sk.errors import UserError
from onnx_sk.training import (
    ops_conv,
    ops_elementwise,
    ops_index,
    ops_layout,
    ops_recurrent,
    ops_reduce,
    ops_resize,
)
from onnx_sk.training.registry import OPS, Node, Value, attrs_of, host_call

#: the modules whose @op functions fill OPS (imported for that; listed so the import is explicit)
RULE_MODULES = (
    ops_conv,
    ops_elementwise,
    ops_index,
    ops_layout,
    ops_recurrent,
    ops_reduce,
    ops_resize,
)


def _key(i: int, name: str) -> str:
    return f"t{i}_" + re.sub(r"[^0-9A-Za-z_]", "_", name)[-40:]


def refusal(node: onnx.NodeProto, used: set[str]) -> str | None:
    """Why ``node`` cannot be converted (``None`` when it can): "'Op'" for an op without a rule,
    "'Op' (reason)" for an attribute value the rule refuses or a ``used`` output it lacks."""
    label = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
    rule = OPS.get(node.op_type) if node.domain in ("", "ai.onnx") else None
    if rule is None:
        return f"'{label}'"
    reason = rule.check(attrs_of(node)) if rule.check else None
    extra = [
        k for k, o in enumerate(node.output) if o in used and rule.outputs and k >= rule.outputs
    ]
    if extra and reason is None:
        reason = f"output {extra[0]}"
    return f"'{label}' ({reason})" if reason else None


def refusals(graph: onnx.GraphProto) -> list[str]:
    """Why nodes cannot be converted: one entry per op type and reason (the first node named, the
    others counted), in graph order; empty when the whole graph converts."""
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    why: dict[str, list[str]] = defaultdict(list)
    for n in graph.node:
        reason = refusal(n, used) if n.op_type != "Constant" else None
        if reason:
            why[reason].append(n.name)
    return [
        f"{label} (node {names[0]!r}{f' and {len(names) - 1} more' if len(names) > 1 else ''})"
        for label, names in why.items()
    ]


def _undefined(graph: onnx.GraphProto, known: set[str]) -> str | None:
    """The first node input that no graph input, constant or earlier node defines."""
    defined = set(known) | {i.name for i in graph.input}
    for n in graph.node:
        for name in n.input:
            if name and name not in defined:
                return (
                    f"node {n.name!r} ({n.op_type}) reads {name!r}, which nothing before it defines"
                )
        defined.update(n.output)
    return None


def _kinds(graph: onnx.GraphProto, consts: dict[str, np.ndarray]) -> dict[str, str]:
    """'param', 'buffer' or 'host' for every float constant, from the slots it feeds."""
    stats = {n.input[i] for n in graph.node if n.op_type == "BatchNormalization" for i in (3, 4)}
    kinds: dict[str, str] = {}
    rank = {"host": 0, "buffer": 1, "param": 2}
    for n in graph.node:
        rule = OPS.get(n.op_type)
        for slot, name in enumerate(n.input):
            if name not in consts or not np.issubdtype(consts[name].dtype, np.floating):
                continue
            if name in stats or rule is None:
                kind = "buffer"
            elif slot in rule.weights or (rule.affine and consts[name].size > 1):
                kind = "param"
            else:
                kind = "host" if slot in rule.host else "buffer"
            if name not in kinds or rank[kind] > rank[kinds[name]]:
                kinds[name] = kind
    for o in graph.output:
        if o.name in consts and np.issubdtype(consts[o.name].dtype, np.floating):
            kinds[o.name] = "param" if kinds.get(o.name) == "param" else "buffer"
    return kinds


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


class OnnxModule(torch.nn.Module):
    """An ONNX graph run node by node; weights are parameters, other float constants buffers."""

    def __init__(self, model: onnx.ModelProto) -> None:
        super().__init__()
        graph = model.graph
        consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        for n in graph.node:
            if n.op_type == "Constant":
                consts[n.output[0]] = _constant(n)
        undefined = _undefined(graph, set(consts))
        if undefined:
            raise UserError(f"export-torch: {undefined} (the graph is not in topological order?)")
        refused = refusals(graph)
        if refused:
            raise UserError(
                f"export-torch: {'op' if len(refused) == 1 else 'ops'} {', '.join(refused)} "
                f"{'is' if len(refused) == 1 else 'are'} not supported; supported: "
                f"{', '.join(sorted(OPS))}"
            )
        self.opset = _opset(model)
        self.nodes = [
            (Node(n.op_type, n.name, len(n.output)), list(n.input), list(n.output), attrs_of(n))
            for n in graph.node
            if n.op_type != "Constant"
        ]
        kinds = _kinds(graph, consts)
        self.keys: dict[str, str] = {}
        self.host: dict[str, np.ndarray] = {}
        for i, (name, value) in enumerate(consts.items()):
            kind = kinds.get(name, "host") if np.issubdtype(value.dtype, np.floating) else "host"
            if kind == "host":
                self.host[name] = value
                continue
            key = _key(i, name)
            t = torch.from_numpy(np.array(value))  # the model's own float type (fp16 stays fp16)
            if kind == "param":
                self.register_parameter(key, torch.nn.Parameter(t))
            else:
                self.register_buffer(key, t)
            self.keys[name] = key
        self.inputs = [i.name for i in graph.input if i.name not in consts]
        self.outputs = [o.name for o in graph.output]

    def _value(self, env: dict[str, Value], name: str) -> Value:
        if name in env:
            return env[name]
        if name in self.keys:
            return getattr(self, self.keys[name])
        return self.host[name]

    def forward(self, *args: Value) -> torch.Tensor | tuple[torch.Tensor, ...]:
        env: dict[str, Value] = dict(zip(self.inputs, args, strict=False))
        device = next((a.device for a in args if isinstance(a, torch.Tensor)), None)
        for node, ins, outs, a in self.nodes:
            rule = OPS[node.op_type]
            values = [self._value(env, i) if i else None for i in ins]
            while values and values[-1] is None:
                values.pop()
            if not any(isinstance(v, torch.Tensor) for v in values):
                args_ = [
                    _tensor(v, None) if k not in rule.host else v for k, v in enumerate(values)
                ]
                out = host_call(rule.fn, self, node, a, *args_)
            else:
                args_ = [
                    _tensor(v, device) if k not in rule.host else v for k, v in enumerate(values)
                ]
                out = rule.fn(self, node, a, *args_)
            if rule.outputs == 1:
                env[outs[0]] = out
            else:
                for name, value in zip(outs, out, strict=False):
                    if name:
                        env[name] = value
        result = [
            _tensor(env[o] if o in env else self._value(env, o), device) for o in self.outputs
        ]
        return result[0] if len(result) == 1 else tuple(result)


@overload
def _tensor(value: Value, device: torch.device | None) -> torch.Tensor: ...
@overload
def _tensor(value: None, device: torch.device | None) -> None: ...
def _tensor(value: Value | None, device: torch.device | None) -> torch.Tensor | None:
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return value if device is None else value.to(device)
    t = torch.from_numpy(np.array(value))  # a copy: 0-d stays 0-d, read-only arrays are fine
    return t if device is None else t.to(device)


def _constant(node: onnx.NodeProto) -> np.ndarray:
    if len(node.attribute) != 1:
        raise UserError(
            f"export-torch: Constant {node.name!r} has {len(node.attribute)} attributes"
        )
    a = node.attribute[0]
    if a.name == "value":
        return numpy_helper.to_array(a.t)
    if a.name == "sparse_value":
        raise UserError(f"export-torch: Constant {node.name!r}: sparse_value is not supported")
    value = onnx.helper.get_attribute_value(a)
    return np.array(value, dtype=np.float32 if a.name.startswith("value_float") else np.int64)
