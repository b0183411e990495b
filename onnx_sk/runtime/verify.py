"""The numeric half of verification: the result against a reference, in ONNX Runtime.

The reference is the *dense twin* (:mod:`onnx_sk.graph.twin`: the original graph with each
replaced conv's kernel swapped for its SK design's dense-equivalent kernel) or, for widening
that keeps the function, the model before widening. Both run on the CPU provider with graph
optimisations disabled, on the same seeded random input (``random_inputs``; symbolic spatial
dims try 64, then 224, unless ``--input-shape`` fixes them): same output names, order, dtypes
and shapes, and the same values up to float32 rounding, ``max |a − b| ≤ RTOL · max |b| + ATOL``.
The designs are linear, so this checks every rewrite numerically, whole-model.

Inputs in the model's domain: when the reference's outputs hold NaN/Inf on standard-normal
input (a Log or Sqrt of the input), the non-negative input |N(0, 1)| is tried and used if its
outputs are finite. NaN/Inf at the same places in both models count as equal; finite values
are compared (``check_outputs``, a :class:`ToleranceError` when they are apart).

Per subgraph (``check_subgraphs``): each inserted subgraph, cut out of the result, is fed the
result's own value of its input tensor and compared with one dense Conv carrying its
dense-equivalent kernel, at the same tolerance. Unlike the whole-model comparison this does not
grow with depth (float32 rounding compounds through a deep or chaotic chain, e.g. 100
Conv+Tanh layers), so the verify pass uses it where the whole-model check fails but the rest
of the graph is unchanged (:func:`onnx_sk.graph.checks.structure`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from onnx_sk.errors import UserError, VerificationError
from onnx_sk.graph.build import Replacement, conv_attrs
from onnx_sk.graph.checks import first_line, inserted_subgraph
from onnx_sk.graph.twin import twin_kernel
from onnx_sk.runtime.compare import Difference, difference
from onnx_sk.runtime.feeds import random_inputs
from onnx_sk.runtime.session import release_memory, session

#: graph optimisations disabled: the twin's kernels are session initializer overrides, and ORT
#: (1.32) silently ignores an override once a fusion (Conv+BN, NCHWc) has rewritten that weight
VERIFY_OPT_LEVEL = "disabled"
RTOL = 1e-3
ATOL = 1e-5
#: symbolic spatial dims of the verification input, tried in order
SPATIAL_TRIES = (64, 224)
#: the verification inputs, tried in order while the reference's outputs hold NaN/Inf
INPUT_KINDS = ("standard normal", "non-negative |standard normal|")


class ToleranceError(VerificationError):
    """Outputs with the right names, dtypes and shapes whose values are apart."""


class SessionError(Exception):
    """ONNX Runtime cannot build a session of the model at all (no kernel for an op or a type,
    e.g. a float64 Conv): no input shape changes that. Its message is ORT's first line."""


@dataclass(frozen=True)
class Outputs:
    """A model's outputs on ``feeds``: the reference a result is compared with."""

    feeds: dict[str, np.ndarray]
    names: list[str]
    values: list[np.ndarray]
    #: which of INPUT_KINDS the feeds are
    inputs: str = INPUT_KINDS[0]

    @property
    def input_shapes(self) -> dict[str, list[int]]:
        return {k: list(v.shape) for k, v in self.feeds.items()}


@dataclass(frozen=True)
class Agreement:
    """How closely a result's outputs matched the reference's (all within tolerance).

    ``tolerance``: which term of ``RTOL · scale + ATOL`` decided: ``"relative"`` when
    ``RTOL · scale ≥ ATOL`` for every float output, else ``"absolute"`` (an output so small,
    e.g. a sigmoid map near 0, that a difference of ATOL passes whatever its relative size);
    ``smallest``: that output's name and scale."""

    max_abs_diff: float
    max_rel_diff: float
    tolerance: str = "relative"
    smallest: tuple[str, float] | None = None

    def tolerance_note(self) -> str:
        """'' when the relative tolerance decided, else one sentence saying the absolute one did."""
        if self.tolerance == "relative" or self.smallest is None:
            return ""
        name, scale = self.smallest
        return (
            f"the absolute tolerance {ATOL:g} decided: output {name!r} has scale {scale:.2g}, "
            f"below {ATOL / RTOL:g} where the relative tolerance {RTOL:g} would be tighter"
        )


