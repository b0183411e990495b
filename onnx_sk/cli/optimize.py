"""``onnx-sk optimize IN OUT``: replace dense convs with SK designs, verify, write atomically."""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import typer

from onnx_sk.cli.distill import partial_line
from onnx_sk.cli.output import (
    FoldingTable,
    check_json_out,
    console,
    fmt_count,
    macs_basis,
    print_json,
)
from onnx_sk.cli.params import option_parameters, options_from_cli
from onnx_sk.cli.progress import stage_bar
from onnx_sk.errors import UserError
from onnx_sk.graph.save import save_json
from onnx_sk.pipeline import optimize_model
from onnx_sk.report import Report

#: what the table's "init error" column means (its footnote)
INIT_ERROR_NOTE = (
    "init error: relative weight error of each conv's new stages vs its original kernel, "
    "|s·(W − W_eq)| / |s·W| (s: a following BN's scale); 0 = exact, ~1 or more = nothing kept "
    "(he); (output …): the error on the calibration activations"
)


def _design_cell(row: dict) -> str:
    # --precision: written in int8 (mixed: some of its SK stages)
    int8 = {"int8": "int8 ", "mixed": "int8+fp32 "}.get(row.get("precision") or "", "")
    if not row["design"]:
        return f"{int8}kept: {row['reason']}"
    parts = [f"{int8}{row['design']}", *(f"{k}={v}" for k, v in (row["groups"] or {}).items())]
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
    t = FoldingTable(
        "optimize",
        ["conv", "design / reason", "params", "MACs", *(["init error"] if errors else [])],
        optional=["MACs", "init error"],
    )
    for r in report.convs:
        t.add_row(
            r["name"],
            _design_cell(r),
            f"{fmt_count(r['params_before'])} → {fmt_count(r['params_after'])}",
            f"{fmt_count(r['macs_before'])} → {fmt_count(r['macs_after'])}",
            *([_error_cell(r)] if errors else []),
        )
    if errors:
        t.caption = INIT_ERROR_NOTE  # left-justified, as every table's (output.table)
    console.print(t)
    tot = report.totals

    def ratio(key: str) -> str:
        return f" (×{tot[key]:.3f})" if tot.get(key) is not None else ""

    console.print(
        f"params {fmt_count(tot['params_before'])} → {fmt_count(tot['params_after'])}{ratio('params_ratio')}; "
        f"conv params {fmt_count(tot['conv_params_before'])} → {fmt_count(tot['conv_params_after'])}"
        f"{ratio('conv_params_ratio')}; conv MACs {fmt_count(tot['conv_macs_before'])} → "
        f"{fmt_count(tot['conv_macs_after'])}{ratio('conv_macs_ratio')}{macs_basis(tot)}"
    )
    print_checks(report)
    console.print(report.message)


def _num(value: float | None, spec: str) -> str:
    return "not finite" if value is None else format(value, spec)


def _shapes(shapes: dict[str, list[int]]) -> str:
    return ", ".join(f"{k} {'×'.join(map(str, v))}" for k, v in shapes.items())


def print_checks(report: Report) -> None:
    """Two separate lines: the structure verified, and the fidelity against the original; then
    what to do next."""
    v = report.verification
    if v:
        console.print("structure " + verified_line(v))
        if v.get("decided_by", "whole model") != "whole model":
            console.print(f"decided {v['decided_by']}")
        if v.get("inputs", "standard normal") != "standard normal":
            console.print(f"verification input: {v['inputs']} (NaN/Inf outputs on N(0, 1) input)")
        if v.get("recovery"):
            console.print(recovered_line(v["recovery"]))
    rec = report.recovery
    if rec and rec.get("skipped"):
        console.print(f"recovery skipped: {rec['skipped']}")
    elif rec:
        console.print(recovery_line(rec))
        if rec.get("partial"):
            console.print(partial_line(rec["partial"]))
        if rec.get("training_bns_folded"):
            console.print(
                f"{rec['training_bns_folded']} --for-training BNs folded into their conv stages "
                "after training"
            )
        if rec.get("fidelity_before"):
            console.print(fidelity_line(rec["fidelity_before"], "before recovery, fidelity"))
    if report.latency_check:
        console.print(latency_check_line(report.latency_check))
    if report.precision:
        console.print(precision_line(report.precision))
    if report.fidelity:
        console.print(fidelity_line(report.fidelity, "fidelity"))
    if report.next_step:
        console.print(report.next_step)


