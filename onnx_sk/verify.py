"""Verification of an optimized model, on by default; a failure is an error and nothing is written.

1. ``onnx.checker.check_model(full_check=True)`` on the result;
2. for every replaced conv, the information field of the inserted subgraph, read off the ONNX
   nodes between the conv's input and output tensors, equals the dense conv's;
3. the *dense twin* — the original graph with each replaced conv's kernel swapped for its SK
   design's dense-equivalent kernel — and the result run in ONNX Runtime (CPU provider, graph
   optimisations disabled) on the same seeded random input: same output names, order, dtypes
   and shapes, and the same values up to float32 rounding (max |a − b| ≤ 1e-3 · max |b| + 1e-5).
   The designs are linear, so this checks every rewrite numerically, whole-model.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from onnx_sk.maths.designs import dense_equivalent
from onnx_sk.errors import VerificationError
from onnx_sk.maths.infofield import field_of_conv
from onnx_sk.graph.save import save_model
from onnx_sk.graph.tensors import is_large
from onnx_sk.passes.reduce import Replacement
from onnx_sk.runtime.session import random_inputs, release_memory, session

#: graph optimisations disabled: the twin's kernels are session initializer overrides, and ORT
#: (1.32) silently ignores an override once a fusion (Conv+BN, NCHWc) has rewritten that weight
VERIFY_OPT_LEVEL = "disabled"
RTOL = 1e-3
ATOL = 1e-5


@dataclass(frozen=True)
class Verification:
    checker: bool
    fields_checked: int
    input_shapes: dict
    max_abs_diff: float
    max_rel_diff: float

    def to_dict(self) -> dict:
        return {
            "checker": self.checker,
            "fields_checked": self.fields_checked,
            "input_shapes": {k: list(v) for k, v in self.input_shapes.items()},
            "max_abs_diff": self.max_abs_diff,
            "max_rel_diff": self.max_rel_diff,
        }


def check(model: onnx.ModelProto, large: bool | None = None) -> None:
    """The full ONNX checker (through a temporary file for models above 2 GB)."""
    try:
        if is_large(model, large):
            with tempfile.TemporaryDirectory() as tmp:
                path = save_model(model, Path(tmp) / "model.onnx", external_data=True)
                onnx.checker.check_model(str(path), full_check=True)
        else:
            onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        raise VerificationError(f"the optimized model fails onnx.checker: {_first_line(exc)}") from None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _swap_in_twin_kernels(model: onnx.ModelProto, replacements: list[Replacement]) -> list:
    """Point each replaced conv at its dense-equivalent kernel (in place); returns the undo list."""
    nodes = {n.output[0]: n for n in model.graph.node if n.op_type == "Conv"}
    undo = []
    for r in replacements:
        node = nodes[r.output]
        w_eq = dense_equivalent(r.real.stages, r.weights).astype(r.weights[0].dtype)
        name = f"{node.input[1]}::dense_twin::{r.output}"
        model.graph.initializer.append(numpy_helper.from_array(w_eq, name))
        undo.append((node, node.input[1]))
        node.input[1] = name
    return undo


def _undo(model: onnx.ModelProto, undo: list) -> None:
    for node, weight in undo:
        node.input[1] = weight
    inits = model.graph.initializer
    for k in reversed(range(len(inits))):
        if "::dense_twin::" in inits[k].name:
            del inits[k]


def twin_overrides(original: onnx.ModelProto, replacements: list[Replacement]) -> dict | None:
    """Initializer overrides that turn the original into its dense twin, or None when a replaced
    kernel is not an initializer read by that conv alone (then the twin is built in place)."""
    inits = {i.name for i in original.graph.initializer}
    readers: dict[str, int] = {}
    for node in original.graph.node:
        for t in node.input:
            readers[t] = readers.get(t, 0) + 1
    nodes = {n.output[0]: n for n in original.graph.node if n.op_type == "Conv"}
    overrides = {}
    for r in replacements:
        weight = nodes[r.output].input[1]
        if weight not in inits or readers.get(weight) != 1:
            return None
        overrides[weight] = dense_equivalent(r.real.stages, r.weights).astype(r.weights[0].dtype)
    return overrides


def dense_twin_outputs(
    original: onnx.ModelProto,
    replacements: list[Replacement],
    input_shapes: dict | None = None,
    seed: int = 0,
    large: bool | None = None,
    path: Path | None = None,
    overrides: dict | None = None,
) -> tuple[dict, list, list]:
    """Run the dense twin: (feeds, output names, outputs). ``original`` is left unchanged.

    The twin is the original graph with each replaced conv's kernel swapped for its SK design's
    dense equivalent. With the model's ``path``, ONNX Runtime loads the file and the kernels are
    session initializer overrides (no copy of the model in Python); otherwise the kernels are
    swapped in place and restored afterwards.
    """
    if overrides is None and path is not None:
        overrides = twin_overrides(original, replacements)
    if overrides is not None:
        return _feeds_and_twin_outputs(original, seed, input_shapes, large, path, overrides)
    undo = _swap_in_twin_kernels(original, replacements)
    try:
        return _feeds_and_twin_outputs(original, seed, input_shapes, large)
    finally:
        _undo(original, undo)


def inserted_subgraph(result: onnx.ModelProto, r: Replacement) -> onnx.GraphProto:
    """The nodes that replaced one conv, with their weights: a graph from r.input to r.output."""
    names = set(r.new_nodes)
    nodes = [n for n in result.graph.node if n.name in names]
    reads = {t for n in nodes for t in n.input}
    inits = [t for t in result.graph.initializer if t.name in reads]
    x = onnx.helper.make_tensor_value_info(
        r.input, onnx.TensorProto.FLOAT, ["N", r.real.spec.c_in, *("HW"[: r.real.spec.spatial_rank])]
    )
    y = onnx.helper.make_tensor_value_info(r.output, onnx.TensorProto.FLOAT, None)
    return onnx.helper.make_graph(nodes, "inserted", [x], [y], inits)


def check_fields(result: onnx.ModelProto, replacements: list[Replacement]) -> int:
    """Each inserted subgraph's information field, read off its ONNX nodes, equals the conv's."""
    from onnx_sk.graph.fields import field_between

    for r in replacements:
        got = field_between(inserted_subgraph(result, r), r.input, r.output)
        want = field_of_conv(r.real.spec)
        if not got.equals(want):
            raise VerificationError(
                f"conv {r.name!r}: the inserted {r.real.design} subgraph has information field "
                f"{got.size} but the dense conv has {want.size}"
            )
    return len(replacements)


def _run(model, feeds: dict, large: bool | None = None, overrides: dict | None = None):
    sess = session(
        model, opt_level=VERIFY_OPT_LEVEL, threads=0, large=large, overrides=overrides, arena=False
    )
    outs = sess.run(None, feeds)
    names = [o.name for o in sess.get_outputs()]
    del sess
    release_memory()
    return names, outs


def _feeds_and_twin_outputs(twin, seed, input_shapes, large=None, path=None, overrides=None):
    """Feed the twin at the model's shape; symbolic spatial dims try 64, then 224."""
    last_error = None
    for spatial in (64, 224):
        feeds = random_inputs(twin, np.random.default_rng(seed), input_shapes, spatial)
        try:
            names, outs = _run(twin if path is None else str(path), feeds, large, overrides)
            return feeds, names, outs
        except Exception as exc:  # too small an input for this network: try a larger one
            last_error = exc
    raise VerificationError(
        f"the original model does not run in ONNX Runtime on random input: {_first_line(last_error)} "
        "(give --input-shape)"
    )


