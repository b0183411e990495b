"""PlanPass: every conv of the model and the decision for it (the objective's choice or the
reason it is kept). Changes nothing in the model.

Shapes come from ONNX shape inference with the ``--input-shape`` overrides, and batch 1 for an
input whose only symbolic dim is its batch (so MACs are per sample and ``--objective latency``
measures at batch 1); where inference leaves a conv unsized (shape arithmetic it cannot follow,
as in torch's exported ``chunk``) and every input is concrete, from one ONNX Runtime run
(:mod:`onnx_sk.runtime.observed`); the decisions from :func:`onnx_sk.passes.objectives.plan` (policy, then
the objective). Each conv's spatial dims as the model itself declares them (never the ones an
``--input-shape`` fixed) go in ``ctx.static_spatial``: a shuffle reshapes to constant targets
only where they are static. ``--objective`` not given is decided here (``_default_objective``).
With ``--precision auto`` (measuring on this machine) the plan's network is timed against its
int8 alternative's here (:mod:`onnx_sk.passes.plan_trial`), before anything is fitted; in fp32
against the params objective's (:mod:`onnx_sk.passes.latency_guard`).
"""

from __future__ import annotations

import dataclasses

import onnx

from onnx_sk.errors import UserError
from onnx_sk.graph.convs import ConvSite, find_convs
from onnx_sk.graph.qdq import why_not_int8
from onnx_sk.graph.shapes import infer_shapes, known_dims, per_sample_inputs, symbolic_inputs
from onnx_sk.passes import latency_guard, objectives, plan_trial
from onnx_sk.passes.base import PassResult
from onnx_sk.passes.context import PassContext
from onnx_sk.passes.quantize import check_opset
from onnx_sk.runtime import latency
from onnx_sk.runtime.observed import conv_shapes


class PlanPass:
    name = "plan"

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        counted, ctx.per_sample = per_sample_inputs(model, ctx.input_shapes)
        shapes = conv_shapes(model, counted)  # inference, then one run where it stops
        ctx.sites = find_convs(model, shapes)
        # the user's dims are for counting, never baked into the graph
        ctx.static_spatial = static_spatial(model, ctx.sites, None if ctx.input_shapes else shapes)
        unsized = [s for s in ctx.sites if s.reason is None and latency.in_shape_of(s) is None]
        if ctx.options.reduce.objective is None:
            _default_objective(ctx, bool(unsized))
        if ctx.options.reduce.objective == "latency" and unsized:
            missing = symbolic_inputs(model, ctx.input_shapes)
            if missing:
                names = ", ".join(repr(m.rpartition(":")[0]) for m in missing)
                raise UserError(
                    f"--objective latency measures each conv at the model's input size, and "
                    f"input {names} has a symbolic non-batch dim: give "
                    + " ".join(f"--input-shape {m}" for m in missing)
                )
        check_opset(model, ctx.options.latency.precision)
        ctx.decisions = objectives.plan(
            ctx.sites, ctx.options, ctx.step if ctx.progress is not None else None
        )
        lat = ctx.options.latency
        if lat.precision == "auto" and not lat.lut_from_target:
            ctx.plan_trial = plan_trial.trial(ctx, model)
        if latency_guard.applies(ctx):
            ctx.report.latency_check = latency_guard.check(ctx, model)
        _record_int8(ctx)
        return PassResult(model, modified=False)


def _record_int8(ctx: PassContext) -> None:
    """The convs to write in int8 (``ctx.int8``), with ``--precision auto`` every conv that
    could be (``ctx.int8_eligible``: the quantize pass revises the choice in context), and with
    ``--max-error`` their originals (the error-budget pass may re-decide the designs; the
    precision stands)."""
    budget = ctx.options.fitting.max_error is not None
    auto = ctx.options.latency.precision == "auto"
    for d in ctx.decisions:
        out = d.site.node.output[0]
        eligible = auto and why_not_int8(d.site) is None
        if eligible:
            ctx.int8_eligible[out] = d.site.name
        if d.int8:
            ctx.int8[out] = d.site.name
        if budget and (eligible or d.int8):
            w, b = d.site.weight, d.site.bias
            ctx.int8_dense[out] = (d.site.spec, w, b, d.site.node.input[0])


def _default_objective(ctx: PassContext, unsized: bool) -> None:
    """``--objective`` not given: params; with ``--recover`` in Mode 1, latency where every
    replaceable conv's input size is known (distillation, not the weight fit, then carries the
    accuracy, so the fastest design that keeps the field is the one to train). The options (and
    the report's) say which was used."""
    o = ctx.options
    fast = o.recovery.recover is not None and o.mode == "reduce" and not unsized
    name = "latency" if fast else "params"
    reduce = dataclasses.replace(o.reduce, objective=name)
    ctx.options = dataclasses.replace(o, reduce=reduce)
    ctx.report.options["objective"] = name


def static_spatial(
    model: onnx.ModelProto, sites: list[ConvSite], own: dict | None = None
) -> dict[str, tuple[tuple[int, ...] | None, tuple[int, ...] | None]]:
    """Each conv's (input, output) spatial dims as the model itself declares them (batch 1 where
    only the batch is symbolic), None where a dim is symbolic; ``own``: those shapes when known."""
    if own is None:
        own = infer_shapes(model, per_sample_inputs(model)[0])
    return {
        s.node.output[0]: (_spatial(own.get(s.node.input[0])), _spatial(own.get(s.node.output[0])))
        for s in sites
    }


def _spatial(shape: tuple[int | None, ...] | None) -> tuple[int, ...] | None:
    """The static spatial dims of an [N, C, *spatial] shape (None when any is symbolic)."""
    return None if shape is None or len(shape) < 3 else known_dims(shape[2:])
