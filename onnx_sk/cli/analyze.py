"""``onnx-sk analyze MODEL``: one row per Conv and the model's totals."""

from __future__ import annotations

from pathlib import Path

import typer

from onnx_sk.cli.output import (
    FoldingTable,
    check_json_out,
    console,
    emit_json,
    fmt_count,
    macs_basis,
)
from onnx_sk.graph.analyze import analyze
from onnx_sk.width.report import channel_report


def _groups(best: dict | None) -> str:
    if not best:
        return ""
    parts = [f"{k}={v}" for k, v in best["groups"].items()]
    if best["bottleneck"]:
        parts.append(f"K={best['bottleneck']}")
    return " ".join(parts)


def _print_channels(
    model: str, input_shape: list[str] | None, json_out: bool, json_file: str | None
) -> None:
    doc = channel_report(model, input_shape)
    if emit_json(doc, json_out, json_file, "--json-out"):
        return
    t = FoldingTable(
        f"{Path(model).name}: {len(doc['spaces'])} channel spaces",
        ["space", "size", "divisor", "frozen / why", "members"],
    )
    for sp in doc["spaces"]:
        why = "; ".join(sp["why"]) if sp["frozen"] else "free"
        t.add_row(str(sp["id"]), str(sp["size"]), str(sp["divisor"]), why, ", ".join(sp["members"]))
    console.print(t)
    console.print(f"{doc['free']} free, {doc['frozen']} frozen")


def _print_units(units: list[dict]) -> None:
    t = FoldingTable(
        "information field per conv chain",
        ["chain", "c_in→c_out", "field (kh, kw, channels)", "full"],
    )
    for u in units:
        if "error" in u:
            t.add_row(" → ".join(u["nodes"]), "", u["error"], "?")
            continue
        full = "yes" if u["full"] else "no: an output sees only part of the input channels"
        t.add_row(" → ".join(u["nodes"]), f"{u['c_in']}→{u['c_out']}", str(tuple(u["size"])), full)
    console.print(t)


def analyze_cmd(
    model: str = typer.Argument(..., help="ONNX model file."),
    input_shape: list[str] = typer.Option(
        None, "--input-shape", help="NAME:1x3x224x224 to fix an input's dims (repeatable)."
    ),
    bottleneck_ratio: float = typer.Option(0.25, help="Bottleneck K/F of PW+DW+PW and PWG+DW+PWG."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document to stdout."),
    json_file: str = typer.Option(
        None, "--json-out", help="Also write the JSON document to FILE (- = stdout)."
    ),
    channels: bool = typer.Option(
        False, "--channels", help="Print the channel spaces (what --mode widen scales) instead."
    ),
    fields: bool = typer.Option(
        False, "--fields", help="Also the information field of every conv chain (shuffle units)."
    ),
) -> None:
    """Per-conv analysis: kind, params, MACs, information field, eligibility, best SK design.

    Example: onnx-sk analyze resnet18.onnx --input-shape input:1x3x224x224
    """
    check_json_out(json_file, "--json-out")
    if channels:
        _print_channels(model, input_shape, json_out, json_file)
        return
    report = analyze(model, input_shape, bottleneck_ratio, fields)
    if emit_json(report, json_out, json_file, "--json-out"):
        return
    if fields:
        _print_units(report["units"])
    t = FoldingTable(
        f"{Path(model).name}: {report['totals']['convs']} convs",
        [
            "conv",
            "c_in→c_out",
            "kernel",
            "stride",
            "group",
            "kind",
            "params",
            "MACs / sample" if report["totals"]["per_sample"] else "MACs",
            "field",
            "SK design (params, ratio) / reason",
        ],
        optional=["field", "stride", "group", "MACs", "MACs / sample", "kernel", "params", "kind"],
    )
    for r in report["convs"]:
        best = r["best"]
        verdict = (
            f"{best['design']} {_groups(best)} ({fmt_count(best['params'])}, {best['ratio']:.3f})"
            if best
            else (r["reason"] or "")
        )
        t.add_row(
            r["name"],
            f"{r.get('c_in', '?')}→{r.get('c_out', '?')}",
            "×".join(map(str, r.get("kernel_shape", []))),
            "×".join(map(str, r.get("strides", []))),
            str(r.get("group", "?")),
            r.get("kind", "?"),
            fmt_count(r.get("params")),
            fmt_count(r.get("macs")),
            "(" + ", ".join(map(str, r.get("info_field", []))) + ")",
            verdict,
        )
    console.print(t)
    tot = report["totals"]
    console.print(
        f"conv params {fmt_count(tot['conv_params'])} ({tot['conv_params']}), "
        f"all params {fmt_count(tot['all_params'])} ({tot['all_params']}), "
        f"conv MACs {fmt_count(tot['conv_macs'])}, Gemm/MatMul MACs {fmt_count(tot['gemm_macs'])}, "
        f"total MACs {fmt_count(tot['total_macs'])}{macs_basis(tot)}"
    )
    console.print(
        f"{tot['eligible']} of {tot['convs']} convs eligible; conv params if all are replaced: "
        f"{fmt_count(tot['conv_params_if_replaced'])}"
    )
    if tot["needs_input_shape"] and tot["conv_macs"] is None:
        console.print(
            "MACs need static spatial dims: give "
            + " ".join(f"--input-shape {m}" for m in tot["needs_input_shape"])
        )
    if report["quantized_convs"]:
        console.print(
            f"{len(report['quantized_convs'])} quantized convs (QLinearConv/ConvInteger) are not rewritten"
        )
