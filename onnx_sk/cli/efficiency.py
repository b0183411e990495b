"""``onnx-sk efficiency --c-in C --c-out F``: the papers' efficiency analysis of the four designs."""

from __future__ import annotations

import typer

from onnx_sk.cli.output import (
    FoldingTable,
    check_json_out,
    console,
    emit_json,
    fmt_count,
    table,
)
from onnx_sk.maths.efficiency import efficiency_table


def _groups(groups: dict, bottleneck: float | int | None) -> str:
    parts = [f"{k}={_num(v)}" for k, v in groups.items()]
    if bottleneck is not None:
        parts.append(f"K={_num(bottleneck)}")
    return " ".join(parts) or "-"


def _num(value: float | int) -> str:
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return f"{value:.3f}"


def _print_analysis(doc: dict) -> None:
    kh, kw = doc["kernel_shape"]
    t = FoldingTable(
        f"{kh}×{kw} conv {doc['c_in']}→{doc['c_out']}",
        [
            "design",
            "ratio formula",
            "closed form: groups",
            "params",
            "ratio",
            "best integer: groups",
            "params",
            "MACs/px",
            "ratio",
            "closed form admissible",
        ],
    )
    for row in doc["designs"]:
        cf, bi = row["closed_form"], row["best_integer"]
        t.add_row(
            row["paper_name"],
            cf["formula"],
            _groups(cf["groups"], cf["bottleneck"]),
            fmt_count(round(cf["params"], 1)),
            f"{cf['ratio']:.4f}",
            _groups(bi["groups"], bi["bottleneck"]),
            fmt_count(bi["params"]),
            fmt_count(bi["macs_per_output_pixel"]),
            f"{bi['ratio']:.4f}",
            "yes: same groups" if cf["admissible"] else "no",
        )
    console.print(t)


def _print_budget(doc: dict) -> None:
    t = table(
        f"greatest width under {fmt_count(doc['budget'])} params with F = {doc['alpha']:g}·C",
        ["design", "closed form: C", "F", "groups", "integer: C", "F", "groups", "params"],
    )
    for row in doc["designs"]:
        cf, found = row["greatest_width"]["closed_form"], row["greatest_width"]["integer"]
        cells = ["none fits", "", "", ""]
        if found is not None:
            cells = [
                str(found["c_in"]),
                str(found["c_out"]),
                _groups(found["groups"], found["bottleneck"]),
                str(found["params"]),
            ]
        t.add_row(
            row["paper_name"],
            f"{cf['c_in']:.2f}",
            f"{cf['c_out']:.2f}",
            _groups(cf["groups"], cf["bottleneck"]),
            *cells,
        )
    console.print(t)


def efficiency_cmd(
    c_in: int = typer.Option(..., "--c-in", help="Input channels C of the dense conv."),
    c_out: int = typer.Option(..., "--c-out", help="Output channels F of the dense conv."),
    kernel: int = typer.Option(3, "--kernel", help="Square kernel size k (area S = k·k)."),
    budget: float = typer.Option(
        None, "--budget", help="Parameter budget P: also report the greatest width C per design."
    ),
    alpha: float = typer.Option(1.0, "--alpha", help="F = alpha·C for the --budget analysis."),
    bottleneck_ratio: float = typer.Option(
        0.25, "--bottleneck-ratio", help="Bottleneck K/F of PW+DW+PW and PWG+DW+PWG."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document to stdout."),
    json_file: str = typer.Option(
        None, "--json-out", help="Also write the JSON document to FILE (- = stdout)."
    ),
) -> None:
    """Params, MACs and ratio of the four SK designs: closed form vs best integer groups.

    Example: onnx-sk efficiency --c-in 256 --c-out 256 --kernel 3
    """
    check_json_out(json_file, "--json-out")
    doc = efficiency_table(c_in, c_out, kernel, budget, alpha, bottleneck_ratio)
    if emit_json(doc, json_out, json_file, "--json-out"):
        return
    _print_analysis(doc)
    if budget is not None:
        _print_budget(doc)
