"""VerifyPass: the optimized model is checked before it is written; a failure writes nothing.

1. the full ONNX checker, on the staged output file when there is one (so the model is not
   serialised again), else on the model;
2. with replacements and their dense twin (:class:`~onnx_sk.passes.twin.DenseTwinPass`): the
   information field of every inserted subgraph equals the dense conv's
   (:func:`onnx_sk.graph.checks.check_fields`), and the outputs equal the twin's up to float32
   rounding (:func:`onnx_sk.runtime.verify.check_outputs`);
3. against the model before widening (``reference``): ``"original"`` (widen, he) the output
   signature is unchanged (names, order, dtypes, shapes); ``"preserved"`` (widen, preserve) the
   outputs are the same values too.

Skipped with ``--no-verify``; in Mode 1 also when nothing was replaced (the model is written
unchanged). Fills the report's ``verification``. Changes nothing in the model.
"""

from __future__ import annotations

from typing import Any, Literal

import onnx

from onnx_sk.graph.checks import check, check_fields, check_file
from onnx_sk.passes.base import PassResult
from onnx_sk.passes.context import PassContext
from onnx_sk.runtime.verify import (
    Outputs,
    check_outputs,
    reference_outputs,
    result_outputs,
    same_signature,
)

Reference = Literal["twin", "original", "preserved"]


class VerifyPass:
    name = "verify"

    def __init__(self, reference: Reference = "twin") -> None:
        self.reference = reference

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        twin = ctx.twin
        replaced = ctx.replacements if twin is not None else []
        if not ctx.options.verify or (self.reference == "twin" and not replaced):
            return PassResult(model, modified=False)
        path = ctx.output.stage(model) if ctx.output is not None else None
        ctx.staged = path
        if path is not None:
            check_file(path)
        else:
            check(model)
        doc: dict[str, Any] = {"checker": True, "fields_checked": 0}
        if twin is not None and replaced:
            fields = check_fields(model, replaced)
            names, got = result_outputs(model, twin.feeds, path=path)
            ctx.checked = Outputs(twin.feeds, names, got)
            agree = check_outputs(twin.names, twin.values, names, got)
            doc = {
                "checker": True,
                "fields_checked": fields,
                "input_shapes": twin.input_shapes,
                "max_abs_diff": agree.max_abs_diff,
                "max_rel_diff": agree.max_rel_diff,
            }
        if self.reference != "twin":
            assert ctx.reference is not None  # the widen pass keeps the model it widened
            ref = reference_outputs(ctx.reference, ctx.options.seed, ctx.input_shapes or None)
            names, got = result_outputs(model, ref.feeds, path=path)
            if self.reference == "preserved":
                agree = check_outputs(ref.names, ref.values, names, got)
                doc.update(
                    max_abs_diff=agree.max_abs_diff, max_rel_diff=agree.max_rel_diff, preserved=True
                )
            else:
                same_signature(ref.names, ref.values, names, got)
            doc["input_shapes"] = ref.input_shapes
        ctx.report.verification = doc
        return PassResult(model, modified=False)
