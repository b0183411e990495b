"""WidenPass (Mode 2, "widen"; T-ITS'21 Sec. V-B, Algorithm 2): spend what the SK designs save
on width, with one scale factor ``s`` applied to every free channel space.

Two ways, chosen by ``--widen-init`` (``pipeline.py`` runs this pass in the right place):

- ``he`` (default; the papers retrain from scratch): the *original* model's channel spaces are
  scaled by ``s`` (new weight entries He-normal), and Mode 1 is planned on the widened convs, so
  every SK design's group numbers are chosen afresh for the new widths (Theorem 1: M·N = the
  middle width). ``s`` is solved on the exact count that this gives (``_Counter`` runs the
  counted objective on every widened conv). The widened *dense* kernel of a conv Mode 1 replaces
  is never drawn (at s ≈ 5 the widened dense model holds ~30× the parameters): this pass leaves
  the plan (``ctx.decisions``, widened specs) and those convs reading their old kernels, and the
  init-weights and reduce passes that follow draw the SK stages fresh and write them in.
- ``preserve``: Mode 1 runs first, then the *reduced* model is widened with its group numbers
  kept: original channels keep their weights, new channels get He-normal incoming and zero
  outgoing weights, so the widened model computes exactly what the reduced one does (the verify
  pass checks it in ONNX Runtime). ``s ≥ 1``.

``--design none`` skips Mode 1 (widening alone, for models whose convs are already sparse).
The budget is the original model's conv parameters (``--budget conv``) or all float parameters
(``--budget all``), or ``--param-budget N``; ``--width-scale S`` gives ``s`` directly. The
channel analysis and the rewrite are :mod:`onnx_sk.width`. ``validate`` checks the widen group.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import onnx

from onnx_sk.errors import UserError
from onnx_sk.graph.convs import ConvSite, find_convs
from onnx_sk.graph.index import ConstantIndex
from onnx_sk.graph.shape_arith import infer_folded
from onnx_sk.maths.spec import ConvSpec
from onnx_sk.options import OptimizeOptions
from onnx_sk.passes import objectives
from onnx_sk.passes.base import PassResult
from onnx_sk.passes.context import PassContext
from onnx_sk.passes.plan import static_spatial
from onnx_sk.runtime.session import release_memory
from onnx_sk.runtime.verify import reference_outputs
from onnx_sk.width.analysis import (
    BUDGETS,
    MAX_SCALE,
    ChannelAnalysis,
    Solution,
    Widths,
    analyze_channels,
    solve_scale,
)
from onnx_sk.width.rewrite import run_widen

WIDEN_INITS = ("he", "preserve")
MAX_ROUND_TO = 1024


def validate(options: OptimizeOptions) -> None:
    """Bad widen options → one clear message."""
    w, design = options.widen, options.reduce.design
    given = [
        name for name, v, default in (
            ("--width-scale", w.width_scale, None), ("--param-budget", w.param_budget, None),
            ("--budget", w.budget, "conv"), ("--round-to", w.round_to, 1),
            ("--widen-init", w.widen_init, "he"),
        ) if v != default
    ]  # fmt: skip
    if options.mode != "widen":
        if given:
            raise UserError(f"{given[0]} needs --mode widen")
        if design == "none":
            raise UserError("--design none needs --mode widen (widening alone)")
        return
    if w.budget not in BUDGETS:
        raise UserError(f"--budget {w.budget!r}: expected one of {', '.join(BUDGETS)}")
    if w.widen_init not in WIDEN_INITS:
        raise UserError(f"--widen-init {w.widen_init!r}: expected one of {', '.join(WIDEN_INITS)}")
    if w.width_scale is not None and w.param_budget is not None:
        raise UserError("give --width-scale or --param-budget, not both")
    s = w.width_scale
    if s is not None and not (math.isfinite(s) and 0 < s <= MAX_SCALE):
        raise UserError(f"--width-scale {s}: expected 0 < S <= {MAX_SCALE:g}")
    if s is not None and s < 1 and w.widen_init == "preserve":
        raise UserError(f"--width-scale {s}: --widen-init preserve cannot narrow (expected S >= 1)")
    if w.param_budget is not None and w.param_budget <= 0:
        raise UserError(
            f"--param-budget {w.param_budget}: expected a positive number of parameters"
        )
    if not 1 <= w.round_to <= MAX_ROUND_TO:
        raise UserError(f"--round-to {w.round_to}: expected 1 <= N <= {MAX_ROUND_TO}")
    if options.reduce.objective == "latency" and w.widen_init == "he" and design != "none":
        raise UserError(
            "--objective latency needs --widen-init preserve in --mode widen "
            "(he mode re-chooses every design by counting, for widths not measured)"
        )
    if w.widen_init == "he" and design != "none" and options.fitting.init != "he":
        raise UserError(
            f"--init {options.fitting.init} needs --widen-init preserve in --mode widen (he mode "
            "draws every widened conv's weights fresh: there is no kernel to fit)"
        )
    if design == "none" and s is None and w.param_budget is None:
        raise UserError(
            "--design none keeps the parameter budget at s = 1: give --width-scale or --param-budget"
        )


class _Counter:
    """Parameters after widening by ``s`` (and, in he mode, after Mode 1 on the widened model)."""

    def __init__(
        self,
        analysis: ChannelAnalysis,
        options: OptimizeOptions,
        sites: list[ConvSite],
        reduce_after: bool,
    ) -> None:
        self.a, self.o, self.reduce_after = analysis, options, reduce_after
        self.all_sites = sites
        self.preserve = options.widen.widen_init == "preserve"
        by_out = {s.node.output[0]: s for s in sites}
        graph = analysis.model.graph
        self.sites = {
            i: by_out.get(n.output[0]) for i, n in enumerate(graph.node) if n.op_type == "Conv"
        }
        self.chan = {c.node: c for c in analysis.walk.convs}
        self._cache: dict[tuple[ConvSpec, str | None], int | None] = {}
        self._per_conv: dict[tuple[int, int, int], int | None] = {}

    def widths(self, s: float) -> Widths:
        return self.a.widths(s, self.o.widen.round_to, at_least_old=self.preserve)

    def widened(self, i: int, widths: Widths) -> ConvSite | None:
        """Conv node ``i``'s site with its spec at ``widths`` and no weights (None: not a
        widened site)."""
        site, ch = self.sites.get(i), self.chan.get(i)
        if site is None or site.spec is None or ch is None:
            return None
        c_in, c_out = self.a.width(widths, ch.in_atoms), self.a.width(widths, ch.out_atoms)
        group = c_in if ch.depthwise else ch.group
        spec = dataclasses.replace(site.spec, c_in=c_in, c_out=c_out, group=group)
        # no constants: the old kernel is not this conv's at the new widths (and its numpy copy,
        # cached by the original's index, is let go with the analysis)
        return dataclasses.replace(site, spec=spec, consts=ConstantIndex())

    def _replaced_params(self, i: int, widths: Widths) -> int | None:
        """Parameters of conv ``i``'s SK design at ``widths`` (None: kept), memoised per conv
        and widths, then per shape and policy (convs of one shape and policy share a choice)."""
        ch = self.chan.get(i)
        if ch is None:
            return None
        mine = (i, self.a.width(widths, ch.in_atoms), self.a.width(widths, ch.out_atoms))
        if mine not in self._per_conv:
            site = self.widened(i, widths)
            params = None
            if site is not None:
                assert site.spec is not None
                # the name is no part of the choice; the policy (first conv, --exclude) is
                key = (
                    dataclasses.replace(site.spec, name=""),
                    objectives.policy_reason(site, self.o),
                )
                if key not in self._cache:
                    real = objectives.decide(site, self.o).real
                    self._cache[key] = None if real is None else real.params
                params = self._cache[key]
            self._per_conv[mine] = params
        return self._per_conv[mine]

    def widened_sites(self, widths: Widths) -> list[ConvSite]:
        """Every conv's site (subgraphs' too, kept as they are) with the main graph's widened to
        ``widths``: what the plan pass would find on the widened model."""
        index = {site.node.output[0]: i for i, site in self.sites.items() if site is not None}
        out = []
        for site in self.all_sites:
            i = index.get(site.node.output[0]) if not site.scope else None
            w = self.widened(i, widths) if i is not None else None
            out.append(w if w is not None else site)
        return out

    def __call__(self, s: float) -> int:
        widths = self.widths(s)
        dense = self.a.conv_params(widths)
        conv, delta = 0, 0
        for i, p in dense.items():
            params = self._replaced_params(i, widths) if self.reduce_after else None
            if params is not None:
                delta += params - p
                p = params
            conv += p
        return conv if self.o.widen.budget == "conv" else self.a.float_params(widths) + delta


def _layers(a: ChannelAnalysis, widths: Widths) -> list[dict[str, Any]]:
    old = {r: sp.size for r, sp in a.spaces.items()}
    rows = []
    for c in a.walk.convs:
        rows.append({
            "name": c.name,
            "c_in": a.width(old, c.in_atoms), "c_out": a.width(old, c.out_atoms),
            "c_in_after": a.width(widths, c.in_atoms), "c_out_after": a.width(widths, c.out_atoms),
        })  # fmt: skip
    return rows


def _frozen_summary(a: ChannelAnalysis) -> str:
    reasons = list(dict.fromkeys(r for sp in a.spaces.values() for r in sp.frozen))
    more = f", and {len(reasons) - 3} more" if len(reasons) > 3 else ""
    return "; ".join(reasons[:3]) + more


def _solve(count: _Counter, options: OptimizeOptions, target: int, lo: float) -> Solution:
    s = options.widen.width_scale
    return Solution(s, count(s), target) if s is not None else solve_scale(count, target, lo)


class WidenPass:
    """Widen the model it is given in place (the original in he mode, the reduced one in
    preserve mode), after running it for the verify pass's reference (``ctx.reference``); the
    parameter target is counted on the original (``ctx.before``)."""

    name = "widen"

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        o = ctx.options
        preserve = o.widen.widen_init == "preserve"
        w = o.widen
        target = w.param_budget
        if target is None:
            target = ctx.before.conv_params if w.budget == "conv" else ctx.before.params
        if o.verify:  # the reference outputs first, while little else is in memory (from the
            # input file when the model is still that file: no serialised copy for ONNX Runtime)
            path = ctx.source.path if not ctx.modified else None
            ctx.reference = reference_outputs(model, o.seed, ctx.input_shapes or None, path=path)
            if not ctx.modified:  # still the original: its outputs are the fidelity reference
                ctx.original_outputs = ctx.reference
        shapes = infer_folded(model, ctx.input_shapes)
        analysis = analyze_channels(model, shapes)
        if not analysis.free:
            raise UserError(
                "nothing could be widened: every channel space is frozen "
                f"({_frozen_summary(analysis)})"
            )
        reduce_after = o.reduce.design != "none" and not preserve
        count = _Counter(analysis, o, find_convs(model, shapes), reduce_after)
        sol = _solve(count, o, target, 1.0 if preserve else 1.0 / MAX_SCALE)
        widths = count.widths(sol.scale)
        fresh: set[tuple[int, int]] = set()
        if reduce_after:  # he: plan Mode 1 on the widened convs; their kernels are never drawn
            ctx.sites = count.widened_sites(widths)
            ctx.static_spatial = static_spatial(model, ctx.sites)
            ctx.decisions = objectives.plan(ctx.sites, o, ctx.progress)
            ctx.fresh_weights = True
            node_of = {
                n.output[0]: i for i, n in enumerate(model.graph.node) if n.op_type == "Conv"
            }
            fresh = {(node_of[d.site.node.output[0]], 1) for d in ctx.decisions if d.real}
        rng = np.random.default_rng(o.seed)
        widened = run_widen(model, analysis, widths, preserve, rng, skip=fresh, copy=False)
        ctx.widen = {
            "scale": sol.scale,
            "target": target,
            "spaces_free": len(analysis.free),
            "spaces_frozen": len(analysis.spaces) - len(analysis.free),
            "frozen_by": [{"op": op, "reason": why} for op, why in analysis.walk.frozen_by],
            "layers": _layers(analysis, widths),
        }
        del analysis, count, shapes  # their numpy copies of the old weights
        release_memory()
        return PassResult(widened, modified=True)
