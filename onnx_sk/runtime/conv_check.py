"""Conv by conv verification, for results whose whole-model dense twin does not fit in memory.

Each replaced conv's inserted subgraph runs alone in ONNX Runtime (graph optimisations
disabled) beside a dense ``Conv`` holding the dense equivalent of its stages on ``R`` output
channels (:func:`onnx_sk.graph.probe.probe_model`), on seeded random input
``x [1, c_in, H, W]`` at the conv's own spatial size (``FALLBACK_SPATIAL`` when it is symbolic):
every one of the ``R`` channels within ``RTOL · max |ref| + ATOL``
(:mod:`onnx_sk.runtime.verify`'s tolerance). ``R`` is every output channel when the reference
costs at most ``ROW_MACS`` multiply-adds, else as many as fit (at least ``MIN_ROWS``), drawn
without replacement from the seeded generator. Memory: one probe at a time, the reference
kernel at most ``R · c_in · kh · kw`` floats.

This is how ``--mode widen --widen-init he`` is verified (with the checker, the information
fields and the whole model's output signature against the original): its widened dense twin
would hold ~30× the parameters of the model written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx

from onnx_sk.errors import VerificationError
from onnx_sk.graph.build import Replacement
from onnx_sk.graph.checks import first_line
from onnx_sk.graph.index import ConstantIndex
from onnx_sk.graph.probe import probe_model
from onnx_sk.runtime.compare import difference
from onnx_sk.runtime.verify import ATOL, RTOL, run

#: multiply-adds of one conv's reference above which its output channels are sampled
ROW_MACS = 1 << 27
MIN_ROWS = 16
#: the spatial size of the probe input when the conv's input size is symbolic
FALLBACK_SPATIAL = 16


@dataclass(frozen=True)
class ConvCheck:
    """What the conv by conv check compared: convs, channels (of how many), worst differences."""

    convs: int
    channels: int
    channels_total: int
    max_abs_diff: float
    max_rel_diff: float


def probe_spatial(r: Replacement, in_spatial: tuple[int, ...] | None) -> tuple[int, ...]:
    """The conv's input size, or ``FALLBACK_SPATIAL`` (at least the dilated kernel) when unknown."""
    if in_spatial is not None:
        return in_spatial
    spec = r.real.spec
    dil = spec.dilations or (1,) * len(spec.kernel_shape)
    return tuple(
        max(FALLBACK_SPATIAL, (k - 1) * d + 1) for k, d in zip(spec.kernel_shape, dil, strict=True)
    )


def sample_rows(r: Replacement, spatial: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Every output channel, or a seeded sample when the reference would cost over ROW_MACS."""
    spec = r.real.spec
    strides = spec.strides or (1,) * len(spatial)
    out_pixels = math.prod(-(-n // s) for n, s in zip(spatial, strides, strict=True))
    per_row = spec.c_in * math.prod(spec.kernel_shape) * max(1, out_pixels)
    n = min(spec.c_out, max(MIN_ROWS, ROW_MACS // per_row))
    if n >= spec.c_out:
        return np.arange(spec.c_out)
    return np.sort(rng.choice(spec.c_out, n, replace=False))


def check_convs(
    result: onnx.ModelProto,
    replacements: list[Replacement],
    in_spatial: dict[str, tuple[int, ...] | None],
    seed: int,
) -> ConvCheck:
    """Every replacement against its dense equivalent, alone (module docstring); raises
    :class:`~onnx_sk.errors.VerificationError` naming the first conv that differs."""
    rng = np.random.default_rng(seed)
    consts = ConstantIndex(result.graph)
    channels = total = 0
    abs_max = rel_max = 0.0
    for r in replacements:
        spatial = probe_spatial(r, in_spatial.get(r.output))
        rows = sample_rows(r, spatial, rng)
        x = rng.standard_normal((1, r.real.spec.c_in, *spatial)).astype(np.float32)
        try:
            probe, ref = probe_model(result, consts, r, rows, spatial)
        except ValueError as exc:
            raise VerificationError(
                f"the inserted subgraph cannot be checked alone: {exc}"
            ) from None
        try:
            names, outs = run(probe, {r.input: x})
        except Exception as exc:
            raise VerificationError(
                f"conv {r.name!r}: the inserted {r.real.design} subgraph does not run alone in "
                f"ONNX Runtime: {first_line(exc)}"
            ) from None
        got, want = outs[names.index(r.output)][:, rows], outs[names.index(ref)]
        if got.shape != want.shape:
            raise VerificationError(
                f"conv {r.name!r}: the inserted {r.real.design} subgraph gives shape "
                f"{list(got.shape)}, its dense equivalent {list(want.shape)}"
            )
        d = difference(want, got)
        if not d.max_abs_diff <= RTOL * d.scale + ATOL:
            raise VerificationError(
                f"conv {r.name!r}: the inserted {r.real.design} subgraph differs from its dense "
                f"equivalent by {d.max_abs_diff:.3g} (output scale {d.scale:.3g})"
            )
        abs_max = max(abs_max, d.max_abs_diff)
        rel_max = max(rel_max, d.max_abs_diff / d.scale if d.scale else d.max_abs_diff)
        channels, total = channels + len(rows), total + r.real.spec.c_out
    return ConvCheck(len(replacements), channels, total, abs_max, rel_max)
