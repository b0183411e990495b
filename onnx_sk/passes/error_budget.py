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

Each fit is computed once (:mod:`onnx_sk.maths.fits`): the screening fit is reused when the
loosest realisation is also ranked, convs with the same kernel, target and spec are decided once,
and the chosen realisation's fit is kept in ``ctx.fits`` for init-weights. The convs are decided
in worker processes when more than one core is free (:func:`onnx_sk.runtime.pool.ordered_map`);
the decisions and weights are the same whatever the number of workers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import onnx

from onnx_sk.maths.approx import Target
from onnx_sk.maths.designs import DESIGNS, Realisation, realisations
from onnx_sk.maths.fits import Fit, FitCache, KernelFits, fit_with_errors
from onnx_sk.maths.select import COSTS, beats_dense, candidates, cost, tie_break
from onnx_sk.maths.spec import ConvSpec
from onnx_sk.options import OptimizeOptions
from onnx_sk.passes.base import PassResult
from onnx_sk.passes.context import Decision, PassContext
from onnx_sk.runtime.pool import ordered_map


def layer_error(real: Realisation, weight: np.ndarray, target: Target | None) -> float:
    """The error --max-error compares with τ: output error with calibration data, else weight error."""
    return fit_with_errors(real, weight, target).error


@dataclass(frozen=True)
class Verdict:
    """What the error budget decided for one conv (a :class:`Decision` without its site)."""

    real: Realisation | None
    reason: str | None = None
    note: str | None = None


def _ranked(spec: ConvSpec, options: OptimizeOptions) -> list[Realisation]:
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


def choose_within(
    spec: ConvSpec, reason: str | None, fits: KernelFits, options: OptimizeOptions
) -> Verdict:
    """The cheapest realisation with error ≤ τ, or the conv kept with the best error found
    (``reason``: the plan's, kept when no design is cheaper than the dense conv)."""
    tau = options.fitting.max_error
    assert tau is not None
    ranked = _ranked(spec, options)
    best: tuple[float, Realisation] | None = None  # the best *admissible* realisation fitted
    bounds: dict[str, float] = {}
    for real in ranked:
        if real.design not in bounds:
            loosest = _loosest(real, options)
            bounds[real.design] = fits.get(loosest).error
            if loosest in ranked and (best is None or bounds[real.design] < best[0]):
                best = (bounds[real.design], loosest)  # the screening fit is admissible too
        if bounds[real.design] > tau:
            continue  # no realisation of this design can fit better than its loosest one
        err = fits.get(real).error
        if err <= tau:
            return Verdict(real, note=f"error {err:.3g} ≤ --max-error {tau:g}")
        if best is None or err < best[0]:
            best = (err, real)
    if not ranked:
        return Verdict(None, reason or "no SK design is cheaper than the dense conv")
    if best is None:  # every design screened out by a loosest realisation that is not admissible
        return Verdict(
            None,
            f"no design within --max-error {tau:g} (every admissible design errs by at least "
            f"{min(bounds.values()):.3g}, the error of its design's M=N=1 screening fit)",
        )
    return Verdict(
        None,
        f"no design within --max-error {tau:g} (best admissible: {_label(best[1])}, "
        f"error {best[0]:.3g})",
    )


def decide_within(
    d: Decision, options: OptimizeOptions, target: Target | None, cache: FitCache | None = None
) -> Decision:
    """:func:`choose_within` for one planned conv (its fits in ``cache``, else a fresh one)."""
    assert d.site.spec is not None and d.site.weight is not None
    fits = (cache or FitCache()).of(d.site.weight, target)
    v = choose_within(d.site.spec, d.reason, fits, options)
    return Decision(d.site, v.real, v.reason, v.note)


#: one conv to decide: its spec, kernel, target, the plan's reason, the options
Task = tuple[ConvSpec, np.ndarray, "Target | None", "str | None", OptimizeOptions]


def _decide(task: Task) -> tuple[Verdict, Fit | None]:
    """One conv's verdict and the chosen realisation's fit (run in a worker process); the other
    fits die with the call, so memory holds one conv's fits at a time."""
    spec, weight, target, reason, options = task
    fits = FitCache().of(weight, target)
    verdict = choose_within(spec, reason, fits, options)
    return verdict, fits.get(verdict.real) if verdict.real is not None else None


def within_error(
    decisions: list[Decision],
    options: OptimizeOptions,
    targets: dict[str, Target],
    cache: FitCache | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> list[Decision]:
    """Re-decide every conv the policy would replace under --max-error (others unchanged); the
    chosen fits go in ``cache`` (module docstring)."""
    cache = cache if cache is not None else FitCache()
    planned = [k for k, d in enumerate(decisions) if d.real is not None]
    tasks: dict[tuple, Task] = {}  # distinct (spec, kernel, target, reason) → its task
    keys, fits = [], []
    for k in planned:
        d = decisions[k]
        spec, weight = d.site.spec, d.site.weight
        assert spec is not None and weight is not None  # a planned conv has constant weights
        target = targets.get(d.site.node.output[0])
        kf = cache.of(weight, target)
        # the conv's name is the only field of its spec that cannot change the verdict
        key = (replace(spec, name=""), kf.weight_digest, kf.target_digest, d.reason)
        tasks.setdefault(key, (spec, weight, target, d.reason, options))
        keys.append(key)
        fits.append(kf)
    distinct = list(tasks)
    done = None
    if progress is not None:
        done = lambda n, total, _: progress(n / total, f"{n}/{total} convs decided")  # noqa: E731
    results = ordered_map(
        _decide,
        [tasks[key] for key in distinct],
        costs=[float(tasks[key][1].size) for key in distinct],
        done=done,
    )
    by_key = dict(zip(distinct, results, strict=True))
    out = list(decisions)
    for k, key, kf in zip(planned, keys, fits, strict=True):
        verdict, fit = by_key[key]
        real = verdict.real
        if real is not None:
            spec = decisions[k].site.spec
            assert fit is not None and spec is not None  # a planned conv (the first loop)
            real = replace(real, spec=spec)  # decided for a twin conv
            kf.store(real, fit)
        out[k] = Decision(decisions[k].site, real, verdict.reason, verdict.note)
    return out


class ErrorBudgetPass:
    name = "error-budget"

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        ctx.decisions = within_error(
            ctx.decisions,
            ctx.options,
            ctx.targets,
            ctx.fits,
            ctx.step if ctx.progress is not None else None,
        )
        return PassResult(model, modified=False)
