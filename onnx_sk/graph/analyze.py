"""``analyze``: what is in a model, conv by conv, and what the SK designs would save.

Counting rules (stated so the figures can be compared with published tables):

- parameters of a conv = weight + bias elements; "all parameters" = every floating-point constant
  (initializers and Constant nodes) of the model, subgraphs included;
- MACs of a conv = c_out · c_in/group · kh·kw · H_out·W_out · batch; of a Gemm = M·K·N; of a
  MatMul = (product of the output dims) · K. Convs are counted at the model's static input shape
  or the one given with ``--input-shape``; an input whose only symbolic dim is its batch is
  counted at batch 1 (MACs *per sample*; ``totals.per_sample`` names those inputs); with a
  symbolic spatial dim a conv's MACs are unknown (``None``) and so are the totals that would
  need them (``totals.needs_input_shape`` gives an ``--input-shape`` example per input).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np
import onnx

from onnx_sk.graph.convs import QUANTIZED_CONVS, ConvSite, attrs, find_convs
from onnx_sk.graph.counts import all_params
from onnx_sk.graph.fields import unit_fields
from onnx_sk.graph.load import LoadedModel, load_model
from onnx_sk.graph.shapes import (
    Shape,
    infer_shapes,
    known_dims,
    parse_input_shapes,
    per_sample_inputs,
    symbolic_inputs,
)
from onnx_sk.maths.designs import DEFAULT_BOTTLENECK_RATIO
from onnx_sk.maths.select import choose


def _sum_known(values: Iterable[int | None]) -> int | None:
    total = 0
    for v in values:
        if v is None:
            return None
        total += v
    return total


def conv_row(site: ConvSite, ratio: float = DEFAULT_BOTTLENECK_RATIO) -> dict:
    """One JSON row of the analyze table."""
    spec = site.spec
    row: dict = {"name": site.name, "scope": site.scope or None, "first": site.first}
    if spec is not None:
        row.update(
            c_in=spec.c_in,
            c_out=spec.c_out,
            kernel_shape=list(spec.kernel_shape),
            strides=list(spec.strides),
            pads=list(spec.pads),
            dilations=list(spec.dilations),
            group=spec.group,
            auto_pad=spec.auto_pad,
            kind=spec.kind,
            params=spec.params,
            macs=site.macs(),
            info_field=list(spec.info_field),
        )
    row["eligible"] = site.reason is None
    row["reason"] = site.reason
    row["best"] = None
    if site.reason is None and spec is not None:
        best, why = choose(spec, objective="params", ratio=ratio)
        if best is None:
            row["eligible"], row["reason"] = False, why
        else:
            row["best"] = {
                "design": best.design,
                "groups": best.group_dict,
                "bottleneck": best.bottleneck,
                "params": best.params,
                "ratio": best.params / spec.params,
            }
    return row


def _matmul_macs(node: onnx.NodeProto, shapes: dict[str, Shape]) -> int | None:
    a_shape = known_dims(shapes.get(node.input[0]))
    out_shape = known_dims(shapes.get(node.output[0]))
    if not a_shape or not out_shape:
        return None
    if node.op_type == "Gemm":
        k = a_shape[0] if attrs(node).get("transA", 0) else a_shape[-1]
    else:
        k = a_shape[-1]
    return int(np.prod(out_shape)) * k


def analyze_model(
    loaded: LoadedModel,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    ratio: float = DEFAULT_BOTTLENECK_RATIO,
) -> dict:
    """The analyze report of an already loaded model (JSON-able dict)."""
    model = loaded.model
    counted, per_sample = per_sample_inputs(model, input_shapes)
    shapes = infer_shapes(model, counted)
    sites = find_convs(model, shapes)
    rows = [conv_row(s, ratio) for s in sites]
    fc = [n for n in model.graph.node if n.op_type in ("Gemm", "MatMul")]
    fc_macs = _sum_known(_matmul_macs(n, shapes) for n in fc)
    conv_macs = _sum_known(r.get("macs") for r in rows if r.get("scope") is None)
    eligible = [r for r in rows if r["eligible"]]
    sk_params = sum(r["best"]["params"] for r in eligible) + sum(
        r.get("params", 0) for r in rows if not r["eligible"]
    )
    conv_params = sum(r.get("params", 0) for r in rows)
    return {
        "model": str(loaded.path) if loaded.path else None,
        "opset": {d.domain or "ai.onnx": d.version for d in model.opset_import},
        "inputs": _io(model.graph.input, model, shapes),
        "outputs": _io(model.graph.output, model, shapes),
        "convs": rows,
        "quantized_convs": [
            n.name or n.output[0] for n in model.graph.node if n.op_type in QUANTIZED_CONVS
        ],
        "totals": {
            "convs": len(rows),
            "eligible": len(eligible),
            "conv_params": conv_params,
            "all_params": all_params(model),
            "conv_macs": conv_macs,
            "gemm_macs": fc_macs,
            "total_macs": None if conv_macs is None or fc_macs is None else conv_macs + fc_macs,
            "conv_params_if_replaced": sk_params,
            "per_sample": per_sample,
            "needs_input_shape": symbolic_inputs(model, input_shapes or {}),
        },
    }


def _io(
    values: Iterable[onnx.ValueInfoProto], model: onnx.ModelProto, shapes: dict[str, Shape]
) -> list[dict]:
    inits = {i.name for i in model.graph.initializer}
    out = []
    for v in values:
        if v.name in inits:
            continue
        dims = [
            d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in v.type.tensor_type.shape.dim
        ]
        out.append({"name": v.name, "shape": dims, "static_shape": list(shapes.get(v.name) or [])})
    return out


def analyze(
    model: str | os.PathLike | onnx.ModelProto,
    input_shape: list[str] | None = None,
    bottleneck_ratio: float = DEFAULT_BOTTLENECK_RATIO,
    fields: bool = False,
) -> dict:
    """Library entry point of ``onnx-sk analyze``: load, analyze, return the report.

    ``fields``: add ``units``, the information field of every chain of convs linked only by
    shuffles / Gather / per-channel ops (e.g. a ShuffleNet unit or an SK design), read off the
    ONNX nodes, and whether its channel field is full.
    """
    loaded = load_model(model)
    report = analyze_model(loaded, parse_input_shapes(input_shape), bottleneck_ratio)
    if fields:
        report["units"] = unit_fields(loaded.model)
    return report
