"""Which conv gets which SK design: the user's policy, then an objective (Mode 1: reduce).

Policy, in order (``policy_reason``): the conv must be eligible (``graph.convs.why_not``); the
network's first conv is kept unless ``--include-first`` (the papers' advice); ``--exclude``
names are kept; convs with fewer than ``--min-channels`` input or output channels are kept.

Objectives are a registry (``OBJECTIVES``, filled by ``@objective``): each turns the convs into
decisions. A counted objective is one ``@counted`` cost in ``maths/select.py`` (registered here
with the others, from ``COUNTED_OBJECTIVES``); a measured one is one ``@objective`` function here.

- ``params``, ``macs``: counted (``maths.select.choose``) conv by conv. A forced ``--design``
  that cannot be realised (or is not smaller than the dense conv) falls back to the best of the
  other designs, and the decision's note says so.
- ``latency``: measured on the target (``runtime.latency``): every distinct conv shape's dense
  conv and SK candidates are timed (or read from ``--lut``), and the fastest candidate that keeps
  the information field wins if it is at least ``MIN_SPEEDUP`` faster than the dense conv. With
  ``--precision int8|auto`` each is also timed in int8 and :mod:`onnx_sk.passes.precision`
  chooses (with ``auto``, the convs the policy keeps are timed too: dense fp32 vs int8).

``validate`` checks the options this module owns (the reduce and latency groups).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

from onnx_sk.errors import UserError
from onnx_sk.graph.convs import ConvSite
from onnx_sk.graph.qdq import why_not_int8
from onnx_sk.maths.designs import DESIGNS
from onnx_sk.maths.select import COUNTED_OBJECTIVES, choose
from onnx_sk.options import OptimizeOptions
from onnx_sk.passes import precision as precision_choice
from onnx_sk.passes.context import Decision
from onnx_sk.runtime import latency
from onnx_sk.runtime.lut import load_lut
from onnx_sk.runtime.progress import Progress
from onnx_sk.runtime.session import check_providers

DEFAULT_PROVIDER = "CPUExecutionProvider"

Objective = Callable[[list[ConvSite], OptimizeOptions, "Progress | None"], list[Decision]]
OBJECTIVES: dict[str, Objective] = {}


def objective(*names: str) -> Callable[[Objective], Objective]:
    def register(fn: Objective) -> Objective:
        for name in names:
            if name in OBJECTIVES:
                raise ValueError(f"objective {name!r} registered twice")
            OBJECTIVES[name] = fn
        return fn

    return register


def policy_reason(site: ConvSite, options: OptimizeOptions) -> str | None:
    """Why the user's policy keeps this conv, or None when it may be replaced."""
    if site.reason:
        return site.reason
    spec = site.spec
    assert spec is not None
    reduce = options.reduce
    if site.first and not reduce.include_first:
        return "first conv: kept by default (--include-first replaces it)"
    if site.name in reduce.exclude or site.node.output[0] in reduce.exclude:
        return "excluded by --exclude"
    if min(spec.c_in, spec.c_out) < reduce.min_channels:
        return f"fewer than --min-channels {reduce.min_channels} channels"
    return None


def decide(site: ConvSite, options: OptimizeOptions) -> Decision:
    """The policy, then the counted objective's best design for one conv."""
    reason = policy_reason(site, options)
    if reason:
        return Decision(site, None, reason)
    assert site.spec is not None
    reduce = options.reduce
    ratio = reduce.bottleneck_ratio
    counted = reduce.objective or "params"  # not given: params (the plan pass decides it)
    if reduce.design:
        real, why = choose(site.spec, [reduce.design], counted, ratio)
        if real is not None:
            return Decision(site, real)
        others = [d for d in DESIGNS if d != reduce.design]
        real, _ = choose(site.spec, others, counted, ratio)
        if real is None:
            return Decision(site, None, why)
        return Decision(site, real, note=f"{reduce.design}: {why}; fell back to {real.design}")
    real, why = choose(site.spec, None, counted, ratio)
    return Decision(site, real, why)


@objective(*COUNTED_OBJECTIVES)
def _counted(
    sites: list[ConvSite], options: OptimizeOptions, progress: Progress | None
) -> list[Decision]:
    return [decide(s, options) for s in sites]


