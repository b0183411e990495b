"""``--objective latency`` (fp32): the plan's network against the params objective's, timed.

The latency objective chooses each conv's design from its own measurement, taken between two
1×1 neighbours (:mod:`onnx_sk.runtime.micro`). That view is close to the network but not the
network: the layout reorders, shuffles and kernels of consecutive replaced convs interact, and a
conv's own timing carries the machine's noise of the moment. The params objective's designs
are the reference the latency objective must beat, so when the two plans differ, both networks
are built (every planned design with He-normal weights: a network's time does not depend on its
weight values) and timed against each other on the target
(:class:`onnx_sk.runtime.paired.PairedTimer`). When the params plan's network is at least
``ACCEPT`` faster, its designs are taken. So the latency objective is never measurably slower
than the params objective on the target. (Measured before this check: AlexNet's latency plan ran
0.96× its params plan in one run.)

Not done when the table comes from another device (``--lut-from-target``: nothing here is the
target), with ``--precision int8|auto`` (the int8 plan trial, :mod:`onnx_sk.passes.plan_trial`,
compares those), with ``--max-error`` (the error budget re-decides the designs), or with
``--recover`` (the latency objective then weighs capacity against speed on purpose).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import onnx

from onnx_sk.errors import UserError
from onnx_sk.passes import objectives
from onnx_sk.passes.context import PassContext
from onnx_sk.passes.plan_trial import with_designs
from onnx_sk.runtime.paired import PairedTimer, one_sample
from onnx_sk.runtime.quantize import seeded_feeds

#: the params plan is taken when its network is at least this much faster
ACCEPT = 1.02


def applies(ctx: PassContext) -> bool:
    """Whether the check runs (module docstring)."""
    o = ctx.options
    return (
        o.mode == "reduce"
        and o.reduce.objective == "latency"
        and o.latency.precision == "fp32"
        and not o.latency.lut_from_target
        and o.fitting.max_error is None
        and o.recovery.recover is None
    )


def check(ctx: PassContext, model: onnx.ModelProto) -> dict[str, Any] | None:
    """Time the plan's network against the params objective's; take the params designs when
    ``ACCEPT`` faster. Returns the report's ``latency_check`` (None: the plans are the same;
    ``skipped``: a network could not run, and the plan stands)."""
    o = ctx.options
    params = objectives.plan(
        ctx.sites, dataclasses.replace(o, reduce=dataclasses.replace(o.reduce, objective="params"))
    )
    differing = sum(d.real != p.real for d, p in zip(ctx.decisions, params, strict=True))
    if not differing:
        return None
    plan = with_designs(ctx, model, [d.real for d in ctx.decisions])
    feeds = one_sample(plan, next(seeded_feeds(plan, ctx.input_shapes, o.seed)))
    provider = o.latency.provider or objectives.DEFAULT_PROVIDER
    timer = PairedTimer(provider, o.latency.threads or 1, feeds, seed=o.seed)
    try:
        ours = timer.open(plan, "the latency plan's network")
        theirs = with_designs(ctx, model, [p.real for p in params])
        speedup = timer.speedup(ours, timer.open(theirs, "the params plan's network"))
    except UserError as exc:
        return {"convs_differing": differing, "taken": False, "skipped": str(exc)}
    taken = speedup >= ACCEPT
    if taken:
        ctx.decisions = params
    return {"convs_differing": differing, "params_speedup": round(speedup, 4), "taken": taken}
