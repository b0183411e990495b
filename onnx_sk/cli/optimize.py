"""``onnx-sk optimize IN OUT``: replace dense convs with SK designs, verify, write atomically."""

from __future__ import annotations

from pathlib import Path

import typer

from onnx_sk.cli import app
from onnx_sk.cli.output import console, fmt_count, table
from onnx_sk.graph.save import save_json
from onnx_sk.pipeline import Report, optimize


def _design_cell(row: dict) -> str:
    if not row["design"]:
        return f"kept: {row['reason']}"
    parts = [row["design"], *(f"{k}={v}" for k, v in (row["groups"] or {}).items())]
    if row["bottleneck"]:
        parts.append(f"K={row['bottleneck']}")
    if row["note"]:
        parts.append(f"({row['note']})")
    return " ".join(parts)


def _error_cell(row: dict) -> str:
    """Relative weight error (BN-scaled), and the output error on calibration data when given."""
    if row.get("init_error") is None:
        return ""
    out = row.get("init_output_error")
    return f"{row['init_error']:.3f}" + (f" (output {out:.3f})" if out is not None else "")


def print_report(report: Report) -> None:
    errors = any(r.get("init_error") is not None for r in report.convs)
    t = table("optimize", ["conv", "design / reason", "params", "MACs", *(["init error"] if errors else [])])
    for r in report.convs:
        t.add_row(
            r["name"],
            _design_cell(r),
            f"{fmt_count(r['params_before'])} → {fmt_count(r['params_after'])}",
            f"{fmt_count(r['macs_before'])} → {fmt_count(r['macs_after'])}",
            *([_error_cell(r)] if errors else []),
        )
    console.print(t)
    tot = report.totals

    def ratio(key: str) -> str:
        return f" (×{tot[key]:.3f})" if tot.get(key) is not None else ""

    console.print(
        f"params {fmt_count(tot['params_before'])} → {fmt_count(tot['params_after'])}{ratio('params_ratio')}; "
        f"conv params {fmt_count(tot['conv_params_before'])} → {fmt_count(tot['conv_params_after'])}"
        f"{ratio('conv_params_ratio')}; conv MACs {fmt_count(tot['conv_macs_before'])} → "
        f"{fmt_count(tot['conv_macs_after'])}{ratio('conv_macs_ratio')}"
    )
    v = report.verification
    if v:
        console.print(
            f"verified: full checker ok, {v['fields_checked']} information fields equal the dense "
            f"convs', outputs match the dense-equivalent model at {v['input_shapes']} "
            f"(max abs diff {v['max_abs_diff']:.2g}, max rel diff {v['max_rel_diff']:.2g})"
        )
    console.print(report.message)


def print_widen_report(report: Report) -> None:
    """Mode 2: the widths conv by conv, then Mode 1's table when convs were replaced."""
    w = report.widen
    t = table(f"widen: s = {w['scale']:.4f}", ["conv", "c_in → after", "c_out → after"])
    for r in w["layers"]:
        t.add_row(r["name"], f"{r['c_in']} → {r['c_in_after']}", f"{r['c_out']} → {r['c_out_after']}")
    console.print(t)
    for f in w["frozen_by"]:
        console.print(f"frozen by {f['op']}: {f['reason']}")
    if report.convs:
        print_report(report)
    else:
        console.print(report.message)


@app.command("optimize")
def optimize_cmd(
    model: str = typer.Argument(..., help="Input ONNX model (never modified)."),
    output: str = typer.Argument(..., help="Output ONNX model (written atomically)."),
    mode: str = typer.Option(
        "reduce", help="reduce: replace dense convs with SK designs; widen: then scale widths back to the budget."
    ),
    design: str = typer.Option(
        None, help="Force a design: dw-pw, gc-pwg, pw-dw-pw, pwg-dw-pwg; none (--mode widen): widen only."
    ),
    objective: str = typer.Option("params", help="Choose designs by params, macs or latency (measured)."),
    seed: int = typer.Option(0, help="Seed of the weight initialiser."),
    init: str = typer.Option("he", help="Weight initialiser for the new stages."),
    include_first: bool = typer.Option(False, "--include-first", help="Also replace the first conv."),
    min_channels: int = typer.Option(1, help="Keep convs with fewer input or output channels."),
    exclude: list[str] = typer.Option(None, help="Keep this conv (node or output name; repeatable)."),
    bottleneck_ratio: float = typer.Option(0.25, help="Bottleneck K/F of the bottleneck designs."),
    input_shape: list[str] = typer.Option(None, help="NAME:1x3x224x224 for MACs and verification."),
    report: str = typer.Option(None, help="Write the JSON report to this file."),
    no_verify: bool = typer.Option(False, "--no-verify", help="Skip verification (not advised)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Allow OUTPUT to be the input file."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the summary line."),
    provider: str = typer.Option(None, help="--objective latency: execution provider to measure on."),
    threads: int = typer.Option(None, help="--objective latency: intra-op threads (default 1)."),
    lut: str = typer.Option(None, help="--objective latency: latency table (JSON) to read and extend."),
    lut_from_target: bool = typer.Option(
        False, "--lut-from-target", help="The --lut was measured on the target device: use it, measure nothing."
    ),
    budget: str = typer.Option("conv", help="--mode widen: match conv params (conv) or all params (all)."),
    width_scale: float = typer.Option(None, help="--mode widen: scale every free channel space by S."),
    param_budget: int = typer.Option(None, help="--mode widen: target parameter count instead of the original's."),
    round_to: int = typer.Option(1, help="--mode widen: widths are multiples of N (e.g. 8)."),
    widen_init: str = typer.Option(
        "he", help="--mode widen: he (groups re-chosen) or preserve (zero outgoing weights, same function)."
    ),
    calibration: str = typer.Option(
        None, help="--init approx: .npz of input samples; fit each conv to its actual input activations."
    ),
    max_error: float = typer.Option(
        None, help="--init approx: replace only convs whose relative approximation error is <= TAU."
    ),
    for_training: bool = typer.Option(
        False, "--for-training", help="Insert an identity BatchNormalization after each new stage."
    ),
) -> None:
    """Replace every qualifying dense conv with its most efficient SK design (Mode 1: reduce)."""
    if report is not None and not Path(report).parent.exists():
        from onnx_sk.errors import UserError

        raise UserError(f"report folder {Path(report).parent} does not exist")
    _, rep = optimize(
        model,
        output,
        design=design,
        objective=objective,
        seed=seed,
        include_first=include_first,
        min_channels=min_channels,
        exclude=exclude or (),
        bottleneck_ratio=bottleneck_ratio,
        init=init,
        verify=not no_verify,
        input_shape=input_shape,
        overwrite=overwrite,
        provider=provider,
        threads=threads,
        lut=lut,
        lut_from_target=lut_from_target,
        mode=mode,
        budget=budget,
        width_scale=width_scale,
        param_budget=param_budget,
        round_to=round_to,
        widen_init=widen_init,
        calibration=calibration,
        max_error=max_error,
        for_training=for_training,
    )
    if report is not None:
        save_json(rep.to_dict(), report)
    if quiet:
        console.print(rep.message)
    elif rep.widen is not None:
        print_widen_report(rep)
    else:
        print_report(rep)
