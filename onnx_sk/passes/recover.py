"""RecoverPass (``optimize --recover DATA``): distill the optimized model from the original.

The rewrite's weights (He draws, or the approximation of each kernel) are the starting point;
:func:`onnx_sk.training.distill.recover` trains them, label-free, to reproduce the original
model (the teacher, read again from its file or the caller's ``ModelProto``) on the unlabelled
inputs of ``DATA``: block-wise, then end-to-end, as ``onnx-sk distill`` does. Only weights
change: the same nodes, initializers (names, dtypes, shapes), inputs and outputs.

Runs after verify and fidelity: verification proved the rewrite is the structure it claims
(against the dense twin, on the rewrite's own weights); the trained weights are no longer the
designs' dense-equivalent of anything, so after training this pass re-checks what still
applies (``verification["recovery"]``):

1. the full ONNX checker;
2. only the weights changed (nodes, initializer names/dtypes/shapes, graph inputs and outputs);
3. the information field of every inserted subgraph still equals the dense conv's;
4. ONNX Runtime on the trained graph gives the trained torch module's outputs on the held-out
   samples (distill's own check).

The fidelity pass then runs again on the recovered model (the report's ``fidelity``; the one
before recovery is kept as ``recovery["fidelity_before"]``). Skipped (``recovery["skipped"]``)
when no pass changed the model. Needs torch (imported lazily: the package works without it;
:func:`validate` names the install before any work).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import onnx

from onnx_sk.errors import UserError, VerificationError
from onnx_sk.graph.checks import check, check_fields
from onnx_sk.graph.load import load_model
from onnx_sk.options import OptimizeOptions
from onnx_sk.passes.base import PassResult
from onnx_sk.passes.context import PassContext
from onnx_sk.training import distill
from onnx_sk.training.bn_fold import fold_training_bns
from onnx_sk.training.data import validate as validate_data
from onnx_sk.training.images import given
from onnx_sk.training.method import Method
from onnx_sk.training.samples import Samples


def validate(options: OptimizeOptions) -> None:
    """The recovery options, and torch, before anything is loaded."""
    r = options.recovery
    if r.recover is None:
        if given(options.data):
            raise UserError(
                f"{', '.join(given(options.data))}: for --recover DIR (a folder of images)"
            )
        return
    validate_data(r.recover, options.data, "--recover")
    distill.validate(r.recover_epochs, r.recover_minutes, holdout=r.recover_holdout,
                     prefix="--recover-", mix=r.recover_mix, augment=r.recover_augment,
                     carried_lr=r.recover_carried_lr,
                     threads=r.recover_threads)  # fmt: skip
    distill.require_torch("--recover")


def check_output(options: OptimizeOptions, out: Path) -> None:
    """OUT must not be the ``--recover`` data (it is read while OUT is written)."""
    data = options.recovery.recover
    if isinstance(data, (str, os.PathLike)) and os.path.exists(out) and os.path.samefile(data, out):
        raise UserError(f"output path {out} is the --recover data: refusing to overwrite it")


def check_data(options: OptimizeOptions, model: onnx.ModelProto) -> Samples | None:
    """The ``--recover`` samples, checked against the model's inputs (which no pass changes)
    once it is loaded, before any pass runs: bad data costs no optimization."""
    r = options.recovery
    if r.recover is None:
        return None
    return distill.recovery_samples(r.recover, model, r.recover_holdout, options.data)


def _layout(model: onnx.ModelProto) -> tuple:
    """What training must not change: nodes, initializer names/dtypes/shapes, inputs, outputs."""
    g = model.graph
    nodes = [(n.op_type, tuple(n.input), tuple(n.output), n.domain) for n in g.node]
    inits = [(t.name, t.data_type, tuple(t.dims)) for t in g.initializer]
    return (
        nodes,
        inits,
        [i.SerializeToString() for i in g.input],
        [o.SerializeToString() for o in g.output],
    )


class RecoverPass:
    name = "recover"

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        r = ctx.options.recovery
        if r.recover is None:
            return PassResult(model, modified=False)
        if not ctx.modified:
            ctx.report.recovery = {"skipped": "no pass changed the model: nothing to recover"}
            return PassResult(model, modified=False)
        source: Any = ctx.source.path if ctx.source.path is not None else ctx.original
        teacher = load_model(source).model
        assert teacher is not None

        def progress(row: dict) -> None:
            ctx.step(
                min(row["epoch"] / row["epochs"], 1.0),
                f"{row['stage']} epoch {row['epoch']}/{row['epochs']}, held-out loss "
                f"{row['holdout_loss']:.4g}",
            )

        layout = _layout(model)
        data = ctx.recover_samples if ctx.recover_samples is not None else r.recover
        trained, result = distill.recover(
            teacher, model, data, epochs=r.recover_epochs, minutes=r.recover_minutes,
            holdout=r.recover_holdout, seed=ctx.options.seed, progress=progress,
            class_axis=r.recover_class_axis, threads=r.recover_threads,
            method=Method(
                mix=r.recover_mix, augment=r.recover_augment, carried_lr=r.recover_carried_lr
            ),
        )  # fmt: skip
        del teacher, model
        if ctx.options.verify:
            self._verify(trained, layout, ctx, result.verification_max_abs_diff)
        folded = _fold_training_bns(trained, ctx, data)
        ctx.report.recovery = {
            **result.to_dict(),
            "fidelity_before": ctx.report.fidelity,
            "training_bns_folded": folded,
        }
        del ctx.report.recovery["output"]
        ctx.checked = None  # verify's outputs are the weights before recovery
        return PassResult(trained, modified=True)

    @staticmethod
    def _verify(model: onnx.ModelProto, layout: tuple, ctx: PassContext, worst: float) -> None:
        check(model, input_shapes=ctx.input_shapes)
        if _layout(model) != layout:
            raise VerificationError("recovery changed more than the weights: nothing written")
        fields = check_fields(model, ctx.replacements) if ctx.replacements else 0
        doc = ctx.report.verification if ctx.report.verification is not None else {}
        doc["recovery"] = {
            "checker": True,
            "only_weights_changed": True,
            "fields_checked": fields,
            "runtime_vs_trained_max_abs_diff": worst,
        }
        ctx.report.verification = doc


def _fold_training_bns(model: onnx.ModelProto, ctx: PassContext, data: Any) -> int:
    """``--for-training``: fold the trained BNs TrainingBNPass inserted into their conv stages,
    in place (:mod:`onnx_sk.training.bn_fold`: checked in ONNX Runtime against the unfolded
    model when verifying); the written model has none left. Returns how many were folded."""
    if not ctx.options.fitting.for_training:
        return 0
    names = {n for r in ctx.replacements for n in r.new_nodes}
    checked = data if ctx.options.verify and isinstance(data, Samples) else None
    folded = fold_training_bns(model, names, checked)
    if folded and checked is not None:
        check(model, input_shapes=ctx.input_shapes)
    return folded
