"""ReducePass (Mode 1): write every planned replacement into the model, in place.

The graph edit is :func:`onnx_sk.graph.build.apply_replacements` (the only writer of SK nodes):
each dense conv becomes its design's stages at its own position, the last stage writing the
original output tensor, so consumers and graph outputs never move.
"""

from __future__ import annotations

import onnx

from onnx_sk.graph.build import apply_replacements
from onnx_sk.passes.base import PassResult
from onnx_sk.passes.context import PassContext


class ReducePass:
    name = "reduce"

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        apply_replacements(model.graph, ctx.replacements)
        return PassResult(model, modified=bool(ctx.replacements))