def latency_check_line(c: dict) -> str:
    """The report's ``latency_check`` (passes.latency_guard) in one line."""
    n = c["convs_differing"]
    what = f"{n} conv{'s' if n != 1 else ''} differ"
    if c.get("skipped"):
        return (
            f"latency check against the params objective's designs ({what}) not timed: "
            f"{c['skipped']}"
        )
    verdict = "its designs taken" if c["taken"] else "this plan kept"
    return (
        f"latency check: the params objective's network ({what}) ran "
        f"{c['params_speedup']:.2f}× this plan's on the target ({verdict})"
    )


def precision_line(p: dict) -> str:
    """The report's ``precision`` in one line (the int8 convs, the check, the ranges' source)."""
    convs = p["int8_convs"]
    line = f"precision {p['precision']}: {len(convs)} int8 conv{'s' if len(convs) != 1 else ''}"
    if p.get("int8_gemms"):
        k = len(p["int8_gemms"])
        line += f" and {k} int8 fully connected layer{'s' if k != 1 else ''}"
    if p.get("over_budget"):
        line += f" ({len(p['over_budget'])} kept fp32: int8 error over --max-error)"
    plan = p.get("plan")
    if plan and plan.get("skipped"):
        line += f"; the int8 plan was not timed ({plan['skipped']})"
    elif plan:
        line += (
            f"; the int8 plan ran {plan['speedup']:.2f}× the fp32-context plan "
            f"({'taken' if plan['taken'] else 'not taken'})"
        )
    trials = p.get("context")
    if trials:
        kept = [t for t in trials if t["kept"]]
        line += f"; in context: {len(kept)} of {len(trials)} flips kept"
        if kept:
            line += (
                " (" + ", ".join(f"{t['conv']} {t['to']} {t['speedup']:.2f}×" for t in kept) + ")"
            )
    check = p.get("check")
    if check:
        worst = min(check["cosine_vs_fp32"], default=1.0)
        extra = check.get("ort_int8_unwritten")
        line += f"; ONNX Runtime runs {check['int8_kernels']} int8 conv kernels"
        if extra:
            line += f" ({extra} of them written in fp32 between int8 convs: quantized by ORT)"
        line += f"; outputs vs fp32 model cosine {worst:.4f} (tolerance >= {check['min_cosine']})"
    if p.get("warning"):
        line += f"; warning: {p['warning']}"
    return line


def fidelity_line(f: dict, what: str) -> str:
    """The report's ``fidelity`` in one line."""
    i = f["inputs"]
    where = i["file"] if i["file"] else f"seeded random input, {_shapes(i['shapes'])}"
    outs = "; ".join(_output_fidelity(o) for o in f["outputs"])
    return f"{what} against the original ({where}): {outs}"


def _output_fidelity(o: dict) -> str:
    if o.get("equal_fraction") is not None:  # class indices, picks: equal or not
        return f"{o['name']}: {o['equal_fraction']:.1%} of elements equal (integer output)"
    return (
        f"{o['name']}: cosine {_num(o['cosine'], '.4f')}, max abs diff "
        f"{_num(o['max_abs_diff'], '.3g')}, mean abs diff {_num(o['mean_abs_diff'], '.3g')}"
    )


def recovered_line(r: dict) -> str:
    """What was re-checked on the recovered weights (``verification["recovery"]``)."""
    fields = f", {r['fields_checked']} information fields unchanged" if r["fields_checked"] else ""
    return (
        f"after recovery: full checker ok, only the weights changed{fields}, ONNX Runtime gives "
        f"the trained module's outputs (max abs diff {r['runtime_vs_trained_max_abs_diff']:.2g})"
    )


def recovery_line(r: dict) -> str:
    """Distillation in one line: samples, held-out loss and cosine before → after, seconds."""
    held = r["holdout_samples"] or r["train_samples"]
    cos = ", ".join(
        f"{b['name']} cosine {b['cosine']:.4f} → {a['cosine']:.4f}"
        for b, a in zip(r["before"], r["after"], strict=True)
    )
    return (
        f"recovered by distillation from the original on {r['samples']} samples "
        f"({r['train_samples']} trained on, {held} held out): held-out loss "
        f"{r['holdout_loss_before']:.4g} → {r['holdout_loss_after']:.4g}, {cos} "
        f"({len(r['curve'])} epochs, {r['seconds']:.0f} s)"
    )


