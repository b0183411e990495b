"""FidelityPass: how close the optimized model's outputs are to the *original* model's.

Verification (:mod:`onnx_sk.passes.verify`) proves the rewrite is the structure it claims (the
outputs equal the dense twin's, the model with the SK designs' dense-equivalent kernels); it says
nothing about how far those kernels are from the original ones. This pass measures that: the
original (its file, or the caller's ``ModelProto``) and the optimized model run in ONNX Runtime
(CPU, optimisations disabled) on the same inputs, and per output the cosine of the flattened
outputs and the max and mean absolute difference are reported
(the file the verify pass checked when there is one). The inputs are ``--inputs FILE.npz``, else the
seeded random input of verification (the dense twin's feeds when there are any; symbolic spatial
dims 64, then 224).

Fills the report's ``fidelity`` = {``reference``: "original", ``inputs``, ``outputs``: [{``name``,
``cosine``, ``max_abs_diff``, ``mean_abs_diff``, and for an integer or bool output
``equal_fraction``}]} (null where an output is not finite on
these inputs) and ``next_step``. Skipped with ``--no-verify``
and when no pass changed the model. With ``--recover`` it runs again after the recover pass,
on the recovered model (the verify pass's outputs, of the weights before, are not reused).
Changes nothing in the model; never fails a run on a low
fidelity (that is the user's call), only on inputs the models cannot run.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import onnx

from onnx_sk.errors import UserError
from onnx_sk.graph.checks import first_line
from onnx_sk.graph.shapes import light_copy
from onnx_sk.passes.base import PassResult
from onnx_sk.passes.context import PassContext
from onnx_sk.report import next_step
from onnx_sk.runtime.compare import OutputComparison, compare_outputs, compare_runs, file_feeds
from onnx_sk.runtime.feeds import random_inputs
from onnx_sk.runtime.verify import SPATIAL_TRIES, SessionError, run


class FidelityPass:
    name = "fidelity"

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        o = ctx.options
        if not o.verify or not ctx.modified:
            return PassResult(model, modified=False)
        original: Any = ctx.source.path if ctx.source.path is not None else ctx.original
        assert original is not None
        graph = light_copy(model)  # the inputs are the original's (no pass changes them)
        if o.inputs is not None:
            result = ctx.staged if ctx.staged is not None else model
            feeds = file_feeds(o.inputs, graph)
            try:
                rows = compare_runs(original, result, feeds, top1=False, threads=0)
            except UserError as exc:  # the file's own defects already name it
                named = str(exc).startswith("--inputs ")
                raise UserError(str(exc) if named else f"--inputs {o.inputs}: {exc}") from None
            inputs: dict[str, Any] = {"file": o.inputs, "seed": None}
        else:
            rows, shapes = _seeded(original, model, graph, ctx)
            inputs = {"file": None, "seed": o.seed, "shapes": shapes}
        ctx.report.fidelity = {
            "reference": "original",
            "inputs": inputs,
            "outputs": [
                {
                    "name": r.name,
                    "cosine": _finite(r.cosine),
                    "max_abs_diff": _finite(r.max_abs_diff),
                    "mean_abs_diff": _finite(r.mean_abs_diff),
                    **({} if r.equal_fraction is None else {"equal_fraction": r.equal_fraction}),
                }
                for r in rows
            ],
        }
        recovered = ctx.report.recovery is not None
        ctx.report.next_step = next_step(ctx.report.fidelity, ctx.report.output, recovered)
        return PassResult(model, modified=False)


def _finite(value: float) -> float | None:
    """A measure, or None where the outputs are not finite (NaN or Inf on this input)."""
    return value if math.isfinite(value) else None


def _seeded(
    original: Any, model: onnx.ModelProto, graph: onnx.ModelProto, ctx: PassContext
) -> tuple[list[OutputComparison], dict[str, list[int]]]:
    """The comparison on verification's seeded input: the dense twin's feeds when there are
    any, else drawn at spatial 64, then 224 (the first the original runs on). One model runs at
    a time (one-shot sessions), so the peak holds one session beside the model, not two; on the
    feeds verify used the optimized model's outputs are those it computed, and where the widen
    pass ran the original before changing it, those outputs are the original's."""
    error: Exception | None = None
    for feeds in _tries(graph, ctx):
        known = ctx.original_outputs
        try:
            if known is not None and known.feeds is feeds:  # the widen pass ran the original
                names, want = known.names, known.values
            else:
                names, want = run(original, feeds)
        except SessionError as exc:
            raise UserError(
                f"fidelity check: ONNX Runtime cannot run the original model: {exc}"
            ) from None
        except Exception as exc:  # too small an input for this network: try the next
            error = exc
            continue
        checked = ctx.checked
        try:
            if checked is not None and checked.feeds is feeds:  # verify ran it on these
                got_names, got = checked.names, checked.values
            else:
                got_names, got = run(ctx.staged if ctx.staged is not None else model, feeds)
        except Exception as exc:
            raise UserError(
                f"fidelity check: the optimized model does not run in ONNX Runtime: "
                f"{first_line(exc)}"
            ) from None
        if got_names != names:
            raise UserError(f"fidelity check: the outputs changed: {names} → {got_names}")
        rows = compare_outputs(names, want, got)
        return rows, {k: list(v.shape) for k, v in feeds.items()}
    assert error is not None
    raise UserError(
        f"fidelity check: the original model does not run in ONNX Runtime on random input: "
        f"{first_line(error)} (give --input-shape)"
    )


def _tries(graph: onnx.ModelProto, ctx: PassContext) -> Iterator[dict[str, np.ndarray]]:
    for known in (ctx.original_outputs, ctx.twin):
        if known is not None:
            yield known.feeds
            return
    for spatial in SPATIAL_TRIES:
        rng = np.random.default_rng(ctx.options.seed)
        yield random_inputs(graph, rng, ctx.input_shapes or None, spatial)
