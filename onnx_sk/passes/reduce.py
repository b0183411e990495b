"""ReducePass (Mode 1): every planned conv becomes its SK design, weights from the initialiser.

Weights are drawn conv by conv in graph order from one seeded generator, so the same model,
options and seed give a byte-identical output. Each replacement records the relative error of
its dense-equivalent kernel against the original (``approx.relative_errors``: in weight space,
BN-scaled when a BN follows, and on the calibration patches when the target has them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from onnx_sk.maths.approx import Target, relative_errors
from onnx_sk.runtime.blas import single_blas_thread
from onnx_sk.graph.build import graph_names, replace_conv
from onnx_sk.maths.designs import Realisation, dense_equivalent
from onnx_sk.passes.plan import Decision
from onnx_sk.maths.weight_init import INITIALISERS


@dataclass
class Replacement:
    """A conv that was replaced: what went in, with the stage weights written."""

    name: str
    input: str
    output: str
    real: Realisation
    weights: list[np.ndarray]
    bias: np.ndarray | None
    new_nodes: list[str]
    init_error: float | None = None
    init_output_error: float | None = None


def prepare(
    decisions: list[Decision], init: str, seed: int, targets: dict[str, Target] | None = None
) -> list[Replacement]:
    """Stage weights for every planned conv, drawn in graph order from one seeded generator.

    ``targets`` (conv output name → :class:`~onnx_sk.maths.approx.Target`: BN scale, calibration
    patches) goes to the initialiser and to the recorded errors.
    """
    with single_blas_thread():
        return _prepare(decisions, init, seed, targets or {})


def _prepare(decisions: list[Decision], init: str, seed: int, targets: dict[str, Target]) -> list[Replacement]:
    rng = np.random.default_rng(seed)
    fn = INITIALISERS[init]
    done = []
    for d in decisions:
        if d.real is None:
            continue
        site = d.site
        node = site.node
        target = targets.get(node.output[0])
        weights = fn(d.real, site.weight, site.bias, rng, target)
        errors = relative_errors(site.weight, dense_equivalent(d.real.stages, weights), target)
        done.append(
            Replacement(
                site.name, node.input[0], node.output[0], d.real, weights, site.bias, [], *errors
            )
        )
    return done


def apply(model: onnx.ModelProto, replacements: list[Replacement]) -> None:
    """Write the replacements into ``model``'s main graph, in place."""
    graph = model.graph
    taken = graph_names(graph)
    for r in replacements:
        r.new_nodes = replace_conv(graph, r.output, r.real, r.weights, r.real.shuffle_impl, taken)


def run_reduce(
    model: onnx.ModelProto,
    decisions: list[Decision],
    init: str,
    seed: int,
    targets: dict[str, Target] | None = None,
) -> tuple[onnx.ModelProto, list[Replacement]]:
    """Apply the decisions to a copy of ``model``; returns the new model and what was replaced."""
    replacements = prepare(decisions, init, seed, targets)
    if not replacements:
        return model, []
    out = onnx.ModelProto()
    out.CopyFrom(model)
    apply(out, replacements)
    return out, replacements