def run(
    model: onnx.ModelProto | str | Path,
    feeds: dict[str, np.ndarray],
    large: bool | None = None,
    overrides: dict[str, np.ndarray] | None = None,
) -> tuple[list[str], list[np.ndarray]]:
    """Output names and values of one run (a one-shot session: its memory is given back); a
    :class:`SessionError` when ONNX Runtime cannot build the session."""
    try:
        sess = session(
            model,
            opt_level=VERIFY_OPT_LEVEL,
            threads=0,
            large=large,
            overrides=overrides,
            arena=False,
        )
    except UserError:
        raise
    except Exception as exc:
        raise SessionError(first_line(exc)) from None
    outs = sess.run(None, feeds)
    names = [o.name for o in sess.get_outputs()]
    del sess
    release_memory()
    return names, outs


def reference_outputs(
    model: onnx.ModelProto,
    seed: int,
    input_shapes: dict[str, tuple[int, ...]] | None,
    large: bool | None = None,
    path: Path | None = None,
    overrides: dict[str, np.ndarray] | None = None,
) -> Outputs:
    """Run the reference (``model``, or the file at ``path`` with ``overrides``) on seeded random
    input; symbolic spatial dims try 64, then 224; non-negative input when standard-normal input
    gives NaN/Inf outputs (and makes them finite). A model ONNX Runtime cannot build a session
    of is a UserError: no input shape would help."""
    last_error: Exception | None = None
    for spatial in SPATIAL_TRIES:
        tried: list[Outputs] = []
        for kind in INPUT_KINDS:
            feeds = random_inputs(
                model, np.random.default_rng(seed), input_shapes, spatial, kind != INPUT_KINDS[0]
            )
            try:
                names, outs = run(model if path is None else path, feeds, large, overrides)
            except SessionError as exc:
                raise UserError(f"ONNX Runtime cannot run the original model: {exc}") from None
            except Exception as exc:  # too small an input for this network: try a larger one
                last_error = exc
                break
            tried.append(Outputs(feeds, names, outs, kind))
            if all(_finite(v) for v in outs):
                return tried[-1]
        if tried:  # NaN/Inf whatever the input: compared where finite
            return tried[0]
    assert last_error is not None
    raise VerificationError(
        f"the original model does not run in ONNX Runtime on random input: {first_line(last_error)} "
        "(give --input-shape)"
    )


def _finite(value: np.ndarray) -> bool:
    return not np.issubdtype(value.dtype, np.floating) or bool(np.isfinite(value).all())


def result_outputs(
    result: onnx.ModelProto, feeds: dict[str, np.ndarray], large: bool | None = None,
    path: Path | None = None,
) -> tuple[list[str], list[np.ndarray]]:  # fmt: skip
    """Run the optimized model (from its written file when ``path`` is given)."""
    try:
        return run(result if path is None else path, feeds, large)
    except Exception as exc:
        raise VerificationError(
            f"the optimized model does not run in ONNX Runtime: {first_line(exc)}"
        ) from None


def same_signature(
    want_names: list[str], want: list[np.ndarray], got_names: list[str], got: list[np.ndarray]
) -> None:
    """Same output names in the same order, with the same dtypes and shapes."""
    if want_names != got_names:
        raise VerificationError(f"output names changed: {want_names} → {got_names}")
    for name, a, b in zip(want_names, got, want, strict=True):
        if a.dtype != b.dtype or a.shape != b.shape:
            raise VerificationError(
                f"output {name!r} changed: {b.dtype}{list(b.shape)} → {a.dtype}{list(a.shape)}"
            )


def check_outputs(
    want_names: list[str],
    want: list[np.ndarray],
    got_names: list[str],
    got: list[np.ndarray],
    reference: str = "the dense-equivalent model",
) -> Agreement:
    """The signature, then every float output within RTOL · scale + ATOL of the reference (NaN/Inf
    at the same places in both count as equal)."""
    same_signature(want_names, want, got_names, got)
    abs_max, rel_max = 0.0, 0.0
    smallest: tuple[str, float] | None = None
    for name, a, b in zip(want_names, got, want, strict=True):
        if a.size == 0 or not np.issubdtype(a.dtype, np.floating):
            continue
        d = close(b, a, f"output {name!r}", reference)
        abs_max = max(abs_max, d.max_abs_diff)
        rel_max = max(rel_max, d.max_abs_diff / d.scale if d.scale else d.max_abs_diff)
        if smallest is None or d.scale < smallest[1]:
            smallest = (name, d.scale)
    absolute = smallest is not None and RTOL * smallest[1] < ATOL
    return Agreement(abs_max, rel_max, "absolute" if absolute else "relative", smallest)


