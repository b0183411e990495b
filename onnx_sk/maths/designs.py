"""The four sparse-kernel designs as data, and their dense-equivalent kernel.

A dense conv ``W  # [F, C, kh, kw]`` (C = c_in, F = c_out, S = kh·kw) is replaced by a chain of
stages (ICLR'19 Sec. 3.2, T-ITS'21 Sec. III):

====================  =========================================================  ==================
design                stages (group in brackets, ``*`` = carries kernel/stride)   parameters
====================  =========================================================  ==================
``dw-pw``             DW*(C) → PW                                                 S·C + C·F
``gc-pwg``            GC*(M) → shuffle(M) → PWG(N), M | C, N | gcd(C,F), M·N ≤ C   S·C²/M + C·F/N
``pw-dw-pw``          PW(C→K) → DW*(K) → PW(K→F), K = F/4 by default              K·(C + S + F)
``pwg-dw-pwg``        PWG(M) → shuffle(M) → DW*(K) → PWG(N), M | gcd(C,K),         K·(C/M + S + F/N)
                      N | gcd(K,F), M·N ≤ K
====================  =========================================================  ==================

Only the last stage carries the bias, so every design is a linear map whose dense equivalent is
``W_eq[f, c, y, x] = Σ A[f, k] · S[k, j, y, x] · B[j, c]`` with ``B`` the product of the
pointwise stages (and shuffles) before the spatial stage and ``A`` the product of those after.
Strides, pads and dilations act on the spatial stage only; a 1×1 stage commutes with them, so
the design computes exactly ``Conv(x, W_eq)`` with the dense conv's attributes.

The channel shuffle with ``g`` groups on ``C`` channels is ShuffleNet's
Reshape(N, g, C/g, H, W) → Transpose(0, 2, 1, 3, 4) → Reshape(N, C, H, W):
output channel ``o`` takes input channel ``perm[o] = (o mod g)·(C/g) + o div g``.
Group numbers are integers that divide the channel counts; M·N ≤ (intermediate width) is the
papers' condition for the design to keep the dense conv's information field (ICLR'19 Sec. 3.3.2),
which the shuffle after the first grouped stage realises.

This module imports numpy and the standard library only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from onnx_sk.maths.spec import ConvSpec

DEFAULT_BOTTLENECK_RATIO = 0.25

#: stage kinds: spatial group conv, depthwise, pointwise, pointwise group
GC, DW, PW, PWG = "GC", "DW", "PW", "PWG"


@dataclass(frozen=True)
class Stage:
    """One conv of a design. ``shuffle > 1`` shuffles this stage's *output* with that many groups."""

    kind: str
    c_in: int
    c_out: int
    group: int
    spatial: bool
    shuffle: int = 0

    def weight_shape(self, kernel_shape: tuple[int, ...]) -> tuple[int, ...]:
        k = kernel_shape if self.spatial else (1,) * len(kernel_shape)
        return (self.c_out, self.c_in // self.group, *k)  # [c_out, c_in // group, kh, kw]

    def weight_params(self, kernel_shape: tuple[int, ...]) -> int:
        return math.prod(self.weight_shape(kernel_shape))


@dataclass(frozen=True)
class Realisation:
    """A design made concrete for one conv: integer groups, bottleneck and its stages."""

    design: str
    spec: ConvSpec
    stages: tuple[Stage, ...]
    groups: tuple[tuple[str, int], ...] = ()
    bottleneck: int | None = None
    #: how ``build`` writes a channel shuffle: "reshape" (Reshape→Transpose→Reshape) or "gather"
    shuffle_impl: str = "reshape"

    @property
    def weight_params(self) -> int:
        return sum(s.weight_params(self.spec.kernel_shape) for s in self.stages)

    @property
    def params(self) -> int:
        return self.weight_params + (self.spec.c_out if self.spec.has_bias else 0)

    @property
    def shuffles(self) -> int:
        return sum(1 for s in self.stages if s.shuffle > 1)

    def macs(self, in_spatial: tuple[int, ...], out_spatial: tuple[int, ...]) -> int:
        """MACs for one image: stages before the spatial stage run at the input resolution."""
        total, before = 0, True
        for s in self.stages:
            if s.spatial:
                before = False
            pixels = math.prod(in_spatial if before else out_spatial)
            total += s.weight_params(self.spec.kernel_shape) * pixels
        return total

    def macs_per_output_pixel(self) -> float:
        """MACs per output pixel, counting stride: pre-spatial stages see prod(strides)× the pixels."""
        stride_area = math.prod(self.spec.strides)
        total, before = 0.0, True
        for s in self.stages:
            if s.spatial:
                before = False
            total += s.weight_params(self.spec.kernel_shape) * (stride_area if before else 1)
        return total

    @property
    def group_dict(self) -> dict[str, int]:
        return dict(self.groups)


Chooser = Callable[[ConvSpec, float], Iterator[Realisation]]
#: the registry of designs: name → every admissible integer realisation for a conv. The
#: registration order is the last tie-break between equally cheap designs (``select``), so a
#: new design goes last to leave existing choices unchanged.
DESIGNS: dict[str, Chooser] = {}
#: the papers' names for the designs (given with each registration)
PAPER_NAMES: dict[str, str] = {}


def design(name: str, paper_name: str) -> Callable[[Chooser], Chooser]:
    """Register a design: the decorated function yields its realisations for a conv."""

    def register(fn: Chooser) -> Chooser:
        if name in DESIGNS:
            raise ValueError(f"design {name!r} registered twice")
        DESIGNS[name] = fn
        PAPER_NAMES[name] = paper_name
        return fn

    return register


def divisors(n: int) -> list[int]:
    """The divisors of n in increasing order (trial division up to sqrt(n))."""
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return small + [n // d for d in reversed(small) if d * d != n]


def bottleneck_width(c_out: int, ratio: float = DEFAULT_BOTTLENECK_RATIO) -> int:
    """K = ratio·F rounded to the nearest integer, at least 1 (K = F/4 in the papers)."""
    return max(1, int(round(c_out * ratio)))


def _shuffle(m: int, n: int) -> int:
    """A shuffle is needed only between two stages that are both grouped."""
    return m if m > 1 and n > 1 else 0


@design("dw-pw", "DW+PW")
def _dw_pw(spec: ConvSpec, ratio: float) -> Iterator[Realisation]:
    c, f = spec.c_in, spec.c_out
    stages = (Stage(DW, c, c, c, True), Stage(PW, c, f, 1, False))
    yield Realisation("dw-pw", spec, stages)


@design("gc-pwg", "GC+shuffle+PWG")
def _gc_pwg(spec: ConvSpec, ratio: float) -> Iterator[Realisation]:
    c, f = spec.c_in, spec.c_out
    ns = divisors(math.gcd(c, f))
    for m in divisors(c):
        for n in ns:
            if m * n > c:
                continue
            stages = (
                Stage(GC, c, c, m, True, _shuffle(m, n)),
                Stage(PWG if n > 1 else PW, c, f, n, False),
            )
            yield Realisation("gc-pwg", spec, stages, (("M", m), ("N", n)))


@design("pw-dw-pw", "PW+DW+PW")
def _pw_dw_pw(spec: ConvSpec, ratio: float) -> Iterator[Realisation]:
    c, f = spec.c_in, spec.c_out
    k = bottleneck_width(f, ratio)
    stages = (Stage(PW, c, k, 1, False), Stage(DW, k, k, k, True), Stage(PW, k, f, 1, False))
    yield Realisation("pw-dw-pw", spec, stages, (), k)


@design("pwg-dw-pwg", "PWG+shuffle+DW+PWG")
def _pwg_dw_pwg(spec: ConvSpec, ratio: float) -> Iterator[Realisation]:
    c, f = spec.c_in, spec.c_out
    k = bottleneck_width(f, ratio)
    ns = divisors(math.gcd(k, f))
    for m in divisors(math.gcd(c, k)):
        for n in ns:
            if m * n > k:
                continue
            stages = (
                Stage(PWG if m > 1 else PW, c, k, m, False, _shuffle(m, n)),
                Stage(DW, k, k, k, True),
                Stage(PWG if n > 1 else PW, k, f, n, False),
            )
            yield Realisation("pwg-dw-pwg", spec, stages, (("M", m), ("N", n)), k)


def realisations(
    name: str, spec: ConvSpec, ratio: float = DEFAULT_BOTTLENECK_RATIO
) -> list[Realisation]:
    """Every admissible integer realisation of design ``name`` for ``spec``."""
    if name not in DESIGNS:
        raise KeyError(f"unknown design {name!r}; known: {', '.join(DESIGNS)}")
    return list(DESIGNS[name](spec, ratio))


def shuffle_permutation(channels: int, groups: int) -> np.ndarray:
    """perm[o] = (o mod g)·(C/g) + o div g: output channel o reads input channel perm[o]."""
    o = np.arange(channels)
    return (o % groups) * (channels // groups) + o // groups


def expand_group(weight: np.ndarray, group: int) -> np.ndarray:
    """A grouped kernel [c_out, c_in // group, ...] as its dense block-diagonal [c_out, c_in, ...]."""
    c_out, cig = weight.shape[:2]
    dense = np.zeros((c_out, cig * group, *weight.shape[2:]), dtype=np.float64)
    cog = c_out // group
    for g in range(group):
        dense[g * cog : (g + 1) * cog, g * cig : (g + 1) * cig] = weight[g * cog : (g + 1) * cog]
    return dense


def dense_equivalent(stages: tuple[Stage, ...], weights: list[np.ndarray]) -> np.ndarray:
    """The single kernel [c_out, c_in, kh, kw] that the chain of stages computes (float64)."""
    t: np.ndarray | None = None  # running product [c, c_in, *k]
    for stage, w in zip(stages, weights, strict=True):
        d = expand_group(np.asarray(w, dtype=np.float64), stage.group)
        if t is None:
            t = d
        elif stage.spatial:
            # d [k, j, kh, kw] · t [j, c_in] (t is still 1×1 here) → [k, c_in, kh, kw]
            t = np.moveaxis(np.tensordot(d, t.reshape(t.shape[0], t.shape[1]), axes=(1, 0)), -1, 1)
        else:
            # d [o, k] (1×1) · t [k, c_in, ...] → [o, c_in, ...]
            rest = t.shape[1:]
            t = (d.reshape(d.shape[0], d.shape[1]) @ t.reshape(t.shape[0], -1)).reshape(-1, *rest)
        if stage.shuffle > 1:
            t = t[shuffle_permutation(t.shape[0], stage.shuffle)]
    assert t is not None
    return t


def dense_rows(
    stages: tuple[Stage, ...], weights: list[np.ndarray], rows: np.ndarray
) -> np.ndarray:
    """``dense_equivalent(stages, weights)[rows]`` without forming the whole kernel (float64).

    The chain is composed backwards from the selected output channels, group by group:
    ``A [R, c]`` (a one-hot selection at the output) becomes ``A' [R, c_in_s, ...]`` through a
    stage ``w [c_out_s, c_in_s / g, ...]`` with ``A'[r, j] = Σ_{o in group(j)} A[r, o] · w[o, j]``,
    and through a shuffle ``t_post = t_pre[perm]`` as ``A' = A[:, argsort(perm)]``. Memory and
    work are proportional to ``len(rows)``, never to the whole dense kernel (a widened layer's
    dense equivalent may not fit).
    """
    last = stages[-1]
    a = np.zeros((len(rows), last.c_out), dtype=np.float64)  # [R, c] (then [R, c, *k])
    a[np.arange(len(rows)), np.asarray(rows)] = 1.0
    for stage, w in zip(reversed(stages), reversed(weights), strict=True):
        if stage.shuffle > 1:
            a = a[:, np.argsort(shuffle_permutation(a.shape[1], stage.shuffle))]
        g = stage.group
        d = np.asarray(w, dtype=np.float64)  # [c_out_s, c_in_s // g, *k]
        cog, cig = d.shape[0] // g, d.shape[1]
        dg = d.reshape(g, cog, cig, *d.shape[2:])
        ag = a.reshape(a.shape[0], g, cog, *a.shape[2:])
        if stage.spatial:
            assert a.ndim == 2  # one spatial stage per design
            a = np.einsum("rgo,goj...->rgj...", ag, dg)
        else:
            a = np.einsum("rgo...,goj->rgj...", ag, dg.reshape(g, cog, cig))
        a = a.reshape(a.shape[0], g * cig, *a.shape[3:])
    if a.ndim == 2:  # no spatial stage: the kernel of the 1×1 chain
        a = a.reshape(*a.shape, *np.asarray(weights[0]).shape[2:])
    return a
