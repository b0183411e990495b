"""ReducePass (Mode 1): every planned conv becomes its SK design, weights from the initialiser.

Weights are drawn conv by conv in graph order from one seeded generator, so the same model,
options and seed give a byte-identical output.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from onnx_sk.build import graph_names, replace_conv
from onnx_sk.designs import Realisation
from onnx_sk.plan import Decision
from onnx_sk.weight_init import INITIALISERS


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


def prepare(decisions: list[Decision], init: str, seed: int) -> list[Replacement]:
    """Stage weights for every planned conv, drawn in graph order from one seeded generator."""
    rng = np.random.default_rng(seed)
    fn = INITIALISERS[init]
    done = []
    for d in decisions:
        if d.real is None:
            continue
        site = d.site
        weights = fn(d.real, site.weight, site.bias, rng)
        node = site.node
        done.append(Replacement(site.name, node.input[0], node.output[0], d.real, weights, site.bias, []))
    return done


def apply(model: onnx.ModelProto, replacements: list[Replacement]) -> None:
    """Write the replacements into ``model``'s main graph, in place."""
    graph = model.graph
    taken = graph_names(graph)
    for r in replacements:
        r.new_nodes = replace_conv(graph, r.output, r.real, r.weights, r.real.shuffle_impl, taken)


def run_reduce(
    model: onnx.ModelProto, decisions: list[Decision], init: str, seed: int
) -> tuple[onnx.ModelProto, list[Replacement]]:
    """Apply the decisions to a copy of ``model``; returns the new model and what was replaced."""
    replacements = prepare(decisions, init, seed)
    if not replacements:
        return model, []
    out = onnx.ModelProto()
    out.CopyFrom(model)
    apply(out, replacements)
    return out, replacements
