"""Synthetic image-like inputs for the benchmarks (no image dataset ships with onnx-sk): per
channel a random field blurred at several scales (neighbouring pixels correlate, as in photos),
mapped to [0, 1] and normalised with ImageNet's mean and std, as torchvision's models expect.
Deterministic for a seed."""

from __future__ import annotations

import numpy as np

MEAN = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]
STD = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]


def _blur(x: np.ndarray, k: int) -> np.ndarray:
    """Box blur of ``x  # [..., H, W]`` with a k×k window (edges wrap)."""
    out = x.copy()
    for axis in (-2, -1):
        acc = np.zeros_like(out)
        for s in range(-(k // 2), k // 2 + 1):
            acc += np.roll(out, s, axis=axis)
        out = acc / k
    return out


def image_like(n: int, size: int = 224, seed: int = 0) -> np.ndarray:
    """``n`` samples ``[n, 3, size, size]`` float32, ImageNet-normalised."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 3, size, size), np.float32)
    for k, weight in ((31, 1.0), (9, 0.5), (3, 0.25)):
        field = rng.standard_normal((n, 3, size, size)).astype(np.float32)
        field += rng.standard_normal((n, 1, size, size)).astype(np.float32)  # shared: colour
        x += weight * _blur(field, k) * np.sqrt(k)
    lo = x.min(axis=(1, 2, 3), keepdims=True)
    hi = x.max(axis=(1, 2, 3), keepdims=True)
    return ((x - lo) / (hi - lo) - MEAN) / STD
