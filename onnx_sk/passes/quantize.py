"""QuantizePass (``--precision int8|auto``): write the planned int8 convs in QDQ form, after the
fp32 rewrite was verified, and check the result structurally.

Runs after verify: the dense-twin check proves the fp32 rewrite exactly (float32 tolerances,
unchanged); quantization is not exact, so the int8 model is checked here instead:

1. ranges: every tensor the QDQ form needs (:func:`onnx_sk.graph.qdq.activation_tensors`: the
   inputs and outputs of the int8 convs, SK stages and shuffles included) is calibrated on the
   fp32 model just verified (:func:`onnx_sk.runtime.quantize.activation_ranges`), on
   ``--calibration`` samples, else on seeded random inputs (the report's ``precision.warning``
   says real data is better);
2. ``--max-error τ``: per int8 conv, its int8 form (dense, or its SK stages with their weights)
   against the original fp32 dense conv on the first calibration batch's input activations,
   ``||y_int8 - y_dense|| / ||y_dense||`` (:func:`onnx_sk.runtime.quantize.relative_error`);
   a conv over τ stays fp32 (``precision.over_budget``);
3. with ``auto`` (unless ``--lut-from-target``): the per-conv choice revised by timing the
   network on the target, one boundary conv flipped at a time
   (:mod:`onnx_sk.passes.int8_context`; the ranges above cover every conv that could be int8);
   the fully connected layers (``Gemm``, ``graph.qdq.int8_gemms``) take part as units that
   start in fp32 (``precision.int8_gemms``: those left in int8);
4. the QDQ nodes are inserted (:func:`onnx_sk.graph.qdq.insert_qdq`);
5. unless ``--no-verify``: the full ONNX checker; ONNX Runtime's optimized graph (CPU provider,
   ORT_ENABLE_ALL) must hold an int8 conv kernel (``QLinearConv``) per int8 Conv node
   (``int8_kernels``; more are counted as ``ort_int8_unwritten``: ONNX Runtime quantizes the
   float weights of a conv that reads a DequantizeLinear and writes a QuantizeLinear itself, as
   an fp32 SK stage between two int8 stages would), and the int8 model's outputs, run by ONNX Runtime as deployed
   (optimisations on), must have a cosine of at least ``MIN_COSINE`` with the fp32 model's on
   the first calibration batch (the quantization tolerance; else VerificationError).

Fills the report's ``precision`` (``int8_stages``: the convs the in-context step left partly
int8, with their int8 stages) and each conv row's ``precision`` (fp32, int8, or mixed); the
fidelity pass after it measures the int8 model against the original.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnx_sk.errors import UserError, VerificationError
from onnx_sk.graph.build import Replacement, conv_attrs, replace_conv
from onnx_sk.graph.checks import check
from onnx_sk.graph.qdq import (
    MIN_OPSET,
    MOVES,
    activation_tensors,
    insert_qdq,
    int8_gemms,
    opset_of,
    with_int8_joins,
)
from onnx_sk.maths.spec import ConvSpec
from onnx_sk.passes.base import PassResult
from onnx_sk.passes.context import PassContext
from onnx_sk.passes.int8_context import revise, stage_units
from onnx_sk.passes.objectives import DEFAULT_PROVIDER
from onnx_sk.runtime.compare import difference
from onnx_sk.runtime.paired import PairedTimer, one_sample
from onnx_sk.runtime.quantize import (
    INT8_CONV_OPS,
    activation_ranges,
    calibration_feeds,
    optimized_ops,
    qdq_micro,
    relative_error,
    seeded_feeds,
)
from onnx_sk.runtime.session import session

#: the least cosine between the int8 and the fp32 model's outputs (first calibration batch)
MIN_COSINE = 0.98
RANDOM_WARNING = (
    "int8 activation ranges from seeded random inputs: give --calibration with real data for "
    "better ranges"
)


def check_opset(model: onnx.ModelProto, precision: str) -> None:
    """Per-channel DequantizeLinear needs opset >= 13: refused before anything is measured."""
    if precision != "fp32" and opset_of(model) < MIN_OPSET:
        raise UserError(
            f"--precision {precision}: the model's opset {opset_of(model)} is below "
            f"{MIN_OPSET} (per-channel DequantizeLinear); convert it first"
        )


def marked_nodes(
    graph: onnx.GraphProto, int8: dict[str, str], replacements: list[Replacement]
) -> dict[str, list[str]]:
    """conv output → the first outputs of its nodes to write in int8: the dense conv itself, or
    its SK stages and shuffles."""
    by_output = {r.output: r for r in replacements}
    by_name = {n.name: n for n in graph.node if n.name}
    out: dict[str, list[str]] = {}
    for conv in int8:
        r = by_output.get(conv)
        if r is None:
            out[conv] = [conv]
            continue
        nodes = [by_name[n] for n in r.new_nodes]
        out[conv] = [n.output[0] for n in nodes if n.op_type in ("Conv", *MOVES)]
    return out


def _dense_micro(spec: ConvSpec, w: np.ndarray, b: np.ndarray | None) -> onnx.ModelProto:
    """x → the conv with kernel ``w`` (and bias ``b``) → y."""
    inits = [numpy_helper.from_array(w, "w")] + (
        [numpy_helper.from_array(b, "b")] if b is not None else []
    )
    attrs: dict[str, Any] = dict(conv_attrs(spec))
    if spec.group > 1:
        attrs["group"] = spec.group
    node = helper.make_node(
        "Conv", ["x", "w", *(["b"] if b is not None else [])], ["y"], "conv", **attrs
    )
    graph = helper.make_graph(
        [node], "conv", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)], inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def int8_error(
    spec: ConvSpec,
    w: np.ndarray,
    b: np.ndarray | None,
    r: Replacement | None,
    x: np.ndarray,
) -> float:
    """The int8 form's relative output error against the fp32 dense conv on ``x``."""
    dense = _dense_micro(spec, w, b)
    model = dense
    if r is not None:
        model = onnx.ModelProto()
        model.CopyFrom(dense)
        replace_conv(model.graph, "y", r.real, r.weights)
    return relative_error(qdq_micro(model, x), dense, [x])


