"""Mode 2, "widen" (T-ITS'21 Sec. V-B, Algorithm 2): spend what the SK designs save on width.

Two ways, chosen by ``--widen-init``:

- ``he`` (default; the papers retrain from scratch): the *original* model's channel spaces are
  scaled by ``s`` (new weight entries He-normal), then Mode 1 runs on the widened model, so every
  SK design's group numbers are chosen afresh for the new widths (Theorem 1: M·N = the middle
  width). ``s`` is solved on the exact count that this gives. Verified like Mode 1 (checker,
  information fields, dense-twin outputs against the widened dense model) and the output
  signature is the original's.
- ``preserve``: Mode 1 runs first, then the *reduced* model is widened with its group numbers
  kept: original channels keep their weights, new channels get He-normal incoming and zero
  outgoing weights, so the widened model computes exactly what the reduced one does (checked in
  ONNX Runtime at verification). ``s ≥ 1``.

``--design none`` skips Mode 1 (widening alone, for models whose convs are already sparse).
The budget is the original model's conv parameters (``--budget conv``) or all float parameters
(``--budget all``), or ``--param-budget N``; ``--width-scale S`` gives ``s`` directly.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import onnx

from onnx_sk.graph.analyze import float_params
from onnx_sk.graph.convs import find_convs
from onnx_sk.errors import UserError
from onnx_sk.graph.load import LoadedModel
from onnx_sk.graph.save import save_model
from onnx_sk.passes.reduce import run_reduce
from onnx_sk.width.rewrite import run_widen
from onnx_sk.passes.plan import Options, decide, plan
from onnx_sk.graph.shapes import infer_shapes
from onnx_sk.width.analysis import (
    BUDGETS,
    MAX_SCALE,
    ChannelAnalysis,
    Solution,
    analyze_channels,
    solve_scale,
)

WIDEN_INITS = ("he", "preserve")
MAX_ROUND_TO = 1024


def validate_widen(o: Options) -> None:
    """Bad widen options → one clear message (called by ``Options.validate``)."""
    given = [
        name for name, v, default in (
            ("--width-scale", o.width_scale, None), ("--param-budget", o.param_budget, None),
            ("--budget", o.budget, "conv"), ("--round-to", o.round_to, 1),
            ("--widen-init", o.widen_init, "he"),
        ) if v != default
    ]  # fmt: skip
    if o.mode != "widen":
        if given:
            raise UserError(f"{given[0]} needs --mode widen")
        if o.design == "none":
            raise UserError("--design none needs --mode widen (widening alone)")
        return
    if o.budget not in BUDGETS:
        raise UserError(f"--budget {o.budget!r}: expected one of {', '.join(BUDGETS)}")
    if o.widen_init not in WIDEN_INITS:
        raise UserError(f"--widen-init {o.widen_init!r}: expected one of {', '.join(WIDEN_INITS)}")
    if o.width_scale is not None and o.param_budget is not None:
        raise UserError("give --width-scale or --param-budget, not both")
    s = o.width_scale
    if s is not None and not (math.isfinite(s) and 0 < s <= MAX_SCALE):
        raise UserError(f"--width-scale {s}: expected 0 < S <= {MAX_SCALE:g}")
    if s is not None and s < 1 and o.widen_init == "preserve":
        raise UserError(f"--width-scale {s}: --widen-init preserve cannot narrow (expected S >= 1)")
    if o.param_budget is not None and o.param_budget <= 0:
        raise UserError(f"--param-budget {o.param_budget}: expected a positive number of parameters")
    if not 1 <= o.round_to <= MAX_ROUND_TO:
        raise UserError(f"--round-to {o.round_to}: expected 1 <= N <= {MAX_ROUND_TO}")
    if o.design == "none" and s is None and o.param_budget is None:
        raise UserError(
            "--design none keeps the parameter budget at s = 1: give --width-scale or --param-budget"
        )


def model_conv_params(model: onnx.ModelProto) -> int:
    """Weight + bias elements of the main graph's Conv nodes (constants only)."""
    from onnx_sk.graph.index import constant_values

    consts = constant_values(model.graph)
    total = 0
    for n in model.graph.node:
        if n.op_type == "Conv":
            total += sum(int(consts[t].size) for t in n.input[1:3] if t in consts)
    return total


