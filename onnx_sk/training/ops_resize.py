"""Resize (opsets 10-19) and Upsample (7-9) as torch rules, one axis at a time (every mode is separable).

Output size per axis: ``sizes`` if given (then s = out / in; opset 18's ``keep_aspect_ratio_policy``
not_larger / not_smaller uses one s = min / max of those and out = round(s · in)), else
out = ⌊in · s⌋ with the given ``scales`` s. Each output coordinate x maps to an input
coordinate x′ (float32, as ONNX Runtime computes it):

    half_pixel            (x + ½)/s − ½          pytorch_half_pixel  the same, 0 when out = 1
    asymmetric            x/s                    align_corners       x·(in − 1)/(out − 1), 0 when out = 1
    half_pixel_symmetric  c·(1 − out/(s·in)) + (x + ½)/s − ½, c = in/2
    tf_crop_and_resize    r₀·(in − 1) + x·(r₁ − r₀)·(in − 1)/(out − 1)   (roi r; out-of-range x′
                          gives ``extrapolation_value``; no roi: r = (0, 1))

nearest takes ``nearest_mode`` of x′ (round_prefer_floor, round_prefer_ceil, floor, ceil),
clamped to [0, in − 1]; linear interpolates between ⌊x′⌋ and ⌊x′⌋ + 1 with x′ clamped to
[0, in − 1]; cubic uses the four taps ⌊x′⌋ − 1 … ⌊x′⌋ + 2 (indices clamped, or with
``exclude_outside`` the outside taps dropped and the weights renormalised) with Keys' kernel of
parameter ``cubic_coeff_a`` (−0.75). Resize-10 and Upsample use asymmetric coordinates and
nearest x′ truncated (⌈x′⌉ when downsampling).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from onnx_sk.training.registry import Attrs, Interpreter, Node, Value, floats, ints, op

_MODES = ("nearest", "linear", "cubic", "bilinear")
_COORDS = (
    "half_pixel",
    "half_pixel_symmetric",
    "pytorch_half_pixel",
    "align_corners",
    "asymmetric",
    "tf_crop_and_resize",
    "tf_half_pixel_for_nn",
)


def _check(a: Attrs) -> str | None:
    if a.get("mode", "nearest") not in _MODES:
        return f"mode {a['mode']!r}"
    if a.get("coordinate_transformation_mode", "half_pixel") not in _COORDS:
        return f"coordinate_transformation_mode {a['coordinate_transformation_mode']!r}"
    if a.get("antialias", 0):
        return "antialias 1"
    return None


def _source(
    x: np.ndarray, n_in: int, n_out: int, s: np.float32, mode: str, roi: tuple[float, float] | None
) -> np.ndarray:
    """x′ for output coordinates x (float32)."""
    one, half = np.float32(1), np.float32(0.5)
    if mode in ("half_pixel", "pytorch_half_pixel"):
        if mode == "pytorch_half_pixel" and n_out == 1:
            return np.zeros_like(x)
        return (x + half) / s - half
    if mode == "half_pixel_symmetric":
        adjust = np.float32(n_out) / (s * np.float32(n_in))
        offset = np.float32(n_in) / 2 * (one - adjust)
        return offset + (x + half) / s - half
    if mode == "align_corners":
        return np.zeros_like(x) if n_out == 1 else x * np.float32(n_in - 1) / np.float32(n_out - 1)
    if mode == "tf_half_pixel_for_nn":
        return (x + half) / s
    if mode == "tf_crop_and_resize":
        begin, end = roi if roi is not None else (0.0, 1.0)  # no roi: the whole axis (as ORT)
        r0, r1 = np.float32(begin), np.float32(end)
        if n_out == 1:
            return np.full_like(x, (r1 - r0) * np.float32(n_in - 1) / 2 + r0 * np.float32(n_in - 1))
        return r0 * np.float32(n_in - 1) + x * (r1 - r0) * np.float32(n_in - 1) / np.float32(
            n_out - 1
        )
    return x / s  # asymmetric


def _nearest(xs: np.ndarray, how: str, down: bool) -> np.ndarray:
    if how == "simple":
        return np.ceil(xs) if down else np.trunc(xs)
    if how == "floor":
        return np.floor(xs)
    if how == "ceil":
        return np.ceil(xs)
    frac = xs - np.floor(xs)
    tie = np.floor(xs) if how == "round_prefer_floor" else np.ceil(xs)
    return np.where(frac == np.float32(0.5), tie, np.floor(xs + np.float32(0.5)))


def _cubic_weights(t: np.ndarray, coeff: float) -> np.ndarray:
    """Keys' kernel at distances 1 + t, t, 1 − t, 2 − t: [len(t), 4]."""
    a = np.float32(coeff)

    def near(d: np.ndarray) -> np.ndarray:
        return ((a + 2) * d - (a + 3)) * d * d + 1

    def far(d: np.ndarray) -> np.ndarray:
        return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a

    return np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=1)