class QuantizePass:
    name = "quantize"

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        o = ctx.options
        precision = o.latency.precision
        if precision == "fp32":
            return PassResult(model, modified=False)
        report: dict[str, Any] = {
            "precision": precision,
            "int8_convs": [],
            "ranges_from": None,
            "warning": None,
        }
        if ctx.plan_trial is not None:
            report["plan"] = ctx.plan_trial
        ctx.report.precision = report
        context = o.latency.precision == "auto" and not o.latency.lut_from_target
        gemms = int8_gemms(model) if context else {}  # fully connected: in context only
        names = {**ctx.int8, **(ctx.int8_eligible if context else {}), **gemms}
        if not names:  # nothing can be int8 (an all-fp32 plan is still revised in context)
            _rows(ctx, set())
            return PassResult(model, modified=False)
        units = marked_nodes(model.graph, names, ctx.replacements)
        marked = {c: units[c] for c in ctx.int8}
        tensors = activation_tensors(model.graph, _joined(model, units))
        calibration = o.fitting.calibration
        if calibration is not None:
            feeds = calibration_feeds(calibration, model)
        else:
            feeds = seeded_feeds(model, ctx.input_shapes, o.seed)
            report["warning"] = RANDOM_WARNING
        keep = [x for *_, x in ctx.int8_dense.values()]
        ranges, feed0, want, values = activation_ranges(
            model, tensors, feeds, keep, what="the optimized model on the calibration inputs"
        )
        report["ranges_from"] = "calibration" if calibration else "random"
        if o.fitting.max_error is not None:
            marked = self._within_budget(ctx, marked, values, report)
        partial: dict[str, list[str]] = {}
        if context:
            marked, partial, report["context"] = _in_context(
                ctx, model, units, marked, ranges, feed0, want, values, names, set(gemms)
            )
            report["int8_gemms"] = [names[c] for c in marked if c in gemms]
        insert_qdq(model.graph, _joined(model, marked), ranges)
        report["int8_convs"] = [names[c] for c in marked if c not in gemms]
        if partial:
            report["int8_stages"] = partial
        _rows(ctx, {names[c] for c in marked}, set(partial))
        if o.verify:
            convs = sum(len(v) for v in marked.values())
            report["check"] = _check(model, feed0, want, convs, ctx.input_shapes)
        ctx.checked = None  # the fidelity pass runs the int8 model
        return PassResult(model, modified=bool(marked))

    @staticmethod
    def _within_budget(
        ctx: PassContext,
        marked: dict[str, list[str]],
        values: dict[str, np.ndarray],
        report: dict[str, Any],
    ) -> dict[str, list[str]]:
        tau = ctx.options.fitting.max_error
        assert tau is not None
        by_output = {r.output: r for r in ctx.replacements}
        errors, over = {}, []
        for conv in list(marked):
            spec, w, b, x_name = ctx.int8_dense[conv]
            err = int8_error(spec, w, b, by_output.get(conv), values[x_name])
            errors[ctx.int8[conv]] = err
            if not err <= tau:
                over.append(ctx.int8[conv])
                del marked[conv]
        report["int8_errors"] = errors
        report["over_budget"] = over
        return marked