class _Counter:
    """Parameters after widening by ``s`` (and, in he mode, after Mode 1 on the widened model)."""

    def __init__(self, analysis: ChannelAnalysis, options: Options, sites, reduce_after: bool):
        self.a, self.o, self.reduce_after = analysis, options, reduce_after
        self.preserve = options.widen_init == "preserve"
        by_out = {s.node.output[0]: s for s in sites}
        graph = analysis.model.graph
        self.sites = {i: by_out.get(n.output[0]) for i, n in enumerate(graph.node) if n.op_type == "Conv"}
        self.chan = {c.node: c for c in analysis.walk.convs}
        self._cache: dict = {}

    def widths(self, s: float):
        return self.a.widths(s, self.o.round_to, at_least_old=self.preserve)

    def __call__(self, s: float) -> int:
        widths = self.widths(s)
        dense = self.a.conv_params(widths)
        conv, delta = 0, 0
        for i, p in dense.items():
            site, ch = self.sites.get(i), self.chan.get(i)
            if self.reduce_after and site is not None and site.spec is not None and ch is not None:
                c_in, c_out = self.a.width(widths, ch.in_atoms), self.a.width(widths, ch.out_atoms)
                group = c_in if ch.depthwise else ch.group
                spec = dataclasses.replace(site.spec, c_in=c_in, c_out=c_out, group=group)
                if spec not in self._cache:
                    self._cache[spec] = decide(dataclasses.replace(site, spec=spec), self.o).real
                real = self._cache[spec]
                if real is not None:
                    delta += real.params - p
                    p = real.params
            conv += p
        return conv if self.o.budget == "conv" else self.a.float_params(widths) + delta


def _layers(a: ChannelAnalysis, widths) -> list[dict]:
    old = {r: sp.size for r, sp in a.spaces.items()}
    rows = []
    for c in a.walk.convs:
        rows.append({
            "name": c.name,
            "c_in": a.width(old, c.in_atoms), "c_out": a.width(old, c.out_atoms),
            "c_in_after": a.width(widths, c.in_atoms), "c_out_after": a.width(widths, c.out_atoms),
        })  # fmt: skip
    return rows


def optimize_widen(loaded: LoadedModel, out, options: Options):
    """Mode 2 end to end; returns ``(model, Report)`` like :func:`onnx_sk.pipeline.optimize_model`."""
    from onnx_sk.pipeline import Report, _conv_row, _options_dict

    original = loaded.model
    preserve = options.widen_init == "preserve"
    reduce = options.design != "none"
    shapes = infer_shapes(original, options.input_shapes)
    sites = find_convs(original, shapes)
    if options.param_budget is not None:
        target = options.param_budget
    else:
        target = model_conv_params(original) if options.budget == "conv" else float_params(original)
    base, decisions, replaced = original, [], []
    if preserve and reduce:
        decisions = plan(sites, options)
        base, replaced = run_reduce(original, decisions, options.init, options.seed)
    base_shapes = shapes if base is original else infer_shapes(base, options.input_shapes)
    analysis = analyze_channels(base, base_shapes)
    if not analysis.free:
        raise UserError("nothing could be widened: every channel space is frozen "
                        f"({_frozen_summary(analysis)})")
    base_sites = sites if base is original else find_convs(base, base_shapes)
    count = _Counter(analysis, options, base_sites, reduce and not preserve)
    if options.width_scale is not None:
        sol = Solution(options.width_scale, count(options.width_scale), target)
    else:
        sol = solve_scale(count, target, 1.0 if preserve else 1.0 / MAX_SCALE)
    widths = count.widths(sol.scale)
    widened = run_widen(base, analysis, widths, preserve, np.random.default_rng(options.seed))
    result = widened
    if reduce and not preserve:
        w_shapes = infer_shapes(widened, options.input_shapes)
        decisions = plan(find_convs(widened, w_shapes), options)
        result, replaced = run_reduce(widened, decisions, options.init, options.seed)
    rows = [_conv_row(d) for d in decisions]
    report = Report(
        model=str(loaded.path) if loaded.path else None,
        output=str(out) if out else None,
        options=_options_dict(options),
        convs=rows,
        totals=_widen_totals(original, result, rows),
    )
    achieved = report.totals["conv_params_after" if options.budget == "conv" else "params_after"]
    report.widen = {
        "scale": sol.scale,
        "budget": options.budget,
        "target": target,
        "achieved": achieved,
        "ratio": achieved / target,
        "met": abs(achieved / target - 1) <= 0.01,
        "widen_init": options.widen_init,
        "spaces_free": len(analysis.free),
        "spaces_frozen": len(analysis.spaces) - len(analysis.free),
        "frozen_by": [{"op": op, "reason": why} for op, why in analysis.walk.frozen_by],
        "layers": _layers(analysis, widths),
    }
    if options.verify:
        report.verification = _verify(original, base, widened, result, replaced, options)
    met = "" if report.widen["met"] else " (budget not met within ±1%)"
    report.message = (
        f"widened {len(analysis.free)} of {len(analysis.spaces)} channel spaces by s = {sol.scale:.4f}; "
        f"{options.budget} params {achieved} = {achieved / target:.4f} × the budget {target}{met}"
    )
    if out is not None:
        save_model(result, out, external_data=loaded.used_external_data or None)
    return result, report


