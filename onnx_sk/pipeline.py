"""``optimize``: load → find convs → plan → ReducePass → verify → save atomically.

The library entry point for ``onnx-sk optimize`` and for post-export use::

    model, report = onnx_sk.optimize("resnet18.onnx", "resnet18_sk.onnx", seed=0)
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from onnx_sk import fit_targets
from onnx_sk.graph.analyze import float_params
from onnx_sk.graph.convs import find_convs
from onnx_sk.passes.error_budget import within_error
from onnx_sk.graph.load import load_model
from onnx_sk.graph.save import check_output_path, save_model
from onnx_sk.graph.tensors import is_large
from onnx_sk.passes.reduce import apply, prepare
from onnx_sk.passes.training_bn import insert_identity_bn
from onnx_sk.passes.plan import Decision, Options, plan
from onnx_sk.runtime.session import release_memory
from onnx_sk.graph.shapes import infer_shapes, light_copy, parse_input_shapes
from onnx_sk.verify import dense_twin_outputs, twin_overrides, verify_result


@dataclass
class Report:
    """What optimize did, conv by conv, and the totals (``to_dict`` is the JSON report)."""

    model: str | None
    output: str | None
    options: dict
    convs: list[dict] = field(default_factory=list)
    totals: dict = field(default_factory=dict)
    verification: dict | None = None
    message: str = ""
    widen: dict | None = None  # --mode widen: s, budget, achieved ratio, per-layer widths

    @property
    def replaced(self) -> int:
        return sum(1 for c in self.convs if c["design"])

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "output": self.output,
            "options": self.options,
            "convs": self.convs,
            "totals": self.totals,
            "verification": self.verification,
            "message": self.message,
            **({"widen": self.widen} if self.widen is not None else {}),
        }


def _macs(real_or_spec_macs, batch):
    return None if real_or_spec_macs is None or batch is None else real_or_spec_macs * batch


def _conv_row(d: Decision) -> dict:
    site, real = d.site, d.real
    spec = site.spec
    row = {
        "name": site.name,
        "design": real.design if real else None,
        "groups": real.group_dict if real else None,
        "bottleneck": real.bottleneck if real else None,
        "params_before": spec.params if spec else None,
        "params_after": (real.params if real else spec.params) if spec else None,
        "macs_before": site.macs(),
        "macs_after": site.macs(),
        "reason": d.reason,
        "note": d.note,
    }
    if real is not None:
        ok = site.in_spatial is not None and site.out_spatial is not None
        row["macs_after"] = _macs(real.macs(site.in_spatial, site.out_spatial) if ok else None, site.batch)
    return row


def _sum(rows, key):
    values = [r[key] for r in rows if r[key] is not None]
    return sum(values) if len(values) == len(rows) else None


def _totals(rows: list[dict], before: onnx.ModelProto | int, after: onnx.ModelProto) -> dict:
    t = {
        "convs": len(rows),
        "replaced": sum(1 for r in rows if r["design"]),
        "params_before": before if isinstance(before, int) else float_params(before),
        "params_after": float_params(after),
        "conv_params_before": _sum(rows, "params_before"),
        "conv_params_after": _sum(rows, "params_after"),
        "conv_macs_before": _sum(rows, "macs_before"),
        "conv_macs_after": _sum(rows, "macs_after"),
    }
    for what in ("params", "conv_params", "conv_macs"):
        b, a = t[f"{what}_before"], t[f"{what}_after"]
        t[f"{what}_ratio"] = a / b if a is not None and b else None
    return t


def optimize_model(
    source, output: str | os.PathLike | None, options: Options, overwrite: bool = False
) -> tuple[onnx.ModelProto, Report]:
    options.validate()
    loaded = load_model(source)
    out = (
        check_output_path(output, [loaded.path], overwrite, loaded.data_paths)
        if output is not None
        else None
    )
    if options.mode == "widen":
        from onnx_sk.passes.widen import optimize_widen

        return optimize_widen(loaded, out, options)
    shapes = infer_shapes(loaded.model, options.input_shapes)
    sites = find_convs(loaded.model, shapes)
    decisions = plan(sites, options)
    targets = _fit_targets(loaded.model, sites, options)
    if options.max_error is not None:
        decisions = within_error(decisions, options, targets)
    replaced = prepare(decisions, options.init, options.seed, targets)
    rows = [_conv_row(d) for d in decisions]
    _add_init_errors(rows, replaced)
    report = Report(
        model=str(loaded.path) if loaded.path else None,
        output=str(out) if out else None,
        options=_options_dict(options),
        convs=rows,
    )
    if not replaced:
        report.totals = _totals(rows, loaded.model, loaded.model)
        report.message = "no conv was replaced: the model is written unchanged"
        if out is not None:
            _write_unchanged(loaded, out)
        return loaded.model, report
    model = _owned(loaded)
    large = is_large(model, True if loaded.used_external_data else None)
    params_before = float_params(model)
    n_sites, twin = len(sites), None
    overrides = twin_overrides(model, replaced) if options.verify and loaded.path else None
    if overrides is not None:
        # ONNX Runtime loads the twin from the file: drop our copy of the weights meanwhile
        # (peak memory ≈ one model, not two) and read the file again for the rewrite
        light = light_copy(model)
        del sites, decisions, targets
        model = loaded.model = None
        release_memory()
        twin = dense_twin_outputs(
            light, replaced, options.input_shapes or None, options.seed, large, loaded.path, overrides
        )
        del overrides, light
        model = loaded.model = load_model(loaded.path).model
    elif options.verify:
        twin = dense_twin_outputs(model, replaced, options.input_shapes or None, options.seed, large)
    apply(model, replaced)  # in place: one copy of the model in memory
    if options.for_training:
        insert_identity_bn(model, replaced)
    report.totals = _totals(rows, params_before, model)
    report.message = f"replaced {len(replaced)} of {n_sites} convs"

    def _verify(path: Path | None) -> None:
        if twin is not None:
            report.verification = verify_result(model, replaced, twin, large, path).to_dict()

    if out is None:
        _verify(None)
    else:  # verified from the written temporary file, renamed into place only if it passes
        save_model(model, out, external_data=large or loaded.used_external_data, before_rename=_verify)
    return model, report


def _fit_targets(model: onnx.ModelProto, sites, options: Options) -> dict:
    """BN scales and calibration patches for --init approx (nothing for other initialisers)."""
    if options.init != "approx":
        return {}
    return fit_targets.targets(model, sites, options.calibration, options.seed)


def _add_init_errors(rows: list[dict], replaced) -> None:
    """init_error (relative weight error, BN-scaled) and init_output_error (on calibration data)."""
    by_name = {r.name: r for r in replaced}
    for row in rows:
        r = by_name.get(row["name"]) if row["design"] else None
        row["init_error"] = r.init_error if r else None
        row["init_output_error"] = r.init_output_error if r else None


def _owned(loaded) -> onnx.ModelProto:
    """The model to rewrite in place: ours when loaded from a path, else a copy of the caller's."""
    if loaded.path is not None:
        return loaded.model
    copy = onnx.ModelProto()
    copy.CopyFrom(loaded.model)
    return copy


