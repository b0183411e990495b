"""Receptive-field patches of a conv's input (im2col), for fitting SK weights to real activations.

From an input activation ``x  # [N, C, H, W]`` up to ``max_patches`` output positions are drawn
(seeded, without replacement, in increasing order) and the receptive field of each, with the
conv's ``pads`` (``auto_pad`` resolved as ONNX does: SAME_UPPER puts the odd pixel at the end),
``strides`` and ``dilations``, becomes one column of ``L  # [C·kh·kw, P]``, scaled by 1/sqrt(P),
so ``||E·L||_F²`` is the mean squared output error of a kernel error ``E  # [c_out, C·kh·kw]``.

This module imports numpy and the standard library only.
"""

from __future__ import annotations

import math

import numpy as np

from onnx_sk.maths.spec import ConvSpec


def pads(spec: ConvSpec, h: int, w: int) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) padding of a 2-D conv on an h×w input, ``auto_pad`` resolved."""
    if spec.auto_pad == "VALID":
        return 0, 0, 0, 0
    if spec.auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        per_axis = []
        for size, s, ek in zip((h, w), spec.strides, spec.effective_kernel, strict=False):
            total = max(0, (math.ceil(size / s) - 1) * s + ek - size)
            small, big = total // 2, total - total // 2
            per_axis.append((small, big) if spec.auto_pad == "SAME_UPPER" else (big, small))
        return per_axis[0][0], per_axis[1][0], per_axis[0][1], per_axis[1][1]
    top, left, bottom, right = spec.pads
    return top, left, bottom, right


def patches(
    spec: ConvSpec,
    x: np.ndarray,
    max_patches: int,
    rng: np.random.Generator,
    normalise: bool = True,
) -> np.ndarray:
    """``L  # [C·kh·kw, P]``: P seeded receptive fields of x [N, C, H, W], divided by sqrt(P)
    (``normalise=False``: not divided, for a caller that joins the patches of several batches)."""
    n, c, h, w = x.shape
    top, left, bottom, right = pads(spec, h, w)
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (top, bottom), (left, right)))
    (kh, kw), (sh, sw), (dh, dw) = spec.kernel_shape, spec.strides, spec.dilations
    ho = (xp.shape[2] - spec.effective_kernel[0]) // sh + 1
    wo = (xp.shape[3] - spec.effective_kernel[1]) // sw + 1
    total = n * ho * wo
    pick = np.sort(rng.choice(total, size=min(max_patches, total), replace=False))
    b, oy, ox = pick // (ho * wo), (pick // wo) % ho, pick % wo
    ys = oy[:, None] * sh + (np.arange(kh) * dh).repeat(kw)[None, :]  # [P, S]
    xs = ox[:, None] * sw + np.tile(np.arange(kw) * dw, kh)[None, :]
    cols = xp[b[:, None, None], np.arange(c)[None, :, None], ys[:, None, :], xs[:, None, :]]
    cols = cols.reshape(pick.size, c * kh * kw).T  # [C·S, P]
    return cols / math.sqrt(pick.size) if normalise else cols
