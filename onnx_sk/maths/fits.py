"""Fits computed once: ``approx.fit`` results and their errors, memoised per distinct input.

A fit is a pure function of the realisation (design, stages, groups, bottleneck), the kernel
``weight  # [c_out, c_in // group, kh, kw]`` and the target (BN row scale, calibration patches):
it draws no random numbers (``approx``'s docstring). So its result is keyed by the realisation
and digests of the arrays' bytes, shapes and dtypes, and computed once per run even when several
passes ask for it (the error budget screens and chooses, init-weights then prepares the chosen
realisation) or several convs share a kernel.

A :class:`Fit` holds the stage weights and the relative errors of their dense equivalent
(``approx.relative_errors``: weight error, output error or None), exactly as computed by
:func:`fit_with_errors`; the cache hands back the same objects (callers must not modify them).

This module imports numpy and the standard library only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from onnx_sk.maths.approx import Target, fit, relative_errors
from onnx_sk.maths.designs import Realisation, dense_equivalent


@dataclass(frozen=True)
class Fit:
    """One realisation fitted to one kernel and target."""

    weights: list[np.ndarray]  # one per stage, [c_out, c_in // group, kh, kw] of that stage
    weight_error: float
    output_error: float | None  # None without calibration patches

    @property
    def error(self) -> float:
        """The error ``--max-error`` compares with τ: the output error when there is one."""
        return self.weight_error if self.output_error is None else self.output_error


def fit_with_errors(real: Realisation, weight: np.ndarray, target: Target | None) -> Fit:
    """``approx.fit`` and the relative errors of the fitted chain's dense equivalent."""
    weights = fit(real, weight, target)
    werr, oerr = relative_errors(weight, dense_equivalent(real.stages, weights), target)
    return Fit(weights, werr, oerr)


def digest(array: np.ndarray | None) -> str:
    """A digest of an array's dtype, shape and bytes ('' for None)."""
    if array is None:
        return ""
    a = np.ascontiguousarray(array)
    h = hashlib.blake2b(digest_size=20)
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.data)  # C-contiguous: hashlib reads the buffer as bytes
    return h.hexdigest()


def target_digest(target: Target | None) -> str:
    if target is None:
        return "none"
    return f"{digest(target.row_scale)}/{digest(target.patches)}"


#: (what of the realisation the fit depends on, kernel digest, target digest)
FitKey = tuple[tuple, str, str]


def fit_identity(real: Realisation) -> tuple:
    """What of a realisation its fit depends on: the design and its stages (channels, groups,
    shuffles), never the conv's name, strides or pads (the kernel's shape is in its digest)."""
    return (real.design, real.stages, real.groups, real.bottleneck)


class FitCache:
    """Fits by (realisation, kernel digest, target digest)."""

    def __init__(self) -> None:
        self._fits: dict[FitKey, Fit] = {}
        self.computed = 0  # fits computed through it (tests and the bench count them)

    def of(self, weight: np.ndarray, target: Target | None) -> KernelFits:
        """The fits of one kernel and target (their digests computed once, here)."""
        return KernelFits(self, weight, target, digest(weight), target_digest(target))

    def put(self, key: FitKey, result: Fit) -> None:
        """Record a fit computed elsewhere (a worker process)."""
        self._fits[key] = result

    def __len__(self) -> int:
        return len(self._fits)


@dataclass(frozen=True)
class KernelFits:
    """A :class:`FitCache` seen from one kernel and target."""

    cache: FitCache
    weight: np.ndarray
    target: Target | None
    weight_digest: str
    target_digest: str

    def key(self, real: Realisation) -> FitKey:
        return (fit_identity(real), self.weight_digest, self.target_digest)

    def lookup(self, real: Realisation) -> Fit | None:
        """The fit of ``real`` when it was computed already, else None."""
        return self.cache._fits.get(self.key(real))

    def get(self, real: Realisation) -> Fit:
        """The fit of ``real``, computed on first request only."""
        fits = self.cache._fits
        key = self.key(real)
        found = fits.get(key)
        if found is None:
            found = fits[key] = fit_with_errors(real, self.weight, self.target)
            self.cache.computed += 1
        return found

    def store(self, real: Realisation, result: Fit) -> None:
        """Record a fit computed elsewhere (a worker process) of this kernel and target."""
        self.cache.put(self.key(real), result)