def _write_unchanged(loaded, out: Path) -> None:
    if loaded.path is not None and not loaded.used_external_data:
        tmp = out.parent / f".{out.name}.copy.tmp"
        try:
            shutil.copyfile(loaded.path, tmp)
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
        return
    save_model(loaded.model, out, external_data=loaded.used_external_data or None)


def _options_dict(options: Options) -> dict:
    d = dict(options.__dict__)
    d["exclude"] = list(options.exclude)
    d["input_shapes"] = {k: list(v) for k, v in options.input_shapes.items()}
    return d


def optimize(
    model: str | os.PathLike | onnx.ModelProto,
    output: str | os.PathLike | None = None,
    *,
    design: str | None = None,
    objective: str = "params",
    seed: int = 0,
    include_first: bool = False,
    min_channels: int = 1,
    exclude: list[str] | tuple[str, ...] = (),
    bottleneck_ratio: float = 0.25,
    init: str = "he",
    verify: bool = True,
    input_shape: list[str] | None = None,
    overwrite: bool = False,
    provider: str | None = None,
    threads: int | None = None,
    lut: str | os.PathLike | None = None,
    lut_from_target: bool = False,
    mode: str = "reduce",
    budget: str = "conv",
    width_scale: float | None = None,
    param_budget: int | None = None,
    round_to: int = 1,
    widen_init: str = "he",
    calibration: str | os.PathLike | None = None,
    max_error: float | None = None,
    for_training: bool = False,
) -> tuple[onnx.ModelProto, Report]:
    """Replace the dense convs of ``model`` with SK designs (Mode 1: reduce), or with
    ``mode="widen"`` also scale every free channel space back to the parameter budget (Mode 2,
    :mod:`onnx_sk.passes.widen`).

    Returns the optimized ``ModelProto`` and a :class:`Report`; writes ``output`` atomically when
    given. Raises :class:`~onnx_sk.errors.UserError` for bad input and
    :class:`~onnx_sk.verify.VerificationError` when the result fails verification.
    """
    options = Options(
        design=design,
        objective=objective,
        seed=seed,
        include_first=include_first,
        min_channels=min_channels,
        exclude=tuple(exclude),
        bottleneck_ratio=bottleneck_ratio,
        init=init,
        verify=verify,
        input_shapes=parse_input_shapes(input_shape),
        provider=provider,
        threads=threads,
        lut=None if lut is None else str(lut),
        lut_foreign=lut_from_target,
        mode=mode,
        budget=budget,
        width_scale=width_scale,
        param_budget=param_budget,
        round_to=round_to,
        widen_init=widen_init,
        calibration=None if calibration is None else str(calibration),
        max_error=max_error,
        for_training=for_training,
    )
    return optimize_model(model, output, options, overwrite)