def close(want: np.ndarray, got: np.ndarray, what: str, reference: str) -> Difference:
    """``got`` within RTOL · scale + ATOL of ``want`` where both are finite, and NaN/Inf at the
    same places; else a ToleranceError naming ``what``."""
    fw, fg = np.isfinite(want), np.isfinite(got)
    same = np.isnan(want) & np.isnan(got) | (~fw & ~fg & (want == got))
    apart = int(np.count_nonzero((fw != fg) | (~fw & ~fg & ~same)))
    if apart:
        raise ToleranceError(
            f"{what}: {apart} values are NaN/Inf in one of it and {reference} but not in the other"
        )
    both = fw & fg
    d = difference(want[both], got[both])
    if not d.max_abs_diff <= RTOL * d.scale + ATOL:
        raise ToleranceError(
            f"{what} differs from {reference} by {d.max_abs_diff:.3g} (output scale {d.scale:.3g})"
        )
    return d


def check_subgraphs(
    result: onnx.ModelProto, replacements: list[Replacement], feeds: dict[str, np.ndarray]
) -> Agreement:
    """Each inserted subgraph on the result's value of its input tensor against one dense Conv
    with its dense-equivalent kernel (module docstring); a ToleranceError names the conv."""
    inputs = _intermediates(result, [r.input for r in replacements], feeds)
    opsets = list(result.opset_import)
    abs_max, rel_max = 0.0, 0.0
    for r in replacements:
        x = {r.input: inputs[r.input]}
        sub = onnx.helper.make_model(inserted_subgraph(result, r), opset_imports=opsets)
        sub.ir_version = result.ir_version
        dense = onnx.helper.make_model(_dense_conv(r), opset_imports=opsets)
        dense.ir_version = result.ir_version
        (want,) = run(dense, x)[1]
        (got,) = run(sub, x)[1]
        d = close(want, got, f"conv {r.name!r}: the inserted {r.real.design} subgraph",
                  "its dense-equivalent conv")  # fmt: skip
        abs_max = max(abs_max, d.max_abs_diff)
        rel_max = max(rel_max, d.max_abs_diff / d.scale if d.scale else d.max_abs_diff)
    return Agreement(abs_max, rel_max)


def _intermediates(
    model: onnx.ModelProto, names: list[str], feeds: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The values of tensors ``names`` in one run of ``model`` (added as outputs for the run)."""
    values = {n: feeds[n] for n in names if n in feeds}
    extra = [n for n in dict.fromkeys(names) if n not in values]
    outputs = model.graph.output
    kept = len(outputs)
    outputs.extend(onnx.helper.make_empty_tensor_value_info(n) for n in extra)
    try:
        got_names, got = run(model, feeds)
    finally:
        del outputs[kept:]
    values.update(dict(zip(got_names, got, strict=True)))
    return values


def _dense_conv(r: Replacement) -> onnx.GraphProto:
    """x → Conv(dense-equivalent kernel, bias) → y, the conv the subgraph must equal."""
    inits = [onnx.numpy_helper.from_array(twin_kernel(r), "w")]
    if r.bias is not None:
        inits.append(onnx.numpy_helper.from_array(r.bias.astype(np.float32), "b"))
    node = onnx.helper.make_node(
        "Conv", [r.input, "w", *(["b"] if r.bias is not None else [])], [r.output],
        **conv_attrs(r.real.spec),
    )  # fmt: skip
    x = onnx.helper.make_tensor_value_info(r.input, onnx.TensorProto.FLOAT, None)
    y = onnx.helper.make_tensor_value_info(r.output, onnx.TensorProto.FLOAT, None)
    return onnx.helper.make_graph([node], "dense", [x], [y], inits)