@objective("latency")
def _latency(
    sites: list[ConvSite], options: OptimizeOptions, progress: Progress | None
) -> list[Decision]:
    """The policy first, then the fastest measured candidate of each conv shape."""
    lat, reduce = options.latency, options.reduce
    provider = lat.provider or DEFAULT_PROVIDER
    threads = lat.threads or 1
    ratio = reduce.bottleneck_ratio
    designs = [reduce.design] if reduce.design else None
    lut = load_lut(lat.lut, lat.lut_from_target)
    precision = lat.precision
    todo, decisions = [], []
    for site in sites:
        reason = policy_reason(site, options)
        shape = latency.in_shape_of(site)
        if reason is None and shape is None:
            reason = "input size unknown: give --input-shape to measure latency"
        decisions.append(Decision(site, None, reason))
        kept_int8 = precision == "auto" and shape is not None and why_not_int8(site) is None
        if reason is None or kept_int8:
            todo.append(site)
    precisions = ("fp32",) if precision == "fp32" else ("fp32", "int8")
    measured = latency.fill(lut, todo, provider, threads, ratio, options.seed, progress, precisions)
    if measured and lat.lut is not None:
        lut.save(lat.lut)
    for d in decisions:
        spec, shape = d.site.spec, latency.in_shape_of(d.site)
        if precision != "fp32":
            entries = [
                lut.get(provider, threads, latency.shape_key(spec, shape, ratio, p))
                if spec is not None and shape is not None
                else None
                for p in precisions
            ]
            policy = d.reason
            precision_choice.choose(d, entries[0], entries[1], precision, designs, ratio)
            if precision == "auto" and not lat.lut_from_target:
                precision_choice.choose_in_int8(d, entries[0], entries[1], designs, ratio, policy)
        elif d.reason is None:
            assert spec is not None and shape is not None
            entry = lut.get(provider, threads, latency.shape_key(spec, shape, ratio))
            assert entry is not None  # fill measured every missing shape
            capacity = options.recovery.recover is not None  # distillation trains it
            d.real, d.reason, note = latency.decide(d.site, entry, designs, ratio, capacity)
            d.note = note or None
    return decisions


def plan(
    sites: list[ConvSite], options: OptimizeOptions, progress: Progress | None = None
) -> list[Decision]:
    """The decision for every conv, by the objective the options name."""
    check_excludes(sites, options.reduce.exclude)
    # not given, and not decided by the plan pass (widen plans itself): params
    name = options.reduce.objective or "params"
    decisions = OBJECTIVES[name](sites, options, progress)
    if name != "latency" and options.latency.precision == "int8":
        precision_choice.mark_all(decisions)
    return decisions


def check_excludes(sites: list[ConvSite], exclude: tuple[str, ...]) -> None:
    """Every ``--exclude`` name must name a conv (node or output name): a typo would otherwise
    replace the conv it meant to keep. The error lists the closest names."""
    names = [s.name for s in sites] + [o for s in sites for o in s.node.output[:1]]
    for name in exclude:
        if name in names:
            continue
        close = difflib.get_close_matches(name, dict.fromkeys(names), n=3, cutoff=0.6)
        hint = f"; close: {', '.join(close)}" if close else f"; {len(sites)} convs, none close"
        raise UserError(f"--exclude {name!r} matches no conv (node or output name){hint}")


def validate(options: OptimizeOptions) -> None:
    """The reduce options, then the latency options (only with --objective latency)."""
    reduce = options.reduce
    if reduce.design not in (None, "none", *DESIGNS):
        raise UserError(f"--design {reduce.design!r}: expected one of {', '.join(DESIGNS)}")
    if reduce.objective is not None and reduce.objective not in OBJECTIVES:
        raise UserError(
            f"--objective {reduce.objective!r}: expected one of {', '.join(OBJECTIVES)}"
        )
    if not 0 < reduce.bottleneck_ratio <= 1:
        raise UserError(f"--bottleneck-ratio {reduce.bottleneck_ratio}: expected 0 < R <= 1")
    if reduce.min_channels < 1:
        raise UserError(f"--min-channels {reduce.min_channels}: expected a positive integer")


def validate_latency(options: OptimizeOptions) -> None:
    """The latency options: only with --objective latency, and sane."""
    lat = options.latency
    given = [
        flag
        for flag, value in (
            ("--provider", lat.provider),
            ("--threads", lat.threads),
            ("--lut", lat.lut),
            ("--lut-from-target", lat.lut_from_target or None),
        )
        if value is not None
    ]
    # None: not given with --recover, decided by the plan pass (latency where sizes are known)
    if options.reduce.objective not in ("latency", None):
        if given:
            raise UserError(f"{', '.join(given)} apply to --objective latency only")
        return
    if lat.threads is not None and lat.threads < 1:
        raise UserError(f"--threads {lat.threads}: expected a positive integer")
    if lat.lut_from_target and lat.lut is None:
        raise UserError("--lut-from-target needs --lut FILE")
    if not lat.lut_from_target:
        check_providers([lat.provider or DEFAULT_PROVIDER])
