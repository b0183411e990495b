"""Initialisers: the original conv → weights for each stage of its SK replacement (numpy only).

``he``: He / Kaiming normal (He et al. 2015), std = sqrt(2 / fan_in) with
fan_in = c_in/group · kh·kw of the stage, drawn from the seeded generator, stage by stage in
order; the papers retrain from scratch with this. The bias of the original conv goes unchanged
to the last stage.

``approx``: the stage weights that best approximate the original kernel (``approx.fit``: exact
truncated SVDs for the two-factor designs, CP-ALS for the bottleneck designs, refined on the
layer's input patches when the target carries calibration data; a following BN is folded in).

Each initialiser has the signature ``(real, weight, bias, rng, target=None) -> list[np.ndarray]``
where ``weight`` is the original kernel ``[c_out, c_in, kh, kw]``, ``target`` an optional
:class:`~onnx_sk.maths.approx.Target` (BN scale, calibration patches) and the result has one array per
stage, shaped ``[c_out, c_in // group, kh, kw]`` of that stage, in ``weight``'s dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import numpy as np

from onnx_sk.maths import approx
from onnx_sk.maths.designs import Realisation


class Initialiser(Protocol):
    """``(real, weight, bias, rng, target=None) -> list[np.ndarray]``, as the module docstring
    describes; ``target`` is optional, so callers may pass four arguments or five."""

    def __call__(
        self,
        real: Realisation,
        weight: np.ndarray,
        bias: np.ndarray | None,
        rng: np.random.Generator,
        target: approx.Target | None = None,
    ) -> list[np.ndarray]: ...


INITIALISERS: dict[str, Initialiser] = {}


def initialiser(name: str) -> Callable[[Initialiser], Initialiser]:
    def register(fn: Initialiser) -> Initialiser:
        if name in INITIALISERS:
            raise ValueError(f"initialiser {name!r} registered twice")
        INITIALISERS[name] = fn
        return fn

    return register


def he_normal(
    shape: tuple[int, ...], fan_in: int, rng: np.random.Generator, dtype: np.dtype | type
) -> np.ndarray:
    """He / Kaiming normal weights: N(0, 2 / fan_in), drawn from ``rng``, cast to ``dtype``."""
    return (rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)).astype(dtype)


@initialiser("he")
def he_init(
    real: Realisation,
    weight: np.ndarray,
    bias: np.ndarray | None,
    rng: np.random.Generator,
    target: approx.Target | None = None,
) -> list[np.ndarray]:
    out = []
    for s in real.stages:
        shape = s.weight_shape(real.spec.kernel_shape)
        out.append(he_normal(shape, int(np.prod(shape[1:])), rng, weight.dtype))
    return out


@initialiser("approx")
def approx_init(
    real: Realisation,
    weight: np.ndarray,
    bias: np.ndarray | None,
    rng: np.random.Generator,
    target: approx.Target | None = None,
) -> list[np.ndarray]:
    return approx.fit(real, weight, target)
