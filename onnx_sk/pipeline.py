"""``optimize``: validate → load → run the mode's pass list → write atomically.

The library entry point for ``onnx-sk optimize`` and for post-export use::

    model, report = onnx_sk.optimize("resnet18.onnx", "resnet18_sk.onnx", seed=0)

Each mode is a list of passes (:mod:`onnx_sk.passes`), run in order by one runner:

=====================  ==============================================================
mode                   passes
=====================  ==============================================================
reduce                 plan, [fit-targets], [error-budget], init-weights, dense-twin,
                       reduce, [training-bn], provenance, verify, [quantize], fidelity
widen, he              widen (plans Mode 1 on the widened convs), init-weights, reduce,
                       provenance, verify (each replaced conv against its dense
                       equivalent, alone; the signature of the original), fidelity
widen, preserve        plan, init-weights, reduce, widen, provenance, verify (values of the
                       reduced), fidelity
widen, --design none   widen, provenance, verify (signature of the original), fidelity
=====================  ==============================================================

(bracketed: only with ``--init approx``, ``--max-error``, ``--for-training``,
``--precision int8|auto``.) With
``--recover DATA`` every mode then runs recover (distillation from the original: only the
weights change; :mod:`onnx_sk.passes.recover`) and fidelity again. In widen mode
the weights are fitted without BN or calibration targets and ``--for-training`` is not applied.
When no pass changed the model it is written unchanged (a byte-for-byte copy of the input
file). The output is written to a temporary file beside ``OUT`` only once every pass (verify
last) succeeded, then ``before_commit`` runs (the CLI writes the report there, so a report that
cannot be written leaves no model), then it is renamed into place.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Callable
from typing import Any

import onnx

from onnx_sk.errors import UserError
from onnx_sk.graph.convs import QUANTIZED_CONVS
from onnx_sk.graph.load import LoadedModel, load_model
from onnx_sk.graph.output_path import check_output_path
from onnx_sk.graph.save import OutputFile
from onnx_sk.graph.shapes import parse_input_shapes
from onnx_sk.graph.tensors import is_large
from onnx_sk.options import OptimizeOptions, check_seed, option_fields
from onnx_sk.passes import init_weights, objectives, precision, recover, widen
from onnx_sk.passes.base import Pass, run_passes
from onnx_sk.passes.context import PassContext
from onnx_sk.passes.error_budget import ErrorBudgetPass
from onnx_sk.passes.fidelity import FidelityPass
from onnx_sk.passes.init_weights import InitPass
from onnx_sk.passes.plan import PlanPass
from onnx_sk.passes.provenance import ProvenancePass
from onnx_sk.passes.quantize import QuantizePass
from onnx_sk.passes.recover import RecoverPass
from onnx_sk.passes.reduce import ReducePass
from onnx_sk.passes.targets import FitTargetsPass
from onnx_sk.passes.training_bn import TrainingBNPass
from onnx_sk.passes.twin import DenseTwinPass
from onnx_sk.passes.verify import Reference, VerifyPass
from onnx_sk.passes.widen import WidenPass
from onnx_sk.report import (
    ModelCounts,
    Report,
    quantized_message,
    reduce_message,
    reduce_totals,
    widen_message,
    widen_section,
    widen_totals,
)
from onnx_sk.runtime.progress import Progress

MODES = ("reduce", "widen")


def passes_for(options: OptimizeOptions) -> list[Pass]:
    """The pass list of the mode the options ask for (module docstring): the mode's rewrite,
    then the passes every mode runs on the final model, then verification (the last pass that
    may see a change: the file it checks is the file written) and the fidelity against the
    original (reads only); with ``--recover``, then recovery (which re-checks what still
    applies to the trained weights) and the fidelity of the recovered model."""
    rewrite, reference = _rewrite(options)
    recovery: list[Pass] = [RecoverPass(), FidelityPass()] if options.recovery.recover else []
    # --precision int8/auto: the int8 form is written after the fp32 rewrite is verified (it
    # checks itself: passes/quantize.py)
    int8: list[Pass] = [QuantizePass()] if options.latency.precision != "fp32" else []
    return [*rewrite, *_finishing(options), VerifyPass(reference), *int8, FidelityPass(), *recovery]


def _rewrite(options: OptimizeOptions) -> tuple[list[Pass], Reference]:
    """The passes that decide and rewrite, per mode, and what the result is verified against."""
    fitting = options.fitting
    if options.mode == "reduce":
        return [
            PlanPass(),
            *([FitTargetsPass()] if fitting.init == "approx" else []),
            *([ErrorBudgetPass()] if fitting.max_error is not None else []),
            InitPass(),
            DenseTwinPass(),
            ReducePass(),
            *([TrainingBNPass()] if fitting.for_training else []),
        ], "twin"
    if options.reduce.design == "none":
        return [WidenPass()], "original"
    if options.widen.widen_init == "preserve":
        return [PlanPass(), InitPass(), ReducePass(), WidenPass()], "preserved"
    return [WidenPass(), InitPass(), ReducePass()], "original"


def _finishing(options: OptimizeOptions) -> list[Pass]:
    """Passes every mode runs on the final model, before verification: provenance in its
    metadata (when a pass changed it)."""
    return [ProvenancePass()]


def validate(options: OptimizeOptions) -> None:
    """Every option checked by the module that owns it, before anything is loaded."""
    if options.mode not in MODES:
        raise UserError(f"--mode {options.mode!r}: expected reduce or widen")
    if options.inputs is not None and not os.path.isfile(options.inputs):
        raise UserError(f"--inputs {options.inputs}: no such file")
    check_seed(options.seed)
    widen.validate(options)
    objectives.validate(options)
    init_weights.validate(options)
    objectives.validate_latency(options)
    precision.validate(options)
    recover.validate(options)


def _owned(loaded: LoadedModel) -> onnx.ModelProto:
    """The model to rewrite in place: ours when loaded from a path, else a copy of the caller's."""
    assert loaded.model is not None
    if loaded.path is not None:
        return loaded.model
    copy = onnx.ModelProto()
    copy.CopyFrom(loaded.model)
    return copy


