"""``compare``: how far apart two models' outputs are on the same inputs (ONNX Runtime, CPU).

For every output (matched by name; both models must have the same outputs) over all samples:
``max_abs_diff`` and ``mean_abs_diff`` of ``b − a``; ``cosine`` = <a, b> / (|a|·|b|) of the
flattened outputs (all samples together); ``equal_fraction`` (integer and bool outputs only, e.g.
class indices or NMS picks, where a cosine means little) = the fraction of elements that are
equal; ``top1_agreement`` = the fraction of positions whose
argmax over the class axis is the same in A and B. The class axis is the one given for that
output (``class_axes``: output name → axis, ``""`` for every output), else axis 1 of a 2-D
``[N, C]`` output with C > 1; any other output has no top-1 (``None``): argmax over axis 1 of a
detector's ``[1, 4+C, anchors]`` or a sequence's ``[T, 1, C]`` means nothing.

``slices`` (output name → :class:`OutputSlice`) restrict an output to ``start:stop`` along one
axis before anything is measured (e.g. the class scores ``4:`` of a YOLO head's axis 1).

Inputs come from an .npz (keys = input names) or are ``samples`` seeded standard-normal draws,
one per run, at the model's input shape (symbolic dims: batch 1, others from ``input_shapes`` or
224). Memory is bounded: the samples are drawn and run one at a time, and only running sums are
kept per output (:class:`Accumulator`), never the outputs themselves; an .npz's arrays are run in
chunks of the model's fixed batch size when it has one. Sessions run with graph optimisations
disabled, one thread.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import onnx

from onnx_sk.errors import UserError
from onnx_sk.graph.load import load_model
from onnx_sk.graph.shapes import light_copy
from onnx_sk.options import check_seed
from onnx_sk.runtime.feeds import load_calibration, random_inputs, real_inputs
from onnx_sk.runtime.session import session

if TYPE_CHECKING:
    import onnxruntime


@dataclass(frozen=True)
class OutputSlice:
    """``output[..., start:stop, ...]`` along ``axis`` (Python slice semantics)."""

    axis: int
    start: int | None
    stop: int | None

    def apply(self, name: str, value: np.ndarray) -> np.ndarray:
        if not -value.ndim <= self.axis < value.ndim:
            raise UserError(
                f"--slice {name}: axis {self.axis} is out of range for an output of rank "
                f"{value.ndim}"
            )
        index = [slice(None)] * value.ndim
        index[self.axis] = slice(self.start, self.stop)
        out = value[tuple(index)]
        if out.size == 0:
            raise UserError(
                f"--slice {name}: {self.bounds} on axis {self.axis} of shape "
                f"{list(value.shape)} is empty"
            )
        return out

    @property
    def bounds(self) -> str:
        """``start:stop`` as written (an open end empty)."""
        return ":".join("" if v is None else str(v) for v in (self.start, self.stop))


@dataclass(frozen=True)
class OutputComparison:
    name: str
    shape: list
    max_abs_diff: float
    mean_abs_diff: float
    cosine: float
    top1_agreement: float | None
    class_axis: int | None = None
    slice: dict | None = None
    equal_fraction: float | None = None


@dataclass(frozen=True)
class Difference:
    """How far ``got`` is from ``want`` (float64): max and mean |got − want|, the cosine of the
    flattened tensors, and the output scale max |want|."""

    max_abs_diff: float
    mean_abs_diff: float
    cosine: float
    scale: float


def difference(want: np.ndarray, got: np.ndarray) -> Difference:
    """The :class:`Difference` of two arrays of the same shape (also used by verification)."""
    acc = Accumulator("")
    acc.add(want, got)
    return Difference(acc.max_abs, acc.mean_abs, acc.cosine, acc.scale)


class Accumulator:
    """Running sums of one output over the samples: enough for the max and mean |b − a|, the
    cosine of the concatenated outputs and the top-1 agreement, with nothing else kept."""

    def __init__(self, name: str, class_axis: int | None = None, auto_top1: bool = False):
        self.name, self.class_axis, self.auto_top1 = name, class_axis, auto_top1
        self.shape: list[int] | None = None
        self.count = 0
        self.largest = 0.0  # max |b − a| so far (finite values)
        self.finite = True  # every difference so far finite
        self.sum_abs = 0.0
        self.dot = self.norm_a = self.norm_b = 0.0
        self.scale = 0.0
        self.same_top1 = 0
        self.top1_positions = 0
        self.top1_axis: int | None = None
        self.exact = True
        self.discrete = False  # integer or bool outputs: equal_fraction is measured
        self.equal = self.elements = 0

    def add(self, a: np.ndarray, b: np.ndarray) -> None:
        if a.shape != b.shape:
            raise UserError(
                f"output {self.name!r} has shape {list(a.shape)} in A but {list(b.shape)} in B"
            )
        self._shape(a)
        if a.dtype.kind not in "biuf":  # strings, complex: equal or not
            self.exact = self.exact and bool(np.array_equal(a, b))
            self.largest = self.largest if self.exact else float("inf")
            return
        if a.dtype.kind in "biu":
            self.discrete = True
            self.equal += int(np.count_nonzero(a == b))
            self.elements += a.size
        a64, b64 = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
        diff = np.abs(b64 - a64)
        if diff.size:
            self.finite = self.finite and bool(np.isfinite(diff).all())
            self.largest = max(self.largest, float(np.nanmax(diff)) if self.finite else 0.0)
            self.scale = max(self.scale, float(np.max(np.abs(a64))))
        self.sum_abs += float(diff.sum())
        self.count += diff.size
        self.dot += float(a64 @ b64)
        self.norm_a += float(a64 @ a64)
        self.norm_b += float(b64 @ b64)
        self.exact = self.exact and bool(np.array_equal(a64, b64))
        axis = self._top1_axis(a)
        if axis is not None:
            self.top1_axis = axis % a.ndim
            same = np.argmax(a, axis=axis) == np.argmax(b, axis=axis)
            self.same_top1 += int(np.count_nonzero(same))
            self.top1_positions += same.size

    def _shape(self, a: np.ndarray) -> None:
        """The shape of the outputs concatenated along axis 0."""
        if self.shape is None:
            self.shape = list(a.shape)
        elif a.ndim and self.count:
            self.shape[0] += a.shape[0]

    def _top1_axis(self, a: np.ndarray) -> int | None:
        if self.class_axis is not None:
            if not -a.ndim <= self.class_axis < a.ndim:
                raise UserError(
                    f"--class-axis {self.class_axis} is out of range for output {self.name!r} "
                    f"of shape {list(a.shape)}"
                )
            return self.class_axis
        if self.auto_top1 and a.ndim == 2 and a.shape[1] > 1:
            return 1
        return None

    @property
    def max_abs(self) -> float:
        """max |b − a|; NaN once a difference was not finite (NaN or Inf in an output)."""
        return self.largest if self.finite else float("nan")

    @property
    def mean_abs(self) -> float:
        return self.sum_abs / self.count if self.count else 0.0

    @property
    def cosine(self) -> float:
        norm = float(np.sqrt(self.norm_a) * np.sqrt(self.norm_b))
        return self.dot / norm if norm else float(self.exact)

    @property
    def equal_fraction(self) -> float | None:
        """The fraction of equal elements of an integer or bool output (None for floats)."""
        if not self.discrete:
            return None
        return self.equal / self.elements if self.elements else 1.0

    @property
    def top1(self) -> float | None:
        return self.same_top1 / self.top1_positions if self.top1_positions else None


def _class_axis(class_axes: dict[str, int], name: str) -> int | None:
    return class_axes.get(name, class_axes.get(""))


def compare_runs(
    a: onnx.ModelProto | str | os.PathLike,
    b: onnx.ModelProto | str | os.PathLike,
    feeds: Iterator[dict[str, np.ndarray]],
    class_axes: dict[str, int] | None = None,
    slices: dict[str, OutputSlice] | None = None,
    top1: bool = True,
    threads: int = 1,
) -> list[OutputComparison]:
    """Run ``a`` and ``b`` on every feed of ``feeds`` (one at a time) and accumulate the
    comparison of each output; ``top1=False`` leaves top-1 out unless a class axis is given;
    ``threads``: intra-op threads of both sessions (0: all cores)."""
    class_axes, slices = class_axes or {}, slices or {}
    sa, sb = _session(a, threads), _session(b, threads)
    names = [o.name for o in sa.get_outputs()]
    names_b = [o.name for o in sb.get_outputs()]
    if names != names_b:
        raise UserError(f"the models have different outputs: {names} vs {names_b}")
    _check_names(names, class_axes, "--class-axis")
    _check_names(names, slices, "--slice")
    accs = [Accumulator(n, _class_axis(class_axes, n), top1) for n in names]
    for feed in feeds:
        outs_a, outs_b = _run(sa, feed), _run(sb, feed)
        for acc, x, y in zip(accs, outs_a, outs_b, strict=True):
            s = slices.get(acc.name)
            if s is not None:
                x, y = s.apply(acc.name, x), s.apply(acc.name, y)
            acc.add(x, y)
        del outs_a, outs_b
    return [
        OutputComparison(
            acc.name, acc.shape or [], acc.max_abs, acc.mean_abs, acc.cosine, acc.top1,
            acc.top1_axis,
            asdict(slices[acc.name]) if acc.name in slices else None, acc.equal_fraction,
        )
        for acc in accs
    ]  # fmt: skip


def compare_outputs(
    names: list[str], want: list[np.ndarray], got: list[np.ndarray]
) -> list[OutputComparison]:
    """The comparison of one run's outputs (``want`` from A, ``got`` from B), top-1 for 2-D
    ``[N, C]`` outputs only."""
    rows = []
    for name, a, b in zip(names, want, got, strict=True):
        acc = Accumulator(name, auto_top1=True)
        acc.add(a, b)
        rows.append(
            OutputComparison(
                name, acc.shape or [], acc.max_abs, acc.mean_abs, acc.cosine, acc.top1,
                acc.top1_axis, equal_fraction=acc.equal_fraction,
            )
        )  # fmt: skip
    return rows


def _check_names(names: list[str], given: dict, flag: str) -> None:
    unknown = [n for n in given if n and n not in names]
    if unknown:
        raise UserError(
            f"{flag} names output {unknown[0]!r}, which the models do not have "
            f"(outputs: {', '.join(names)})"
        )


def _session(
    model: onnx.ModelProto | str | os.PathLike, threads: int = 1
) -> onnxruntime.InferenceSession:
    try:
        return session(model, opt_level="disabled", threads=threads)
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"a model does not load in ONNX Runtime: {_first_line(exc)}") from None


def _run(sess: onnxruntime.InferenceSession, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    try:
        return sess.run(None, feed)
    except Exception as exc:
        raise UserError(
            f"a model does not run in ONNX Runtime on these inputs: {_first_line(exc)}"
        ) from None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def random_feeds(
    model: onnx.ModelProto, samples: int, seed: int, input_shapes: dict | None, spatial: int = 224
) -> Iterator[dict[str, np.ndarray]]:
    """``samples`` seeded random feeds, drawn one at a time from one generator."""
    rng = np.random.default_rng(seed)
    for _ in range(samples):
        yield random_inputs(model, rng, input_shapes, spatial)


def file_feeds(
    path: str | os.PathLike, model: onnx.ModelProto, flag: str = "--inputs"
) -> Iterator[dict[str, np.ndarray]]:
    """The arrays of an .npz, in chunks of the model's fixed batch size along axis 0 when every
    input has the same fixed batch and the arrays hold a whole number of such batches (so a
    batch-1 model runs on a file of N samples); else the arrays in one run."""
    arrays = load_calibration(path, model, flag)
    batch = _fixed_batch(model)
    rows = {a.shape[0] if a.ndim else None for a in arrays.values()}
    if batch is None or len(rows) != 1 or None in rows:
        yield arrays
        return
    (n,) = rows
    if n is None or n == batch or n % batch:
        yield arrays
        return
    for start in range(0, n, batch):
        yield {k: v[start : start + batch] for k, v in arrays.items()}


def _fixed_batch(model: onnx.ModelProto) -> int | None:
    batches = set()
    for vi in real_inputs(model):
        dims = vi.type.tensor_type.shape.dim
        if not dims or not dims[0].HasField("dim_value") or dims[0].dim_value <= 0:
            return None
        batches.add(dims[0].dim_value)
    return batches.pop() if len(batches) == 1 else None


def compare(
    a: str | os.PathLike | onnx.ModelProto,
    b: str | os.PathLike | onnx.ModelProto,
    inputs: str | os.PathLike | None = None,
    samples: int = 8,
    seed: int = 0,
    input_shapes: dict | None = None,
    class_axes: dict[str, int] | list[str] | None = None,
    slices: dict[str, OutputSlice] | list[str] | None = None,
) -> list[OutputComparison]:
    """Compare the outputs of models ``a`` and ``b`` on the same inputs, output by output.

    ``class_axes`` and ``slices`` take the command line's forms too (``["logits:1"]``,
    ``["boxes:1:4:"]``)."""
    if isinstance(class_axes, list):
        class_axes = parse_class_axes(class_axes)
    if isinstance(slices, list):
        slices = parse_slices(slices)
    if samples < 1:
        raise UserError(f"--samples {samples}: expected a positive integer")
    check_seed(seed)
    la, lb = load_model(a), load_model(b)
    assert la.model is not None and lb.model is not None
    graph = light_copy(la.model)  # what the feeds need (inputs), without the weights
    if inputs is not None:
        feeds = file_feeds(inputs, graph)
    else:
        feeds = random_feeds(graph, samples, seed, input_shapes)
    # from a file, ONNX Runtime reads it again: the loaded copies can go before the sessions open
    model_a = la.path if la.path is not None else la.model
    model_b = lb.path if lb.path is not None else lb.model
    del la, lb
    return compare_runs(model_a, model_b, feeds, class_axes, slices)


def parse_class_axes(items: list[str] | None) -> dict[str, int]:
    """``["1"]`` → every output's class axis is 1; ``["logits:-1"]`` → only that output's."""
    out: dict[str, int] = {}
    for item in items or []:
        name, _, axis = item.rpartition(":")
        try:
            out[name] = int(axis)
        except ValueError:
            raise UserError(
                f"--class-axis {item!r}: expected AXIS or OUTPUT:AXIS (an integer axis)"
            ) from None
    return out


def parse_slices(items: list[str] | None) -> dict[str, OutputSlice]:
    """``["boxes:1:4:"]`` → output ``boxes`` restricted to ``4:`` along axis 1."""
    out: dict[str, OutputSlice] = {}
    for item in items or []:
        parts = item.rsplit(":", 3)
        try:
            if len(parts) != 4 or not parts[0]:
                raise ValueError
            name, axis, start, stop = parts
            bounds = [int(v) if v.strip() else None for v in (start, stop)]
            out[name] = OutputSlice(int(axis), bounds[0], bounds[1])
        except ValueError:
            raise UserError(
                f"--slice {item!r}: expected OUTPUT:AXIS:START:STOP (START or STOP may be empty)"
            ) from None
    return out


def to_dict(rows: list[OutputComparison]) -> dict:
    return {"outputs": [asdict(r) for r in rows]}
