"""``--precision auto`` in context: the per-conv precisions revised by timing the whole network.

The plan chose each conv's precision from one-conv measurements, which cannot see what a choice
costs its neighbours: the Q/DQ pair and the NCHW/NHWC transposes at every fp32/int8 boundary, or
a kernel that changes with its input's precision. (Measured: ResNet-50 with its 1×1 convs in int8
and its stem in fp32 runs the ``MaxPool`` between them as ONNX Runtime's uint8 NCHW pooling,
2.8 ms, a quarter of the network; with the stem in int8 too it becomes its NHWC pooling, 0.05
ms, and the network 1.40-1.42× faster, although the stem alone is no faster in int8.)

So after the plan, the quantize pass revises the precisions greedily on the target provider and
thread count (``--lut-from-target`` measures nothing, so it skips this):

0. first, every conv that can be int8 in int8 at once (no boundary left: what ONNX Runtime's
   own int8 does to the convs) against the plan's mix; the faster stays (measured: MobileNetV2,
   whose per-conv mix of 33 int8 convs ran 1.26× against ORT int8's 1.80×);
1. candidates: every unit that could be int8 and has a neighbour of the other precision
   (:func:`onnx_sk.graph.neighbours.conv_neighbours`; an int8 unit that reads a graph input or
   writes a graph output counts that edge as one: ``edge_units``), most such neighbours first,
   then in graph order. A unit is a dense conv, or one stage of an SK realisation (with the
   shuffle after it): the boundary may fall inside a replaced conv (measured: ResNet-18 with
   its stem replaced, pw → 7×7 dw → pw, runs the stem's first two stages 2.0× and 3.3× slower
   in int8 (3 input channels; a 7×7 depthwise kernel) but needs its last stage in int8, or the
   MaxPool after it runs as ONNX Runtime's uint8 NCHW pooling, 3.8 ms of a 1.5 ms network);
2. each candidate's precision is flipped, the network written in QDQ form both ways and timed
   against the current one (:class:`onnx_sk.runtime.paired.PairedTimer`, paired medians); the
   flip stays if the network is at least ``ACCEPT`` faster (machine noise stays below it) and,
   for a flip to int8, its outputs still pass the quantize pass's tolerance (cosine with the
   fp32 model's on the timing sample);
3. a flip can make new boundaries: they join the candidates; each conv is tried once, at most
   ``MAX_TRIALS`` trials in all. With ``--max-error`` a conv goes to int8 only within τ.

Each trial is reported (``precision.context``): the conv, the precision tried, the measured
network speedup, and whether it stayed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import onnx

from onnx_sk.graph.neighbours import conv_neighbours, edge_units
from onnx_sk.graph.qdq import insert_qdq, with_int8_joins
from onnx_sk.runtime.paired import PairedTimer

ACCEPT = 1.03
MAX_TRIALS = 24
#: the trial of every conv that can be in int8 at once
ALL = "(every conv)"


def stage_units(
    graph: onnx.GraphProto, units: dict[str, list[str]]
) -> tuple[dict[str, list[str]], dict[str, str]]:
    """(unit → its nodes' first outputs, unit → its conv): each conv of ``units`` (conv output →
    its nodes' first outputs, in graph order) split at its Conv nodes, a data-movement node
    (shuffle) going with the stage before it; a unit is named by its Conv node's output (a dense
    conv's, and an SK realisation's last stage's, is the conv's own output)."""
    op = {n.output[0]: n.op_type for n in graph.node if n.output}
    out: dict[str, list[str]] = {}
    conv_of: dict[str, str] = {}
    for conv, outs in units.items():
        unit: str | None = None
        for t in outs:
            if op.get(t) == "Conv" or unit is None:
                unit = t
                out[unit], conv_of[unit] = [], conv
            out[unit].append(t)
    return out, conv_of


def with_qdq(
    model: onnx.ModelProto,
    units: dict[str, list[str]],
    int8: set[str],
    ranges: dict[str, tuple[float, float]],
) -> onnx.ModelProto:
    """A copy of ``model`` with the units ``int8`` (and the Adds between them) in QDQ form."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes = [t for conv in units if conv in int8 for t in units[conv]]
    insert_qdq(out.graph, with_int8_joins(out.graph, nodes), ranges)
    return out


def revise(
    model: onnx.ModelProto,
    units: dict[str, list[str]],
    int8: set[str],
    ranges: dict[str, tuple[float, float]],
    timer: PairedTimer,
    names: dict[str, str],
    allowed: Callable[[str], bool] = lambda conv: True,
    step: Callable[[float, str], None] | None = None,
    faithful: Callable[[Any], bool] = lambda sess: True,
    max_trials: int = MAX_TRIALS,
    every_first: bool = True,
) -> tuple[set[str], list[dict[str, Any]]]:
    """(the revised int8 units, the trials) (module docstring); ``units``: every conv that can
    be int8 → its nodes' first outputs; ``names``: conv output → conv name (for the report);
    ``faithful(session)``: whether a faster variant's outputs are close enough to keep it (the
    quantize pass's tolerance); ``max_trials``, ``every_first``: at most this many trials,
    and whether the first is step 0 (every unit in int8 at once)."""
    near = conv_neighbours(model.graph, units)
    edge = edge_units(model.graph, units)
    position = {o: k for k, n in enumerate(model.graph.node) for o in n.output}
    order = {conv: position.get(conv, len(position)) for conv in units}
    current = timer.open(with_qdq(model, units, int8, ranges), "the int8 model")
    tried: set[str] = set()
    trials: list[dict[str, Any]] = []
    verdicts: dict[str, bool] = {}

    def may(conv: str) -> bool:  # allowed(), asked once per conv
        if conv not in verdicts:
            verdicts[conv] = allowed(conv)
        return verdicts[conv]

    every = int8 | {c for c in units if c not in int8 and may(c)}
    # the whole network in int8 (no boundary left), against the mix
    if every_first and every - int8:
        candidate = timer.open(with_qdq(model, units, every, ranges), "the int8 model")
        speedup = timer.speedup(current, candidate)
        keep = speedup >= ACCEPT and faithful(candidate)
        trials.append({"conv": ALL, "to": "int8", "speedup": round(speedup, 4), "kept": keep})
        if keep:
            int8, current = set(every), candidate
    while len(trials) < max_trials:
        mixed = {
            conv: sum((n in int8) != (conv in int8) for n in near[conv])
            + (conv in edge and conv in int8)
            for conv in units
            if conv not in tried
        }
        todo = sorted((c for c, k in mixed.items() if k), key=lambda c: (-mixed[c], order[c]))
        if not todo:
            break
        conv = todo[0]
        tried.add(conv)
        to = "fp32" if conv in int8 else "int8"
        trial: dict[str, Any] = {"conv": names.get(conv, conv), "to": to}
        trials.append(trial)
        if step is not None:
            step(len(trials) / max_trials, f"in context: {trial['conv']} in {to}")
        if to == "int8" and not may(conv):
            trial.update(speedup=None, kept=False, why="over --max-error")
            continue
        flipped = int8 ^ {conv}
        candidate = timer.open(with_qdq(model, units, flipped, ranges), "the int8 model")
        speedup = timer.speedup(current, candidate)
        keep = speedup >= ACCEPT and (to == "fp32" or faithful(candidate))
        trial.update(speedup=round(speedup, 4), kept=keep)
        if keep:
            int8, current = flipped, candidate
    return int8, trials