def _finish(ctx: PassContext, model: onnx.ModelProto) -> None:
    """Totals, the widen section and the message, once every pass ran."""
    report, o = ctx.report, ctx.options
    report.quantized_convs = [
        n.name or n.output[0] for n in model.graph.node if n.op_type in QUANTIZED_CONVS
    ]
    quantized = quantized_message(report.quantized_convs)
    if o.mode == "reduce":
        report.totals = reduce_totals(report.convs, ctx.before, model)
        report.totals["per_sample"] = ctx.per_sample
        int8 = len((report.precision or {}).get("int8_convs") or [])
        report.message = reduce_message(
            report.replaced if ctx.modified else 0, len(report.convs), int8
        )
    else:
        assert ctx.widen is not None
        report.totals = widen_totals(report.convs, ctx.before, model)
        report.widen = widen_section(ctx.widen, report.totals, o.widen.budget, o.widen.widen_init)
        report.message = widen_message(report.widen)
    if quantized:
        report.message = f"{report.message}; {quantized}"


def optimize_model(
    source: str | os.PathLike | onnx.ModelProto,
    output: str | os.PathLike | None,
    options: OptimizeOptions,
    progress: Progress | None = None,
    before_commit: Callable[[Report], None] | None = None,
) -> tuple[onnx.ModelProto, Report]:
    """Run ``options``'s pipeline on ``source``; write ``output`` atomically when given.

    ``before_commit(report)`` runs once the output is complete in its temporary file, before it
    is renamed into place; if it raises, nothing is written. ``progress(fraction, what)`` is
    told each stage as it starts (``load``, every pass by name, ``write``) and the steps of the
    long ones (each conv fitted, each latency measured); the command line draws it as a bar on a
    terminal, the API passes None (silent)."""
    input_shapes = parse_input_shapes(list(options.input_shape))
    validate(options)
    if progress is not None:
        progress(0.0, "load")
    loaded = load_model(source)
    out = None
    if output is not None:
        out = check_output_path(output, [loaded.path], options.overwrite, loaded.data_paths)
        recover.check_output(options, out)
    model = _owned(loaded)
    if loaded.path is None:
        loaded.model = model
    external = True if loaded.used_external_data or is_large(model) else None
    ctx = PassContext(
        options=options,
        input_shapes=input_shapes,
        source=loaded,
        report=Report(
            model=str(loaded.path) if loaded.path else None,
            output=str(output) if output is not None else None,
            options=options.flat(),
        ),
        before=ModelCounts.of(model),
        progress=progress,
        original=source if isinstance(source, onnx.ModelProto) else None,
    )
    ctx.recover_samples = recover.check_data(options, model)
    output_file = OutputFile(out, external) if out is not None else None
    ctx.output = output_file
    with output_file or contextlib.nullcontext():
        del model  # the runner and its passes hold the model from here on
        result = run_passes(passes_for(options), _take(loaded), ctx)
        _finish(ctx, result)
        if output_file is not None:
            ctx.stage = "write"
            ctx.step(0.0)
            _write(output_file, ctx, loaded, result, before_commit)
        elif before_commit is not None:
            before_commit(ctx.report)
    return result, ctx.report


def _take(loaded: LoadedModel) -> onnx.ModelProto:
    assert loaded.model is not None
    return loaded.model


def _write(
    output: OutputFile,
    ctx: PassContext,
    loaded: LoadedModel,
    model: onnx.ModelProto,
    before_commit: Callable[[Report], None] | None,
) -> None:
    """Stage the verified result, run ``before_commit``, rename it into place; a model no pass
    changed is written unchanged (a byte-for-byte copy of the input file when there is one)."""
    if not ctx.modified and loaded.path is not None and not loaded.used_external_data:
        output.copy_from(loaded.path)
    elif not output.staged:  # the verified result (or an unchanged proto / external-data model)
        output.stage(model)
    if before_commit is not None:
        before_commit(ctx.report)
    output.commit()


def optimize(
    model: str | os.PathLike | onnx.ModelProto,
    output: str | os.PathLike | None = None,
    **options: Any,
) -> tuple[onnx.ModelProto, Report]:
    """Replace the dense convs of ``model`` with SK designs (Mode 1: reduce), or with
    ``mode="widen"`` also scale every free channel space back to the parameter budget (Mode 2).

    ``options`` are the options of ``onnx-sk optimize`` by name (:mod:`onnx_sk.options`), e.g.
    ``design="dw-pw"``, ``objective="latency"``, ``input_shape=["x:1x3x224x224"]``;
    ``recover="inputs.npz"`` then distills the result from ``model`` on those unlabelled inputs
    (torch extra; the report's ``recovery`` says how it went).

    Returns the optimized ``ModelProto`` and a :class:`~onnx_sk.report.Report`; writes ``output``
    atomically when given. Raises :class:`~onnx_sk.errors.UserError` for bad input and
    :class:`~onnx_sk.errors.VerificationError` when the result fails verification.
    """
    return optimize_model(model, output, OptimizeOptions.from_flat(**options))


def _signature() -> inspect.Signature:
    """optimize's signature, generated from the option declarations (for help() and IDEs)."""
    params = [
        inspect.Parameter("model", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        inspect.Parameter("output", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None),
    ]
    for _, f in option_fields():
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default))
    return inspect.Signature(params)


optimize.__signature__ = _signature()  # type: ignore[attr-defined]
