"""VerifyPass: the optimized model is checked before it is written; a failure writes nothing.

1. the full ONNX checker on the model (in memory: the output file is written only after
   verification, so a killed run leaves no large temporary file);
2. with replacements and their dense twin (:class:`~onnx_sk.passes.twin.DenseTwinPass`): the
   information field of every inserted subgraph equals the dense conv's
   (:func:`onnx_sk.graph.checks.check_fields`), and the outputs equal the twin's up to float32
   rounding (:func:`onnx_sk.runtime.verify.check_outputs`; on non-negative input when the
   twin's outputs hold NaN/Inf on standard-normal input). Where that whole-model comparison
   fails but the graph outside the inserted subgraphs is unchanged, every inserted subgraph
   against its dense-equivalent conv decides (:func:`onnx_sk.runtime.verify.check_subgraphs`:
   no error growth with depth); the report's ``decided_by`` says which check decided;
3. against the model before widening (``reference``: its outputs, run by the widen pass):
   ``"original"`` (widen, he) the output
   signature is unchanged (names, order, dtypes, shapes); ``"preserved"`` (widen, preserve) the
   outputs are the same values too;
4. with replacements but no dense twin (widen, he: the widened twin would hold ~30× the
   parameters written): the information fields as in 2, and each inserted subgraph, run alone,
   against the dense equivalent of its stages (:func:`onnx_sk.runtime.conv_check.check_convs`).

Skipped with ``--no-verify``; in Mode 1 also when nothing was replaced (the model is written
unchanged). Fills the report's ``verification``. Changes nothing in the model.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import onnx

from onnx_sk.errors import VerificationError
from onnx_sk.graph.checks import check, check_fields, inserted_node, structure
from onnx_sk.passes.base import PassResult
from onnx_sk.passes.context import PassContext
from onnx_sk.runtime.blas import single_blas_thread
from onnx_sk.runtime.conv_check import check_convs
from onnx_sk.runtime.verify import (
    Agreement,
    Outputs,
    ToleranceError,
    check_outputs,
    check_subgraphs,
    result_outputs,
    same_signature,
)

Reference = Literal["twin", "original", "preserved"]


def _against_twin(
    model: onnx.ModelProto, ctx: PassContext, names: list[str], got: list[np.ndarray]
) -> tuple[Agreement, str]:
    """The result's outputs against the twin's, whole-model; where that fails on values only and
    the graph outside the inserted subgraphs is unchanged, each subgraph against its
    dense-equivalent conv decides (float32 rounding compounds through deep chains). Returns the
    agreement and which check decided."""
    twin, replaced = ctx.twin, ctx.replacements
    assert twin is not None
    try:
        return check_outputs(twin.names, twin.values, names, got), "whole model"
    except ToleranceError as exc:
        original = ctx.twin_structure() if ctx.twin_structure is not None else None
        if original != structure(model.graph, inserted_node(replaced)):
            raise  # the rewrite changed more than the convs: the whole-model failure stands
        whole = str(exc)
    try:
        agree = check_subgraphs(model, replaced, twin.feeds)
    except ToleranceError as sub:
        raise VerificationError(f"{whole}; per subgraph: {sub}") from None
    return agree, (
        f"per subgraph: each of the {len(replaced)} inserted subgraphs matches its "
        f"dense-equivalent conv (whole model: {whole}; float32 rounding grows through the model)"
    )


class VerifyPass:
    name = "verify"

    def __init__(self, reference: Reference = "twin") -> None:
        self.reference = reference

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        twin = ctx.twin
        replaced = ctx.replacements if twin is not None else []
        if not ctx.options.verify or (self.reference == "twin" and not replaced):
            return PassResult(model, modified=False)
        path = None  # the output is staged after verification (pipeline._write)
        check(model, input_shapes=ctx.input_shapes)
        doc: dict[str, Any] = {"checker": True, "fields_checked": 0}
        if twin is not None and replaced:
            fields = check_fields(model, replaced)
            names, got = result_outputs(model, twin.feeds, path=path)
            ctx.checked = Outputs(twin.feeds, names, got)
            agree, decided = _against_twin(model, ctx, names, got)
            doc = {
                "checker": True,
                "fields_checked": fields,
                "input_shapes": twin.input_shapes,
                "inputs": twin.inputs,
                "max_abs_diff": agree.max_abs_diff,
                "max_rel_diff": agree.max_rel_diff,
                "tolerance": agree.tolerance,
                "tolerance_note": agree.tolerance_note(),
                "decided_by": decided,
            }
        if self.reference == "original" and ctx.replacements:  # widen, he: no twin
            spatial = {d.site.node.output[0]: d.site.in_spatial for d in ctx.decisions}
            with single_blas_thread():  # many small products: threads only contend
                fields = check_fields(model, ctx.replacements)
                conv = check_convs(model, ctx.replacements, spatial, ctx.options.seed)
            doc.update(
                fields_checked=fields,
                convs_checked=conv.convs,
                channels_checked=conv.channels,
                channels=conv.channels_total,
                max_abs_diff=conv.max_abs_diff,
                max_rel_diff=conv.max_rel_diff,
            )
        if self.reference != "twin":
            ref = ctx.reference
            assert ref is not None  # the widen pass ran the model before widening it
            names, got = result_outputs(model, ref.feeds, path=path)
            ctx.checked = Outputs(ref.feeds, names, got)
            if self.reference == "preserved":
                agree = check_outputs(ref.names, ref.values, names, got)
                doc.update(
                    max_abs_diff=agree.max_abs_diff,
                    max_rel_diff=agree.max_rel_diff,
                    tolerance=agree.tolerance,
                    tolerance_note=agree.tolerance_note(),
                    preserved=True,
                )
            else:
                same_signature(ref.names, ref.values, names, got)
            doc["input_shapes"] = ref.input_shapes
        ctx.report.verification = doc
        return PassResult(model, modified=False)
