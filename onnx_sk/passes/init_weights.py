"""InitPass: the stage weights of every conv the plan replaces, and the report's conv rows.

Weights are drawn conv by conv in graph order from one seeded generator (``--seed``) by the
initialiser ``--init`` names (:data:`onnx_sk.maths.weight_init.INITIALISERS`: ``he`` draws
He-normal weights, ``approx`` fits the original kernel), so the same model, options and seed
give a byte-identical output. Each replacement records the relative error of its
dense-equivalent kernel against the original (``approx.relative_errors``: in weight space,
BN-scaled when a BN follows, and on the calibration patches when the targets have them).
Changes nothing in the model.

``approx`` weights come from the run's fit cache (``ctx.fits``, :mod:`onnx_sk.maths.fits`): the
error budget's chosen fits are reused, and the missing ones are fitted once per distinct
(kernel, target, realisation), in worker processes when more than one core is free
(:func:`onnx_sk.runtime.pool.ordered_map`; the same bytes whatever the number of workers).

``validate`` checks the options this module owns (the fitting group).
"""

from __future__ import annotations

import numpy as np
import onnx

from onnx_sk.errors import UserError
from onnx_sk.graph.build import Replacement
from onnx_sk.maths.approx import Target, relative_errors
from onnx_sk.maths.designs import Realisation, dense_equivalent
from onnx_sk.maths.fits import Fit, FitCache, FitKey, fit_with_errors
from onnx_sk.maths.weight_init import INITIALISERS
from onnx_sk.options import OptimizeOptions
from onnx_sk.passes.base import PassResult
from onnx_sk.passes.context import Decision, PassContext
from onnx_sk.report import conv_row
from onnx_sk.runtime.blas import single_blas_thread
from onnx_sk.runtime.pool import ordered_map
from onnx_sk.runtime.progress import Progress

#: the initialiser that is ``approx.fit`` (it draws nothing from the generator): its weights
#: come from the fit cache
FITTED = "approx"


def _fit(task: tuple[Realisation, np.ndarray, Target | None]) -> Fit:
    return fit_with_errors(*task)


def _fitted(
    planned: list[Decision],
    targets: dict[str, Target],
    cache: FitCache,
    progress: Progress | None,
) -> list[Fit]:
    """The fit of every planned conv: from the cache, else fitted once per distinct key."""
    kernels = []
    todo: dict[FitKey, tuple[Realisation, np.ndarray, Target | None]] = {}
    names: dict[FitKey, str] = {}
    for d in planned:
        weight = d.site.weight
        assert d.real is not None and weight is not None  # an eligible conv has constant weights
        kf = cache.of(weight, targets.get(d.site.node.output[0]))
        kernels.append(kf)
        if kf.lookup(d.real) is None:
            todo.setdefault(kf.key(d.real), (d.real, weight, kf.target))
            names.setdefault(kf.key(d.real), d.site.name)
    keys = list(todo)
    done = None
    if progress is not None:

        def done(n: int, total: int, i: int) -> None:
            progress(n / total, f"{FITTED} {n}/{total} {names[keys[i]]}")

    fits = ordered_map(_fit, [todo[k] for k in keys], [float(todo[k][1].size) for k in keys], done)
    for key, found in zip(keys, fits, strict=True):
        cache.put(key, found)
    return [kf.get(d.real) for kf, d in zip(kernels, planned, strict=True)]  # type: ignore[arg-type]


def prepare(
    decisions: list[Decision],
    init: str,
    seed: int,
    targets: dict[str, Target],
    fresh: bool = False,
    static_spatial: dict[str, tuple[tuple[int, ...] | None, tuple[int, ...] | None]] | None = None,
    progress: Progress | None = None,
    fits: FitCache | None = None,
) -> list[Replacement]:
    """Stage weights for every planned conv, drawn in graph order from one seeded generator.

    ``fresh``: the convs have no kernel at their planned widths (widen, he mode): the weights
    are drawn from the dtype alone (every eligible conv is float32: ``graph.convs.why_not``) and
    no initial error is recorded. ``progress`` is told each conv as it is fitted (``approx``)
    or before its weights are drawn. ``fits``: the run's fit cache (``approx``)."""
    rng = np.random.default_rng(seed)
    fn = INITIALISERS[init]
    done: list[Replacement] = []
    planned = [d for d in decisions if d.real is not None]
    fitted = None
    if init == FITTED and not fresh:
        fitted = _fitted(planned, targets, FitCache() if fits is None else fits, progress)
    with single_blas_thread():
        for k, d in enumerate(planned):
            assert d.real is not None
            site = d.site
            if progress is not None and fitted is None:
                progress(k / len(planned), f"{init} {k + 1}/{len(planned)} {site.name}")
            in_spatial, out_spatial = (static_spatial or {}).get(site.node.output[0], (None, None))
            if fresh:
                weights = fn(d.real, np.empty(0, np.float32), None, rng)
                done.append(
                    Replacement(
                        site.name, site.node.input[0], site.node.output[0], d.real, weights,
                        in_spatial=in_spatial, out_spatial=out_spatial,
                    )
                )  # fmt: skip
                continue
            weight = site.weight
            assert weight is not None  # an eligible conv has constant weights
            if fitted is not None:
                weights = list(fitted[k].weights)
                init_error, output_error = fitted[k].weight_error, fitted[k].output_error
            else:
                target = targets.get(site.node.output[0])
                weights = fn(d.real, weight, site.bias, rng, target)
                init_error, output_error = relative_errors(
                    weight, dense_equivalent(d.real.stages, weights), target
                )
            done.append(
                Replacement(
                    site.name, site.node.input[0], site.node.output[0], d.real, weights,
                    site.bias, [], init_error, output_error, in_spatial, out_spatial,
                )
            )  # fmt: skip
    return done


class InitPass:
    name = "init-weights"

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        o = ctx.options
        assert o.fitting.init is not None  # OptimizeOptions.__post_init__ resolves the default
        ctx.replacements = prepare(
            ctx.decisions,
            o.fitting.init,
            o.seed,
            ctx.targets,
            ctx.fresh_weights,
            ctx.static_spatial,
            ctx.step,
            ctx.fits,
        )
        by_output = {r.output: r for r in ctx.replacements}
        ctx.report.convs = [
            conv_row(d.site, d.real, d.reason, d.note, by_output.get(d.site.node.output[0]))
            for d in ctx.decisions
        ]
        return PassResult(model, modified=False)


def validate(options: OptimizeOptions) -> None:
    """--max-error and --calibration need --init approx; --init names an initialiser."""
    fitting = options.fitting
    if fitting.max_error is not None:
        if not fitting.max_error >= 0:
            raise UserError(f"--max-error {fitting.max_error}: expected a relative error >= 0")
        if fitting.init != "approx":
            raise UserError(
                "--max-error needs --init approx (He weights do not approximate anything)"
            )
        if options.mode != "reduce":
            raise UserError("--max-error works with --mode reduce only")
    if fitting.calibration is not None and fitting.init != "approx":
        raise UserError("--calibration needs --init approx")
    if fitting.init not in INITIALISERS:
        raise UserError(f"--init {fitting.init!r}: expected one of {', '.join(INITIALISERS)}")
