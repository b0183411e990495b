"""Reading ONNX Runtime's profile of a model: time per node, per op type and per *kind*.

ONNX Runtime renames the nodes it rewrites (NCHWc convs are named ``<output>_nchwc``, after the
last op fused into them), so each profiled node is traced back to the model node it came from
(``node_origins``, ``origin_of``): through the output tensors, with an activation or residual
Add right after a conv attributed to that conv. The *kind* of a node: a conv's kind from its
original node (dense, pointwise, depthwise, grouped), ``shuffle`` for onnx-sk's shuffle nodes
(names containing ``/sk/shuffle/``), ``layout`` for ORT's NCHWc reorders, else the op type.
``parse_profile`` drops the first run of every node and takes the median of the rest.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnx_sk.graph.index import GraphIndex

#: ops ONNX Runtime fuses into the conv before them (activation, residual Add)
_FUSED_AFTER_CONV = frozenset(
    {"Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "Tanh", "Add", "Sum"}
)


def node_origins(graph: onnx.GraphProto) -> dict[str, str]:
    """Node name or output tensor name → the model node it came from.

    ONNX Runtime renames nodes it rewrites (NCHWc convs are named ``<output>_nchwc``, after the
    last op fused into them), so a profiled name is traced back through the output tensors; an
    activation or residual Add right after a conv is attributed to that conv.
    """
    index = GraphIndex(graph)
    origins: dict[str, str] = {}
    for node in graph.node:
        name = node.name or node.output[0]
        origins.setdefault(name, name)
        for o in node.output:
            origins.setdefault(o, name)
        if node.op_type != "Conv":
            continue
        tensor = node.output[0]
        while len(users := index.consumers(tensor)) == 1 and users[0].op_type in _FUSED_AFTER_CONV:
            tensor = users[0].output[0]
            origins[tensor] = name
    return origins


def origin_of(profiled: str, origins: dict[str, str]) -> str | None:
    for candidate in (profiled, profiled.removesuffix("_nchwc")):
        if candidate in origins:
            return origins[candidate]
    return None


def _kind(origin: str | None, op: str, conv_kinds: dict[str, str]) -> str:
    if origin is not None and "/sk/shuffle/" in origin:
        return "shuffle"
    if op in ("ReorderInput", "ReorderOutput"):
        return "layout"
    if op in ("Conv", "FusedConv"):
        return f"Conv ({conv_kinds.get(origin or '', 'unknown')})"
    return op


def parse_profile(path: str | Path, conv_kinds: dict[str, str], origins: dict[str, str]) -> dict:
    """Per node, per op type and per kind: median ms per run, the first run of each node dropped."""
    events = json.loads(Path(path).read_text())
    runs: dict[str, list[float]] = {}
    info: dict[str, tuple[str, str]] = {}
    for e in events:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time"):
            continue
        name = e["name"][: -len("_kernel_time")]
        args = e.get("args", {})
        runs.setdefault(name, []).append(e.get("dur", 0) / 1e3)
        info[name] = (args.get("op_name", "?"), args.get("provider", "?"))
    nodes: list[dict[str, Any]] = []
    for name, durs in runs.items():
        kept = durs[1:] or durs  # the first run of a node includes one-off costs
        op, provider = info[name]
        origin = origin_of(name, origins)
        nodes.append(
            {
                "name": name,
                "origin": origin,
                "op_type": op,
                "kind": _kind(origin, op, conv_kinds),
                "provider": provider,
                "ms": float(np.median(kept)),
            }
        )
    nodes.sort(key=lambda n: -n["ms"])
    total = sum(n["ms"] for n in nodes)
    return {
        "total_ms": total,
        "op_types": _group(nodes, "op_type", total),
        "kinds": _group(nodes, "kind", total),
        "nodes": nodes,
    }


def _group(nodes: list[dict], key: str, total: float) -> list[dict]:
    groups: dict[str, list[float]] = {}
    for n in nodes:
        groups.setdefault(n[key], []).append(n["ms"])
    rows = [
        {key: k, "ms": sum(v), "nodes": len(v), "share": sum(v) / total if total else 0.0}
        for k, v in groups.items()
    ]
    return sorted(rows, key=lambda r: -r["ms"])