def compare_outputs(want_names, want, got_names, got) -> tuple[float, float]:
    if want_names != got_names:
        raise VerificationError(f"output names changed: {want_names} → {got_names}")
    abs_max, rel_max = 0.0, 0.0
    for name, a, b in zip(want_names, got, want, strict=True):
        if a.dtype != b.dtype or a.shape != b.shape:
            raise VerificationError(
                f"output {name!r} changed: {b.dtype}{list(b.shape)} → {a.dtype}{list(a.shape)}"
            )
        if a.size == 0 or not np.issubdtype(a.dtype, np.floating):
            continue
        diff = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))
        scale = float(np.max(np.abs(b.astype(np.float64))))
        abs_max, rel_max = max(abs_max, diff), max(rel_max, diff / scale if scale else diff)
        if not diff <= RTOL * scale + ATOL:
            raise VerificationError(
                f"output {name!r} differs from the dense-equivalent model by {diff:.3g} "
                f"(output scale {scale:.3g})"
            )
    return abs_max, rel_max


def verify_result(
    result: onnx.ModelProto,
    replacements: list[Replacement],
    twin: tuple[dict, list, list],
    large: bool | None = None,
    path: Path | None = None,
) -> Verification:
    """Checker, fields, and the result's outputs against the dense twin's ``(feeds, names, outs)``.

    ``path``: the result already written to a file (checked and run from there, which saves
    serialising it again).
    """
    if path is not None:
        try:
            onnx.checker.check_model(str(path), full_check=True)
        except Exception as exc:
            raise VerificationError(f"the optimized model fails onnx.checker: {_first_line(exc)}") from None
    else:
        check(result, large)
    fields = check_fields(result, replacements)
    feeds, want_names, want = twin
    try:
        got_names, got = _run(result if path is None else str(path), feeds, large)
    except Exception as exc:
        raise VerificationError(
            f"the optimized model does not run in ONNX Runtime: {_first_line(exc)}"
        ) from None
    abs_max, rel_max = compare_outputs(want_names, want, got_names, got)
    shapes = {k: tuple(v.shape) for k, v in feeds.items()}
    return Verification(True, fields, shapes, abs_max, rel_max)


def verify(
    original: onnx.ModelProto,
    result: onnx.ModelProto,
    replacements: list[Replacement],
    input_shapes: dict | None = None,
    seed: int = 0,
) -> Verification:
    """Verify ``result`` (Mode 1 applied to ``original``); raises VerificationError."""
    twin = dense_twin_outputs(original, replacements, input_shapes, seed)
    return verify_result(result, replacements, twin)
