"""The numeric half of verification: the result against a reference, in ONNX Runtime.

The reference is the *dense twin* (:mod:`onnx_sk.graph.twin`: the original graph with each
replaced conv's kernel swapped for its SK design's dense-equivalent kernel) or, for widening
that keeps the function, the model before widening. Both run on the CPU provider with graph
optimisations disabled, on the same seeded random input (``random_inputs``; symbolic spatial
dims try 64, then 224, unless ``--input-shape`` fixes them): same output names, order, dtypes
and shapes, and the same values up to float32 rounding, ``max |a − b| ≤ RTOL · max |b| + ATOL``.
The designs are linear, so this checks every rewrite numerically, whole-model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from onnx_sk.errors import VerificationError
from onnx_sk.graph.checks import first_line
from onnx_sk.runtime.compare import difference
from onnx_sk.runtime.feeds import random_inputs
from onnx_sk.runtime.session import release_memory, session

#: graph optimisations disabled: the twin's kernels are session initializer overrides, and ORT
#: (1.32) silently ignores an override once a fusion (Conv+BN, NCHWc) has rewritten that weight
VERIFY_OPT_LEVEL = "disabled"
RTOL = 1e-3
ATOL = 1e-5
#: symbolic spatial dims of the verification input, tried in order
SPATIAL_TRIES = (64, 224)


@dataclass(frozen=True)
class Outputs:
    """A model's outputs on ``feeds``: the reference a result is compared with."""

    feeds: dict[str, np.ndarray]
    names: list[str]
    values: list[np.ndarray]

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
    """Output names and values of one run (a one-shot session: its memory is given back)."""
    sess = session(
        model, opt_level=VERIFY_OPT_LEVEL, threads=0, large=large, overrides=overrides, arena=False
    )
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
    input; symbolic spatial dims try 64, then 224."""
    last_error: Exception | None = None
    for spatial in SPATIAL_TRIES:
        feeds = random_inputs(model, np.random.default_rng(seed), input_shapes, spatial)
        try:
            names, outs = run(model if path is None else path, feeds, large, overrides)
            return Outputs(feeds, names, outs)
        except Exception as exc:  # too small an input for this network: try a larger one
            last_error = exc
    assert last_error is not None
    raise VerificationError(
        f"the original model does not run in ONNX Runtime on random input: {first_line(last_error)} "
        "(give --input-shape)"
    )


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
    want_names: list[str], want: list[np.ndarray], got_names: list[str], got: list[np.ndarray]
) -> Agreement:
    """The signature, then every float output within RTOL · scale + ATOL of the reference."""
    same_signature(want_names, want, got_names, got)
    abs_max, rel_max = 0.0, 0.0
    smallest: tuple[str, float] | None = None
    for name, a, b in zip(want_names, got, want, strict=True):
        if a.size == 0 or not np.issubdtype(a.dtype, np.floating):
            continue
        d = difference(b, a)
        diff, scale = d.max_abs_diff, d.scale
        abs_max, rel_max = max(abs_max, diff), max(rel_max, diff / scale if scale else diff)
        if smallest is None or scale < smallest[1]:
            smallest = (name, scale)
        if not diff <= RTOL * scale + ATOL:
            raise VerificationError(
                f"output {name!r} differs from the dense-equivalent model by {diff:.3g} "
                f"(output scale {scale:.3g})"
            )
    absolute = smallest is not None and RTOL * smallest[1] < ATOL
    return Agreement(abs_max, rel_max, "absolute" if absolute else "relative", smallest)
