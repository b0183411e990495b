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

With ``--max-error`` the int8 choices are checked again by the quantize pass: a conv whose int8
output error against its fp32 dense conv exceeds τ stays fp32.
"""

from __future__ import annotations

from dataclasses import dataclass

from onnx_sk.errors import UserError
from onnx_sk.graph.qdq import why_not_int8
from onnx_sk.options import OptimizeOptions
from onnx_sk.passes.context import Decision
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
    spec = d.site.spec
    assert spec is not None
    sk = d.reason is None
    opts = _options(fp32, int8, precision, sk, designs)
    base = opts[1] if precision == "auto" else opts[0]  # dense fp32, or dense int8
    best = max(opts, key=lambda o: o.speedup)
    if best.speedup < MIN_SPEEDUP * base.speedup:
        best = base
    real = realise(spec, best.cand, ratio) if best.cand is not None else None
    provider, threads = fp32["provider"], fp32["threads"]
    where = f"{provider}, {threads} thread{'s' if threads > 1 else ''}"
    d.note = (
        f"latency on {where}: {best.ms:.3g} ms vs dense fp32 {fp32['dense_ms']:.3g} ms "
        f"({best.speedup:.2f}×, {best.label})"
    )
    d.int8 = best.int8
    if sk:
        d.real = real
        if real is None:
            d.reason = f"no SK design is faster than the dense conv ({best.label}) on {provider}"
