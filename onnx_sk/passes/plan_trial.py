"""``--precision auto``: of the two plans the measurements give, the one the network runs faster.

Each conv's options (dense or an SK realisation, each in fp32 or int8) were timed between fp32
neighbours (:func:`onnx_sk.runtime.latency.measure_precisions`), where an int8 option pays a
Q/DQ pair and layout transposes. The plan takes the fastest (``Decision.real``, ``.int8``): for
a network of fp32 convs. Its alternative (``Decision.alt``,
:func:`onnx_sk.passes.precision.choose_in_int8`) is each conv's fastest int8 option: for a
network of int8 convs, where those borders are gone. Neither one-conv view can tell which
network runs faster. (Measured: ResNet-18 with its stem replaced, 1 thread: the plan takes
grouped pwg-dw-pwg designs, fast in fp32 NCHWc and slow in int8, and that network all in int8
ran 0.69× the plan's mix; pw-dw-pw designs in int8, quantized by hand with ONNX Runtime's
quantizer and the stem's first two stages left fp32, ran 1.22× faster than it.)

So when the two plans differ, both networks are built from the model: every planned SK design
written with He-normal weights (a network's time does not depend on its weight values), every
int8 conv in QDQ form with activation ranges from one seeded random input. The alternative's
boundaries are revised first by a few flips, stage by stage, as the quantize pass will revise
the plan's (one-conv measurements cannot see a boundary's cost either: measured, the
alternative's fp32 ResNet-18 stem before int8 convs makes the MaxPool between them ONNX
Runtime's uint8 NCHW pooling, 3.8 ms in a 1.4 ms network, until the stem's last stage is int8).
Then the two are timed against each other on the target
(:class:`onnx_sk.runtime.paired.PairedTimer`), and the alternative is taken when it is at least
``ACCEPT`` faster. The quantize pass then revises the precisions, stage by stage, in the
network finally written (:mod:`onnx_sk.passes.int8_context`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from onnx_sk.errors import UserError
from onnx_sk.graph.build import Replacement, apply_replacements
from onnx_sk.graph.qdq import activation_tensors, why_not_int8, with_int8_joins
from onnx_sk.maths.designs import Realisation
from onnx_sk.maths.weight_init import INITIALISERS
from onnx_sk.passes.context import Decision, PassContext
from onnx_sk.passes.int8_context import revise, stage_units, with_qdq
from onnx_sk.passes.objectives import DEFAULT_PROVIDER
from onnx_sk.passes.quantize import marked_nodes
from onnx_sk.runtime.paired import PairedTimer, one_sample
from onnx_sk.runtime.quantize import activation_ranges, seeded_feeds

#: the alternative plan is taken when its network is at least this much faster
ACCEPT = 1.02
#: the most boundary flips tried on the alternative before the comparison
REPAIRS = 4


def _planned(d: Decision, alternative: bool) -> tuple[Any, bool]:
    """(realisation or None, int8) of one conv under the plan or its alternative."""
    if alternative and d.alt is not None:
        return d.alt.real, d.alt.int8
    return d.real, d.int8


@dataclass
class Network:
    """A plan written for timing: the fp32 model, its int8-capable units (stages), which are
    int8, the activation ranges of every unit, and the units' names."""

    model: onnx.ModelProto
    units: dict[str, list[str]]
    int8: set[str]
    ranges: dict[str, tuple[float, float]]
    names: dict[str, str]


def with_designs(
    ctx: PassContext, model: onnx.ModelProto, reals: list[Realisation | None]
) -> onnx.ModelProto:
    """The model with each conv's realisation in ``reals`` (None: kept dense; one per decision)
    written with He-normal weights, for timing only."""
    return _written(ctx, model, reals)[0]


