"""``--precision fp32|int8|auto``: which convs are written in int8 (QDQ form), and how that is
chosen. Changes nothing in the model (:mod:`onnx_sk.passes.quantize` writes the int8 form).

- ``fp32`` (default): nothing is quantized.
- ``int8``: every conv that can be (``graph.qdq.why_not_int8``: a main-graph 2-D conv with
  constant float32 weights) is int8, the SK replacements as well as the convs the policy keeps
  (the first conv, 1×1, depthwise). With ``--objective latency`` the SK-or-dense choice is
  made among the int8 candidates (dense int8 vs each SK realisation in int8, measured with their
  Q/DQ); with a counted objective the objective's choice is kept and quantized.
- ``auto`` (``--objective latency`` only): per conv, the fastest of dense fp32, dense int8, each
  SK realisation in fp32 and in int8, all timed in the same interleaved rounds on the target
  (:func:`onnx_sk.runtime.latency.measure_precisions`; the LUT holds an fp32 and an ``-int8``
  entry per shape); anything but the dense fp32 conv must be at least ``MIN_SPEEDUP`` faster.
  A conv the policy keeps (first conv, ``--exclude``, 1×1…) chooses between dense fp32 and
  dense int8 only.

With ``auto``, each conv also gets an alternative for a network that runs in int8
(``choose_in_int8``): its fastest int8 option. Timed between fp32 neighbours, an int8 option
pays a Q/DQ pair and layout transposes that it would not pay between int8 neighbours, so the
per-conv choice above rarely picks int8 for a cheap SK conv, and the designs it picks (grouped
stages, fast in fp32 NCHWc) are slow in int8; the alternative favours what runs fast in int8
(ungrouped pointwise and depthwise stages). Which plan the network runs faster is settled by
timing both (:mod:`onnx_sk.passes.plan_trial`).

With ``--max-error`` the int8 choices are checked again by the quantize pass: a conv whose int8
output error against its fp32 dense conv exceeds τ stays fp32.
"""

from __future__ import annotations

from dataclasses import dataclass

from onnx_sk.errors import UserError
from onnx_sk.graph.qdq import why_not_int8
from onnx_sk.options import OptimizeOptions
from onnx_sk.passes.context import Alternative, Decision
from onnx_sk.runtime.latency import MIN_SPEEDUP, realise

PRECISIONS = ("fp32", "int8", "auto")


def validate(options: OptimizeOptions) -> None:
    """--precision is one of PRECISIONS; auto needs --objective latency; int8 and auto work
    in --mode reduce, without --recover or --for-training (models to train stay fp32)."""
    p = options.latency.precision
    if p not in PRECISIONS:
        raise UserError(f"--precision {p!r}: expected one of {', '.join(PRECISIONS)}")
    if p == "fp32":
        return
    if p == "auto" and options.reduce.objective != "latency":
        raise UserError("--precision auto needs --objective latency (it measures fp32 vs int8)")
    if options.mode != "reduce":
        raise UserError(f"--precision {p} works with --mode reduce only")
    if options.recovery.recover is not None:
        raise UserError(f"--precision {p} does not combine with --recover (it trains fp32)")
    if options.fitting.for_training:
        raise UserError(f"--precision {p} does not combine with --for-training (train in fp32)")


def mark_all(decisions: list[Decision]) -> None:
    """--precision int8 with a counted objective: every conv that can be is int8."""
    for d in decisions:
        d.int8 = why_not_int8(d.site) is None


@dataclass(frozen=True)
class Option:
    """One measured way to run a conv: its speedup over the fp32 dense conv."""

    speedup: float
    label: str
    ms: float
    cand: dict | None  # the LUT candidate (an SK realisation), None for the dense conv
    int8: bool


def _options(
    fp32: dict, int8: dict, precision: str, sk: bool, designs: list[str] | None
) -> list[Option]:
    dense = int8["dense_int8"]
    opts = [Option(dense["speedup"], "dense int8", dense["ms"], None, True)]
    if precision == "auto":
        opts.append(Option(1.0, "dense fp32", fp32["dense_ms"], None, False))
    if not sk:
        return opts
    for entry, is_int8 in ((fp32, False), (int8, True)):
        if is_int8 or precision == "auto":
            for key, c in entry["candidates"].items():
                if designs is None or c["design"] in designs:
                    label = f"{key} {'int8' if is_int8 else 'fp32'}"
                    opts.append(Option(c["speedup"], label, c["ms"], c, is_int8))
    return opts


def choose(
    d: Decision,
    fp32: dict | None,
    int8: dict | None,
    precision: str,
    designs: list[str] | None,
    ratio: float,
) -> None:
    """Set ``d``'s realisation, precision and note from the measured entries (module
    docstring); ``d.reason`` None on entry means the policy lets an SK design replace it."""
    if why_not_int8(d.site) is not None:
        return
    if fp32 is None or int8 is None:  # not measured (input size unknown): int8 keeps dense int8
        d.int8 = precision == "int8"
        return
    sk = d.reason is None
    opts = _options(fp32, int8, precision, sk, designs)
    base = opts[1] if precision == "auto" else opts[0]  # dense fp32, or dense int8
    best = max(opts, key=lambda o: o.speedup)
    if best.speedup < MIN_SPEEDUP * base.speedup:
        best = base
    alt = _alternative(d, best, fp32, ratio, d.reason)
    d.note, d.int8 = alt.note, alt.int8
    if sk:
        d.real, d.reason = alt.real, alt.reason


def _alternative(
    d: Decision, best: Option, fp32: dict, ratio: float, policy: str | None
) -> Alternative:
    """``best`` as a decision for ``d``'s conv; ``policy``: why the policy keeps it (None: an
    SK design may replace it)."""
    sk = policy is None
    spec = d.site.spec
    assert spec is not None
    real = realise(spec, best.cand, ratio) if best.cand is not None else None
    provider, threads = fp32["provider"], fp32["threads"]
    where = f"{provider}, {threads} thread{'s' if threads > 1 else ''}"
    note = (
        f"latency on {where}: {best.ms:.3g} ms vs dense fp32 {fp32['dense_ms']:.3g} ms "
        f"({best.speedup:.2f}×, {best.label})"
    )
    reason = policy
    if sk and real is None:
        reason = f"no SK design is faster than the dense conv ({best.label}) on {provider}"
    return Alternative(real if sk else None, best.int8, reason, note)


def choose_in_int8(
    d: Decision,
    fp32: dict | None,
    int8: dict | None,
    designs: list[str] | None,
    ratio: float,
    policy: str | None,
) -> None:
    """``--precision auto``: set ``d.alt``, the conv's plan for a network in int8 (module
    docstring): its fastest int8 option, unless the dense int8 conv is within ``MIN_SPEEDUP``
    of it. (Every int8 option was timed with the same Q/DQ and layout transposes at its
    borders, so their order is the order between int8 neighbours, where those are gone.) A
    network's first conv (no conv before it) keeps its plan: it reads the float input, so it
    pays the input's Q in int8 as it did when timed, and its fastest option stands (measured:
    ResNet-18's 7×7 stem on 3 channels, 0.55 ms in fp32 SK, 1.38 ms dense in int8)."""
    if why_not_int8(d.site) is not None or fp32 is None or int8 is None or d.site.first:
        return
    opts = [o for o in _options(fp32, int8, "int8", policy is None, designs) if o.int8]
    base = opts[0]  # dense int8
    best = max(opts, key=lambda o: o.speedup)
    if best.speedup < MIN_SPEEDUP * base.speedup:
        best = base
    d.alt = _alternative(d, best, fp32, ratio, policy)
