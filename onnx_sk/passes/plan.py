"""Which conv gets which SK design: the user's policy applied to every conv (Mode 1: reduce).

Policy, in order: the conv must be eligible (``convs.why_not``); the network's first conv is kept
unless ``include_first`` (the papers' advice); ``exclude`` names are kept; convs with fewer than
``min_channels`` input or output channels are kept; then ``select.choose`` picks the design by the
objective. A forced ``design`` that cannot be realised (or is not smaller than the dense conv)
falls back to the best of the other designs, and the report says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from onnx_sk.graph.convs import ConvSite
from onnx_sk.maths.designs import DEFAULT_BOTTLENECK_RATIO, DESIGNS, Realisation
from onnx_sk.errors import UserError
from onnx_sk.maths.select import OBJECTIVES, choose


@dataclass(frozen=True)
class Options:
    mode: str = "reduce"
    design: str | None = None
    objective: str = "params"
    seed: int = 0
    include_first: bool = False
    min_channels: int = 1
    exclude: tuple[str, ...] = ()
    bottleneck_ratio: float = DEFAULT_BOTTLENECK_RATIO
    init: str = "he"
    verify: bool = True
    input_shapes: dict = field(default_factory=dict)
    #: --objective latency only: where to measure, and the latency table (onnx_sk.runtime.latency)
    provider: str | None = None
    threads: int | None = None
    lut: str | None = None
    lut_foreign: bool = False
    #: --mode widen only (onnx_sk.passes.widen)
    budget: str = "conv"
    width_scale: float | None = None
    param_budget: int | None = None
    round_to: int = 1
    widen_init: str = "he"
    #: --init approx / --max-error (onnx_sk.maths.approx, onnx_sk.passes.error_budget, onnx_sk.fit_targets)
    calibration: str | None = None
    max_error: float | None = None
    #: insert identity BatchNormalization after each new stage (onnx_sk.passes.training_bn)
    for_training: bool = False

    def validate(self) -> None:
        from onnx_sk.maths.weight_init import INITIALISERS

        if self.mode not in ("reduce", "widen"):
            raise UserError(f"--mode {self.mode!r}: expected reduce or widen")
        from onnx_sk.passes.widen import validate_widen

        validate_widen(self)
        if self.design not in (None, "none", *DESIGNS):
            raise UserError(f"--design {self.design!r}: expected one of {', '.join(DESIGNS)}")
        if self.objective not in OBJECTIVES:
            raise UserError(f"--objective {self.objective!r}: expected one of {', '.join(OBJECTIVES)}")
        if not 0 < self.bottleneck_ratio <= 1:
            raise UserError(f"--bottleneck-ratio {self.bottleneck_ratio}: expected 0 < R <= 1")
        if self.min_channels < 1:
            raise UserError(f"--min-channels {self.min_channels}: expected a positive integer")
        from onnx_sk.passes.error_budget import validate_approx

        validate_approx(self)
        if self.init not in INITIALISERS:
            raise UserError(f"--init {self.init!r}: expected one of {', '.join(INITIALISERS)}")
        from onnx_sk.runtime.latency import validate_options

        validate_options(self)


@dataclass
class Decision:
    site: ConvSite
    real: Realisation | None
    reason: str | None = None
    note: str | None = None


def _policy_reason(site: ConvSite, options: Options) -> str | None:
    if site.reason:
        return site.reason
    spec = site.spec
    assert spec is not None
    if site.first and not options.include_first:
        return "first conv: kept by default (--include-first replaces it)"
    if site.name in options.exclude or site.node.output[0] in options.exclude:
        return "excluded by --exclude"
    if min(spec.c_in, spec.c_out) < options.min_channels:
        return f"fewer than --min-channels {options.min_channels} channels"
    return None


def decide(site: ConvSite, options: Options) -> Decision:
    reason = _policy_reason(site, options)
    if reason:
        return Decision(site, None, reason)
    assert site.spec is not None
    ratio = options.bottleneck_ratio
    if options.design:
        real, why = choose(site.spec, [options.design], options.objective, ratio)
        if real is not None:
            return Decision(site, real)
        others = [d for d in DESIGNS if d != options.design]
        real, _ = choose(site.spec, others, options.objective, ratio)
        if real is None:
            return Decision(site, None, why)
        return Decision(site, real, note=f"{options.design}: {why}; fell back to {real.design}")
    real, why = choose(site.spec, None, options.objective, ratio)
    return Decision(site, real, why)


def plan(sites: list[ConvSite], options: Options) -> list[Decision]:
    if options.objective == "latency":
        from onnx_sk.runtime.latency import plan_latency

        return plan_latency(sites, options)
    return [decide(s, options) for s in sites]