def _written(
    ctx: PassContext, model: onnx.ModelProto, reals: list[Realisation | None]
) -> tuple[onnx.ModelProto, list[Replacement]]:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    rng = np.random.default_rng(ctx.options.seed)
    replacements = []
    for d, real in zip(ctx.decisions, reals, strict=True):
        if real is None:
            continue
        conv = d.site.node.output[0]
        assert d.site.weight is not None  # an eligible conv has constant weights
        weights = INITIALISERS["he"](real, d.site.weight, d.site.bias, rng)
        in_spatial, out_spatial = ctx.static_spatial.get(conv, (None, None))
        replacements.append(
            Replacement(
                d.site.name, d.site.node.input[0], conv, real, weights, d.site.bias,
                in_spatial=in_spatial, out_spatial=out_spatial,
            )
        )  # fmt: skip
    apply_replacements(out.graph, replacements)
    return out, replacements


def network(ctx: PassContext, model: onnx.ModelProto, alternative: bool) -> Network:
    """The model as one plan writes it, for timing only (module docstring)."""
    plans = [_planned(d, alternative) for d in ctx.decisions]
    out, replacements = _written(ctx, model, [real for real, _ in plans])
    int8, eligible = set(), {}
    for d, (_, is_int8) in zip(ctx.decisions, plans, strict=True):
        conv = d.site.node.output[0]
        if why_not_int8(d.site) is None:
            eligible[conv] = d.site.name
        if is_int8:
            int8.add(conv)
    units, conv_of = stage_units(out.graph, marked_nodes(out.graph, eligible, replacements))
    names = {n.output[0]: n.name or n.output[0] for n in out.graph.node if n.output}
    nodes = with_int8_joins(out.graph, [t for ts in units.values() for t in ts])
    ranges: dict[str, tuple[float, float]] = {}
    if nodes:
        tensors = activation_tensors(out.graph, nodes)
        feeds = seeded_feeds(out, ctx.input_shapes, ctx.options.seed)
        what = "the planned network on seeded input"
        ranges, *_ = activation_ranges(out, tensors, iter([next(feeds)]), what=what)
    chosen = {u for u, c in conv_of.items() if c in int8}
    return Network(out, units, chosen, ranges, {u: names.get(u, u) for u in units})


def trial(ctx: PassContext, model: onnx.ModelProto) -> dict[str, Any] | None:
    """Time the plan's network against its alternative's, the alternative's boundaries first
    revised by up to ``REPAIRS`` flips (:func:`onnx_sk.passes.int8_context.revise`: the plan's
    will be too, in the network written); take the alternative when it is ``ACCEPT`` faster.
    Returns what the report's ``precision.plan`` says (None: no trial; ``skipped``: the
    alternative's network could not run on the target, and the plan stands)."""
    changed = sum(
        d.alt is not None and (d.alt.real, d.alt.int8) != (d.real, d.int8) for d in ctx.decisions
    )
    if not changed:
        return None
    o = ctx.options
    a = network(ctx, model, False)
    feeds = one_sample(a.model, next(seeded_feeds(a.model, ctx.input_shapes, o.seed)))
    timer = PairedTimer(
        o.latency.provider or DEFAULT_PROVIDER, o.latency.threads or 1, feeds, seed=o.seed
    )
    plan = timer.open(with_qdq(a.model, a.units, a.int8, a.ranges), "the plan's network")
    try:  # the plan's network is the one written when the alternative cannot run
        b = network(ctx, model, True)
        repaired, flips = revise(
            b.model, b.units, b.int8, b.ranges, timer, b.names, max_trials=REPAIRS,
            every_first=False,
        )  # fmt: skip
        what = "the alternative plan's network"
        speedup = timer.speedup(
            plan, timer.open(with_qdq(b.model, b.units, repaired, b.ranges), what)
        )
    except UserError as exc:
        return {"convs_differing": changed, "taken": False, "skipped": str(exc)}
    taken = speedup >= ACCEPT
    if taken:
        for d in ctx.decisions:
            d.take_alternative()
    return {
        "convs_differing": changed,
        "repairs": flips,
        "speedup": round(speedup, 4),
        "taken": taken,
    }
