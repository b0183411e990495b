"""ErrorBudgetPass (``--max-error τ``): deploy without retraining by replacing only convs that
approximate well. Changes nothing in the model; re-decides the plan.

After the plan and the fit targets: the policy's decisions (first conv, ``--exclude``,
``--min-channels``, ineligible convs) stand with their reasons; for every conv the policy would
replace, the admissible realisations of the allowed designs that are cheaper than the dense conv
(by ``--objective``) are fitted with ``approx.fit`` in increasing cost, and the first whose
relative error is ≤ τ is chosen. The error is the output error on the calibration patches with
``--calibration``, the (BN-scaled) weight error otherwise. A conv with no such design is kept, and
its reason names the best error of an admissible realisation (one that beats the dense conv),
never that of a screening fit that is not admissible itself. Each design is screened first by its loosest realisation
(M = N = 1), whose kernels include those of every other realisation: a design whose loosest
error exceeds τ is skipped whole (for the bottleneck designs this relies on CP-ALS finding a
near-optimal fit).
"""

from __future__ import annotations

import onnx

from onnx_sk.maths.approx import Target, fit, relative_errors
from onnx_sk.maths.designs import DESIGNS, Realisation, dense_equivalent, realisations
from onnx_sk.maths.select import COSTS, beats_dense, candidates, cost, tie_break
from onnx_sk.options import OptimizeOptions
from onnx_sk.passes.base import PassResult
from onnx_sk.passes.context import Decision, PassContext
from onnx_sk.runtime.blas import single_blas_thread


def layer_error(real: Realisation, weight, target: Target | None) -> float:
    """The error --max-error compares with τ: output error with calibration data, else weight error."""
    weight_error, output_error = relative_errors(
        weight, dense_equivalent(real.stages, fit(real, weight, target)), target
    )
    return weight_error if output_error is None else output_error


def _ranked(d: Decision, options: OptimizeOptions) -> list[Realisation]:
    spec = d.site.spec
    assert spec is not None
    reduce = options.reduce
    order = [reduce.design] if reduce.design in DESIGNS else list(DESIGNS)
    # a measured objective (latency) ranks by parameters here: fits are chosen by their error
    objective = reduce.objective if reduce.objective in COSTS else "params"
    ratio = reduce.bottleneck_ratio
    found = [r for r in candidates(spec, order, ratio) if beats_dense(r, objective)]
    return sorted(
        found, key=lambda r: (cost(r, objective), *tie_break(r, objective), order.index(r.design))
    )


def _loosest(real: Realisation, options: OptimizeOptions) -> Realisation:
    """The design's realisation with M = N = 1: every other one's kernels are among its kernels
    (grouping only adds zeros), so its optimal error bounds theirs from below."""
    for r in realisations(real.design, real.spec, options.reduce.bottleneck_ratio):
        if all(v == 1 for _, v in r.groups):
            return r
    return real


def _label(real: Realisation) -> str:
    groups = " ".join(f"{k}={v}" for k, v in real.groups)
    k = f" K={real.bottleneck}" if real.bottleneck else ""
    return f"{real.design}{' ' + groups if groups else ''}{k}"


def decide_within(d: Decision, options: OptimizeOptions, target: Target | None) -> Decision:
    """The cheapest realisation with error ≤ τ, or the conv kept with the best error found."""
    tau = options.fitting.max_error
    assert tau is not None
    ranked = _ranked(d, options)
    best: tuple[float, Realisation] | None = None  # the best *admissible* realisation fitted
    bounds: dict[str, float] = {}
    for real in ranked:
        if real.design not in bounds:
            loosest = _loosest(real, options)
            bounds[real.design] = layer_error(loosest, d.site.weight, target)
            if loosest in ranked and (best is None or bounds[real.design] < best[0]):
                best = (bounds[real.design], loosest)  # the screening fit is admissible too
        if bounds[real.design] > tau:
            continue  # no realisation of this design can fit better than its loosest one
        err = layer_error(real, d.site.weight, target)
        if err <= tau:
            return Decision(d.site, real, note=f"error {err:.3g} ≤ --max-error {tau:g}")
        if best is None or err < best[0]:
            best = (err, real)
    if not ranked:
        return Decision(d.site, None, d.reason or "no SK design is cheaper than the dense conv")
    if best is None:  # every design screened out by a loosest realisation that is not admissible
        return Decision(
            d.site,
            None,
            f"no design within --max-error {tau:g} (every admissible design errs by at least "
            f"{min(bounds.values()):.3g}, the error of its design's M=N=1 screening fit)",
        )
    return Decision(
        d.site,
        None,
        f"no design within --max-error {tau:g} (best admissible: {_label(best[1])}, "
        f"error {best[0]:.3g})",
    )


def within_error(
    decisions: list[Decision], options: OptimizeOptions, targets: dict[str, Target]
) -> list[Decision]:
    """Re-decide every conv the policy would replace under --max-error (others unchanged)."""
    out = []
    with single_blas_thread():
        for d in decisions:
            if d.real is None:
                out.append(d)
                continue
            out.append(decide_within(d, options, targets.get(d.site.node.output[0])))
    return out


class ErrorBudgetPass:
    name = "error-budget"

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        ctx.decisions = within_error(ctx.decisions, ctx.options, ctx.targets)
        return PassResult(model, modified=False)
