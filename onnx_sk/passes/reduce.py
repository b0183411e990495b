"""ReducePass (Mode 1): every planned conv becomes its SK design, weights from the initialiser.

Weights are drawn conv by conv in graph order from one seeded generator, so the same model,
options and seed give a byte-identical output.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnx_sk.build import replace_conv
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


def _copy_model_fields(src: onnx.ModelProto, dst: onnx.ModelProto) -> None:
    dst.ir_version = src.ir_version
    dst.producer_name, dst.producer_version = src.producer_name, src.producer_version
    dst.domain, dst.model_version, dst.doc_string = src.domain, src.model_version, src.doc_string
    del dst.metadata_props[:]
    dst.metadata_props.extend(src.metadata_props)


def run_reduce(
    model: onnx.ModelProto, decisions: list[Decision], init: str, seed: int
) -> tuple[onnx.ModelProto, list[Replacement]]:
    """Apply the decisions; returns the new model and what was replaced."""
    todo = {d.site.node.output[0]: d for d in decisions if d.real is not None}
    if not todo:
        return model, []
    graph = gs.import_onnx(model)
    by_output = {n.outputs[0].name: n for n in graph.nodes if n.op == "Conv" and n.outputs}
    taken = {n.name for n in graph.nodes} | set(graph.tensors().keys())
    rng = np.random.default_rng(seed)
    fn = INITIALISERS[init]
    done = []
    for d in decisions:  # graph order
        if d.real is None:
            continue
        site = d.site
        weights = fn(d.real, site.weight, site.bias, rng)
        node = by_output[site.node.output[0]]
        x, y = node.inputs[0].name, node.outputs[0].name
        new = replace_conv(graph, node, d.real, weights, site.bias, taken)
        done.append(Replacement(site.name, x, y, d.real, weights, site.bias, new))
    graph.cleanup().toposort()
    out = gs.export_onnx(graph)
    _copy_model_fields(model, out)
    return out, done