def _axis(
    x: torch.Tensor, ax: int, n_out: int, s: np.float32, a: Attrs, roi: tuple[float, float] | None
) -> torch.Tensor:
    n_in = int(x.shape[ax])
    coord = a.get("coordinate_transformation_mode", "half_pixel")
    xs = _source(np.arange(n_out, dtype=np.float32), n_in, n_out, np.float32(s), coord, roi)
    mode = a.get("mode", "nearest")
    shape = [1] * x.dim()
    shape[ax] = n_out
    dev = x.device
    if mode == "nearest":
        idx = _nearest(xs, a.get("nearest_mode", "round_prefer_floor"), bool(s < 1))
        idx = np.clip(idx, 0, n_in - 1).astype(np.int64)
        y = torch.index_select(x, ax, torch.from_numpy(idx).to(dev))
    elif mode == "cubic":
        base = np.floor(xs)
        w = _cubic_weights((xs - base).astype(np.float32), a.get("cubic_coeff_a", -0.75))
        taps = base.astype(np.int64)[:, None] + np.arange(-1, 3)[None, :]
        if a.get("exclude_outside", 0):
            w = np.where((taps >= 0) & (taps < n_in), w, 0)
            w = w / w.sum(axis=1, keepdims=True)
        taps = np.clip(taps, 0, n_in - 1)
        y = torch.zeros((), dtype=x.dtype, device=dev)  # the taps' sum starts at 0
        for j in range(4):
            wj = torch.from_numpy(w[:, j].astype(np.float32)).to(dev, x.dtype).reshape(shape)
            y = y + torch.index_select(x, ax, torch.from_numpy(taps[:, j]).to(dev)) * wj
    else:
        xc = np.clip(xs, 0, n_in - 1)
        lo = np.floor(xc).astype(np.int64)
        hi = np.minimum(lo + 1, n_in - 1)
        frac = torch.from_numpy((xc - lo).astype(np.float32)).to(dev, x.dtype).reshape(shape)
        y0 = torch.index_select(x, ax, torch.from_numpy(lo).to(dev))
        y1 = torch.index_select(x, ax, torch.from_numpy(hi).to(dev))
        y = y0 * (1 - frac) + y1 * frac
    if coord == "tf_crop_and_resize":
        outside = torch.from_numpy((xs < 0) | (xs > n_in - 1)).to(dev).reshape(shape)
        y = torch.where(outside, torch.full_like(y, a.get("extrapolation_value", 0.0)), y)
    return y


def _resize(
    x: torch.Tensor,
    a: Attrs,
    axes: list[int],
    scales: list[float] | None,
    sizes: list[int] | None,
    roi: list[float] | None,
) -> torch.Tensor:
    n_in = [int(x.shape[ax]) for ax in axes]
    if sizes is not None:
        f32 = [np.float32(o) / np.float32(i) for o, i in zip(sizes, n_in, strict=True)]
        policy = a.get("keep_aspect_ratio_policy", "stretch")
        if policy != "stretch":
            one = min(f32) if policy == "not_larger" else max(f32)
            f32 = [one] * len(axes)
            sizes = [int(math.floor(float(one) * i + 0.5)) for i in n_in]
    else:
        assert scales is not None
        f32 = [np.float32(s) for s in scales]
        sizes = [int(np.float32(i) * s) for i, s in zip(n_in, f32, strict=True)]
    for k, (ax, n_out, s) in enumerate(zip(axes, sizes, f32, strict=True)):
        if (
            n_out == x.shape[ax]
            and s == 1
            and a.get("coordinate_transformation_mode") != ("tf_crop_and_resize")
        ):
            continue
        x = _axis(x, ax, n_out, s, a, None if roi is None else (roi[k], roi[k + len(axes)]))
    return x


@op("Resize", host=(1, 2, 3), check=_check)
def _resize_op(
    m: Interpreter,
    node: Node,
    a: Attrs,
    x: torch.Tensor,
    roi: Value | None = None,
    scales: Value | None = None,
    sizes: Value | None = None,
) -> torch.Tensor:
    if m.opset < 11:  # Resize-10: (X, scales), asymmetric, truncated nearest
        a = {**a, "coordinate_transformation_mode": "asymmetric", "nearest_mode": "simple"}
        scales, roi = roi, None
    axes = [ax % x.dim() for ax in a.get("axes", range(x.dim()))]
    sizes_ = ints(sizes) if sizes is not None and np.size(sizes) else None
    scales_ = floats(scales) if scales is not None and np.size(scales) else None
    roi_ = floats(roi) if roi is not None and np.size(roi) else None
    if roi_ is not None and len(roi_) == 2 * x.dim() and len(axes) < x.dim():
        roi_ = [roi_[ax] for ax in axes] + [roi_[ax + x.dim()] for ax in axes]
    return _resize(x, a, axes, scales_, sizes_, roi_)


@op("Upsample", host=(1,), check=_check)
def _upsample(
    m: Interpreter, node: Node, a: Attrs, x: torch.Tensor, scales: Value | None = None
) -> torch.Tensor:
    s = floats(scales) if scales is not None else list(a["scales"])  # opset 7: an attribute
    mode = "linear" if a.get("mode", "nearest") in ("linear", "bilinear") else "nearest"
    a = {"mode": mode, "coordinate_transformation_mode": "asymmetric", "nearest_mode": "simple"}
    return _resize(x, a, list(range(x.dim())), s, None, None)
