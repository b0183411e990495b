"""PlanPass: every conv of the model and the decision for it (the objective's choice or the
reason it is kept). Changes nothing in the model.

Shapes come from ONNX shape inference with the ``--input-shape`` overrides; the decisions from
:func:`onnx_sk.passes.objectives.plan` (policy, then the objective).
"""

from __future__ import annotations

import onnx

from onnx_sk.graph.convs import find_convs
from onnx_sk.graph.shapes import infer_shapes
from onnx_sk.passes import objectives
from onnx_sk.passes.base import PassResult
from onnx_sk.passes.context import PassContext


class PlanPass:
    name = "plan"

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        shapes = infer_shapes(model, ctx.input_shapes)
        ctx.sites = find_convs(model, shapes)
        ctx.decisions = objectives.plan(
            ctx.sites, ctx.options, ctx.step if ctx.progress is not None else None
        )
        return PassResult(model, modified=False)