def widen_solution(model: onnx.ModelProto, options: Options) -> dict:
    """The he-mode solution without writing weights (cheap, for large models): s, counts, widths."""
    options.validate()
    shapes = infer_shapes(model, options.input_shapes)
    analysis = analyze_channels(model, shapes)
    count = _Counter(analysis, options, find_convs(model, shapes), options.design != "none")
    target = options.param_budget or (
        model_conv_params(model) if options.budget == "conv" else float_params(model)
    )
    if options.width_scale is not None:
        sol = Solution(options.width_scale, count(options.width_scale), target)
    else:
        sol = solve_scale(count, target, 1.0 / MAX_SCALE)
    widths = count.widths(sol.scale)
    return {
        "scale": sol.scale, "target": target, "achieved": sol.count, "ratio": sol.ratio,
        "params_before": float_params(model), "params_after": analysis.float_params(widths)
        + (sol.count - sum(analysis.conv_params(widths).values()) if options.budget == "conv" else 0),
        "layers": _layers(analysis, widths),
    }  # fmt: skip


def _frozen_summary(a: ChannelAnalysis) -> str:
    reasons = list(dict.fromkeys(r for sp in a.spaces.values() for r in sp.frozen))
    more = f", and {len(reasons) - 3} more" if len(reasons) > 3 else ""
    return "; ".join(reasons[:3]) + more


def _widen_totals(before: onnx.ModelProto, after: onnx.ModelProto, rows: list[dict]) -> dict:
    t = {
        "convs": sum(1 for n in before.graph.node if n.op_type == "Conv"),
        "replaced": sum(1 for r in rows if r["design"]),
        "params_before": float_params(before),
        "params_after": float_params(after),
        "conv_params_before": model_conv_params(before),
        "conv_params_after": model_conv_params(after),
        "conv_macs_before": None,
        "conv_macs_after": None,
    }
    for what in ("params", "conv_params", "conv_macs"):
        b, a = t[f"{what}_before"], t[f"{what}_after"]
        t[f"{what}_ratio"] = a / b if a is not None and b else None
    return t


def _verify(original, base, widened, result, replaced, options: Options) -> dict:
    """Checker + ORT run + unchanged output signature; preserve: same outputs as ``base``."""
    from onnx_sk.verify import _feeds_and_twin_outputs, _run, check, compare_outputs, verify  # noqa: PLC2701

    shapes, seed = options.input_shapes or None, options.seed
    doc: dict = {"checker": True, "fields_checked": 0}
    if replaced and result is not widened:  # he: Mode 1 on the widened model, dense-twin check
        v = verify(widened, result, replaced, shapes, seed)
        doc.update(v.to_dict())
    else:
        check(result)
    reference = base if options.widen_init == "preserve" else original
    feeds, names, want = _feeds_and_twin_outputs(reference, seed, shapes)
    got_names, got = _run(result, feeds)
    if options.widen_init == "preserve":
        abs_max, rel_max = compare_outputs(names, want, got_names, got)
        doc.update(max_abs_diff=abs_max, max_rel_diff=rel_max, preserved=True)
    else:
        _same_signature(names, want, got_names, got)
    doc["input_shapes"] = {k: list(v.shape) for k, v in feeds.items()}
    return doc


def _same_signature(want_names, want, got_names, got) -> None:
    from onnx_sk.errors import VerificationError

    if want_names != got_names:
        raise VerificationError(f"output names changed: {want_names} → {got_names}")
    for name, a, b in zip(want_names, got, want, strict=False):
        if a.dtype != b.dtype or a.shape != b.shape:
            raise VerificationError(
                f"output {name!r} changed: {b.dtype}{list(b.shape)} → {a.dtype}{list(a.shape)}"
            )
