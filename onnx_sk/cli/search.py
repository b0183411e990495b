"""``onnx-sk search``: Algorithm 1 of T-ITS'21, the design-space reduction, run for real."""

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
from onnx_sk.cli.params import choice_help
from onnx_sk.maths.search import (
    DEFAULT_CHANNELS,
    DEFAULT_MAX_LENGTH,
    KERNEL_TYPES,
    REASONS,
    REFERENCE_SPATIAL,
    REGEX_MODES,
    result_to_dict,
    search,
)

_REASON_TEXT = {
    "composition": "composition: regex (.+?)\\1+ matched",
    "no_growth": "efficiency: a kernel did not grow the field",
    "overshoot": "efficiency: the field outgrew the dense conv's",
    "no_group": "no admissible group number at some width",
    "short": "performance: final field smaller than the dense conv's",
}


def search_cmd(
    channels: int = typer.Option(
        DEFAULT_CHANNELS, "--channels", help="C of the dense C→C 3×3 target."
    ),
    max_length: int = typer.Option(DEFAULT_MAX_LENGTH, "--max-length", help="Longest design L."),
    kernels: str = typer.Option(
        ",".join(KERNEL_TYPES), "--kernels", help="Kernel types to combine (GC,DW,PW,PWG)."
    ),
    bottleneck: bool = typer.Option(
        False, "--bottleneck", help="Let a PW/PWG shrink to K = C/4 and the last kernel restore C."
    ),
    regex: str = typer.Option(
        "start",
        "--regex",
        help="Composition rule: start (re.match, as printed), full, any.",
        **choice_help(tuple(REGEX_MODES)),
    ),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document to stdout."),
    json_file: str = typer.Option(
        None, "--json-out", help="Also write the JSON document to FILE (- = stdout)."
    ),
) -> None:
    """Reduce the space of SK designs (composition regex, information field, early stop).

    Example: onnx-sk search --channels 64 --max-length 4 --bottleneck
    """
    check_json_out(json_file, "--json-out")
    result = search(channels, max_length, kernels.split(","), regex, bottleneck)
    doc = result_to_dict(result)
    if emit_json(doc, json_out, json_file, "--json-out"):
        return
    k = f", bottleneck K={result.bottleneck}" if result.bottleneck else ""
    console.print(
        f"{result.total} designs of {'/'.join(result.kernels)} up to length {result.max_length} "
        f"for a 3×3 conv {channels}→{channels} (field (3, 3, {channels})){k}, regex {regex}"
    )
    t = table("removed", ["rule", "designs"])
    for reason in REASONS:
        t.add_row(_REASON_TEXT[reason], str(result.removed[reason]))
    t.add_row("survived", str(len(result.survivors)))
    console.print(t)
    h, w = REFERENCE_SPATIAL
    survivors = FoldingTable(
        "survivors",
        ["design", "paper", "mirror", "choices", "witness", "params", "ratio", "MACs"],
        optional=["choices", "MACs", "mirror"],
        caption=f"cheapest witness at {channels}→{channels} 3×3, {h}×{w} "
        f"(dense {result.dense_params} params)",
    )
    for s in doc["survivors"]:
        survivors.add_row(
            s["design"],
            s["paper"] or "",
            s["mirror"] or "",
            str(s["choices"]),
            s["witness"],
            str(s["params"]),
            f"{s['ratio']:.3f}",
            fmt_count(s["macs"]),
        )
    console.print(survivors)
    if result.paper_missing:
        console.print(f"papers' designs that did not survive: {', '.join(result.paper_missing)}")