def verified_line(v: dict) -> str:
    """What verification checked, from whichever parts it ran (the report's ``verification``)."""
    parts = ["full checker ok"]
    if v.get("fields_checked"):
        parts.append(f"{v['fields_checked']} information fields equal the dense convs'")
    if v.get("convs_checked"):
        parts.append(
            f"each of the {v['convs_checked']} inserted subgraphs matches its dense equivalent "
            f"alone ({v['channels_checked']} of {v['channels']} output channels; max abs diff "
            f"{v['max_abs_diff']:.2g}, max rel diff {v['max_rel_diff']:.2g}); outputs keep the "
            f"original's names, dtypes and shapes at {_shapes(v['input_shapes'])}"
        )
    elif "max_abs_diff" in v:
        what = "the reduced model's" if v.get("preserved") else "the dense-equivalent model"
        matched = (
            f"outputs match {what}"
            if v.get("decided_by", "whole model") == "whole model"
            else "each inserted subgraph matches its dense-equivalent conv"
        )
        note = f"; {v['tolerance_note']}" if v.get("tolerance_note") else ""
        parts.append(
            f"{matched} at {_shapes(v['input_shapes'])} (max abs diff "
            f"{v['max_abs_diff']:.2g}, max rel diff {v['max_rel_diff']:.2g}{note})"
        )
    elif "input_shapes" in v:
        parts.append(f"output names, dtypes and shapes unchanged at {_shapes(v['input_shapes'])}")
    return "verified: " + ", ".join(parts)


def print_widen_report(report: Report) -> None:
    """Mode 2: the widths conv by conv, then Mode 1's table when convs were replaced."""
    w = report.widen
    assert w is not None  # the command prints this for a widen run only
    t = FoldingTable(f"widen: s = {w['scale']:.4f}", ["conv", "c_in → after", "c_out → after"])
    for r in w["layers"]:
        t.add_row(
            r["name"], f"{r['c_in']} → {r['c_in_after']}", f"{r['c_out']} → {r['c_out_after']}"
        )
    console.print(t)
    for f in w["frozen_by"]:
        console.print(f"frozen by {f['op']}: {f['reason']}")
    if report.convs:
        print_report(report)
    else:
        print_checks(report)
        console.print(report.message)


def _check_report_path(report: str | None, model: str, output: str) -> None:
    """Every output target checked before anything is written: the report's folder, and that it
    is neither the model nor OUT."""
    if report is None or report == "-":
        return
    check_json_out(report, "--report")
    target = Path(report).resolve()
    for other, what in ((model, "the input model"), (output, "the output model")):
        if target == Path(other).resolve():
            raise UserError(f"--report {report} is {what}: choose another file")


def _optimize(
    model: str, output: str, report: str | None, json_out: bool, quiet: bool, **options: object
) -> None:
    """Replace every qualifying dense conv with its most efficient SK design (Mode 1: reduce).

    Example: onnx-sk optimize resnet18.onnx resnet18_sk.onnx --input-shape input:1x3x224x224
    """
    _check_report_path(report, model, output)
    written: list[Path] = []

    def write_report(rep: Report) -> None:  # before the model's rename: a failure writes nothing
        if report is not None and report != "-":
            written.append(save_json(rep.to_dict(), report, "--report"))

    try:
        with stage_bar(quiet or json_out or report == "-") as bar:
            _, rep = optimize_model(
                model, output, options_from_cli(options), progress=bar, before_commit=write_report
            )
    except BaseException:
        for path in written:  # the model was not written: take its report back too
            with contextlib.suppress(OSError):
                os.unlink(path)
        raise
    if json_out or report == "-":
        print_json(rep.to_dict())
    elif quiet:
        console.print(rep.message)
    elif rep.widen is not None:
        print_widen_report(rep)
    else:
        print_report(rep)


def optimize_cmd() -> Callable[..., None]:
    """The ``optimize`` command: model and output, every declared option, --report and -q."""

    def command(**kwargs: Any) -> None:
        _optimize(**kwargs)

    positional = inspect.Parameter.POSITIONAL_OR_KEYWORD
    keyword = inspect.Parameter.KEYWORD_ONLY
    params = [
        inspect.Parameter(
            "model", positional, annotation=str,
            default=typer.Argument(..., help="Input ONNX model (never modified)."),
        ),
        inspect.Parameter(
            "output", positional, annotation=str,
            default=typer.Argument(..., help="Output ONNX model (written atomically)."),
        ),
        *option_parameters(),
        inspect.Parameter(
            "report", keyword, annotation=Optional[str],  # noqa: UP045  (read by Typer)
            default=typer.Option(
                None, "--report", "--json-out",
                help="Write the JSON report to this file (- = stdout), before OUT is renamed "
                "into place.",
            ),
        ),
        inspect.Parameter(
            "json_out", keyword, annotation=bool,
            default=typer.Option(
                False, "--json", help="Print the JSON report to stdout (instead of the tables)."
            ),
        ),
        inspect.Parameter(
            "quiet", keyword, annotation=bool,
            default=typer.Option(
                False, "--quiet", "-q", help="Print only the summary line; no progress bar."
            ),
        ),
    ]  # fmt: skip
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = _optimize.__doc__
    return command