def _in_context(
    ctx: PassContext,
    model: onnx.ModelProto,
    units: dict[str, list[str]],
    marked: dict[str, list[str]],
    ranges: dict[str, tuple[float, float]],
    feed0: dict[str, np.ndarray],
    want: list[np.ndarray],
    values: dict[str, np.ndarray],
    names: dict[str, str],
    gemms: set[str],
) -> tuple[dict[str, list[str]], dict[str, list[str]], list[dict[str, Any]]]:
    """The int8 choice revised by timing the network (:mod:`onnx_sk.passes.int8_context`), one
    stage of an SK realisation at a time: (conv output → its int8 nodes for every conv with an
    int8 stage, conv name → its int8 stages for the convs only partly int8, the trials).
    ``gemms``: the fully connected layers among the units (with ``--max-error`` they stay fp32:
    their int8 error is not measured)."""
    o = ctx.options
    tau = o.fitting.max_error
    by_output = {r.output: r for r in ctx.replacements}
    stages, conv_of = stage_units(model.graph, units)
    by_name = {n.output[0]: n.name for n in model.graph.node if n.output}
    split = {c for c in units if sum(conv_of[u] == c for u in stages) > 1}
    unit_names = {
        u: (by_name.get(u) or u) if conv_of[u] in split else names.get(c, c)
        for u, c in conv_of.items()
    }
    verdicts: dict[str, bool] = {}

    def allowed(unit: str) -> bool:  # a stage is within τ when its whole conv is
        conv = conv_of[unit]
        if tau is None:
            return True
        if conv in gemms:
            return False
        if conv not in verdicts:
            spec, w, b, x_name = ctx.int8_dense[conv]
            err = int8_error(spec, w, b, by_output.get(conv), values[x_name])
            verdicts[conv] = err <= tau
        return verdicts[conv]

    feeds = one_sample(model, feed0)
    timer = PairedTimer(
        o.latency.provider or DEFAULT_PROVIDER, o.latency.threads or 1, feeds, seed=o.seed
    )
    one = any(np.shape(feeds[k]) != np.shape(v) for k, v in feed0.items())
    reference = [np.asarray(w)[:1] if one else np.asarray(w) for w in want]

    def faithful(sess: Any) -> bool:  # the tolerance _check applies to the written model
        got = sess.run(None, feeds)
        return all(  # an output that does not follow the batch is not compared
            a.shape != np.shape(b)
            or difference(a.astype(np.float64), np.asarray(b, np.float64)).cosine >= MIN_COSINE
            for a, b in zip(reference, got, strict=True)
        )

    start = {u for u, c in conv_of.items() if c in marked}
    int8, trials = revise(
        model, stages, start, ranges, timer, unit_names, allowed, ctx.step, faithful
    )
    out: dict[str, list[str]] = {}
    for u in stages:  # graph order within each conv
        if u in int8:
            out.setdefault(conv_of[u], []).extend(stages[u])
    partial = {
        names.get(c, c): [unit_names[u] for u in stages if conv_of[u] == c and u in int8]
        for c in out
        if any(conv_of[u] == c and u not in int8 for u in stages)
    }
    return out, partial, trials


def _joined(model: onnx.ModelProto, marked: dict[str, list[str]]) -> list[str]:
    """The marked nodes, and the Adds between them (``graph.qdq.with_int8_joins``)."""
    return with_int8_joins(model.graph, [t for ts in marked.values() for t in ts])


def _rows(ctx: PassContext, names: set[str], mixed: set[str] | None = None) -> None:
    """Each conv row's precision; ``names``: the convs with an int8 stage, ``mixed``: those
    with fp32 stages too."""
    for row in ctx.report.convs:
        name = row["name"]
        row["precision"] = "mixed" if name in (mixed or ()) else "int8" if name in names else "fp32"


def _check(
    model: onnx.ModelProto,
    feeds: dict[str, np.ndarray],
    want: list[np.ndarray],
    convs: int,
    input_shapes: dict[str, tuple[int, ...]],
) -> dict[str, Any]:
    """The checker, ORT's int8 kernels, and the outputs against the fp32 model's (docstring)."""
    check(model, input_shapes=input_shapes)
    dequantized = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    int8_convs = sum(
        1 for n in model.graph.node if n.op_type == "Conv" and n.input[1] in dequantized
    )
    gemm_nodes = sum(
        1 for n in model.graph.node if n.op_type == "Gemm" and n.input[1] in dequantized
    )
    ops = optimized_ops(model)
    kernels = sum(ops[k] for k in INT8_CONV_OPS)
    if kernels < int8_convs or ops["QGemm"] < gemm_nodes:
        raise VerificationError(
            f"int8: ONNX Runtime's optimized graph has {kernels} int8 conv kernels for "
            f"{int8_convs} int8 Conv nodes and {ops['QGemm']} QGemm for {gemm_nodes} int8 "
            "Gemm nodes (QDQ not fused)"
        )
    got = session(model, opt_level="all").run(None, feeds)
    cosines = []
    for a, b in zip(want, got, strict=True):
        cos = difference(np.asarray(a, np.float64), np.asarray(b, np.float64)).cosine
        cosines.append(cos)
        if not (math.isfinite(cos) and cos >= MIN_COSINE):
            raise VerificationError(
                f"int8: the outputs' cosine with the fp32 model's is {cos:.4f}, below the "
                f"quantization tolerance {MIN_COSINE}"
            )
    out: dict[str, Any] = {}
    if kernels > int8_convs:  # ORT quantizes a float-weight conv between a DQ and a Q itself
        out["ort_int8_unwritten"] = kernels - int8_convs
    return {
        **out,
        "int8_kernels": kernels,
        "ort_ops": {k: ops[k] for k in (*INT8_CONV_OPS, "QGemm") if ops[k]},
        "cosine_vs_fp32": cosines,
        "min_cosine": MIN_COSINE,
        "inputs": {k: list(v.shape) for k, v in feeds.items()},
    }
