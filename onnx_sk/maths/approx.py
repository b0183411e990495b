"""Fitting a design's stage weights to a dense kernel (``--init approx``); numpy only.

Every design computes ``W_eq = A · M`` (``designs.dense_equivalent``) with ``W  # [F, C, S]``
(S = kh·kw, C = c_in, F = c_out) and an intermediate channel ``j`` between the last pointwise
stage ``A`` and the rest. Each ``j`` belongs to one output group ``n(j)`` of ``A`` (N groups) and
reads one input group ``m(j)`` (M groups; the shuffle decides which), so ``W`` splits into blocks
``W[f ∈ n, c ∈ m, :]`` that only the channels ``J(n, m) = {j : n(j) = n, m(j) = m}`` touch:

- two-factor designs (``dw-pw``, ``gc-pwg``): ``M[j, c, s]`` is the spatial stage, so each block
  ``[F/N, (C/M)·S]`` is a rank-|J(n,m)| matrix product and its truncated SVD is the exact optimum
  of ``||W − W_eq||_F`` (Eckart–Young). For DW+PW (M = C, N = 1) this is one rank-1 SVD per
  input channel.
- three-factor designs (``pw-dw-pw``, ``pwg-dw-pwg``): ``W_eq[f, c, s] = Σ_j A[f, j] d[j, s]
  B[j, c]``, so each block is a rank-|J(n,m)| CP decomposition of a ``[F/N, C/M, S]`` tensor
  (Lebedev et al. 2015), fitted by ALS from an SVD start with a small ridge term
  ``λ = ridge · tr(G)/r`` on each Gram matrix ``G`` against CP-ALS's diverging components.

Data-aware fitting minimises the layer's output error ``||(W − W_eq) L||_F`` instead, where
``L  # [C·S, P]`` holds P input patches (im2col of the conv's input activations) / sqrt(P). Starting
from the weight fit, it alternates over the factors; with the others fixed ``W_eq`` is linear in
each, so each step is a masked least-squares problem solved by CGLS (conjugate gradients on the
normal equations), which never increases the error.

A following BatchNormalization with scale ``γ / sqrt(var + ε)`` is folded in by fitting
``diag(scale) · W`` and dividing the rows of the last stage by the scale afterwards: the design
then approximates the conv+BN pair, and the graph keeps its BN. The fit draws no random numbers
(SVD starts; padding columns come from a fixed-seed generator), so it is reproducible.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np
from numpy.typing import DTypeLike

from onnx_sk.maths.designs import Realisation, shuffle_permutation

DEFAULT_RIDGE = 1e-9
CP_ITERATIONS = 200
CP_MIN_ITERATIONS = 10
#: arithmetic budget of one CP-ALS fit (a sweep costs ≈ 3·p·q·s·r multiply-adds): big layers get
#: fewer sweeps (at least CP_MIN_ITERATIONS), small ones up to CP_ITERATIONS
CP_FLOP_BUDGET = 5e9
CP_TOLERANCE = 1e-6
DATA_SWEEPS = 12
CG_ITERATIONS = 8

#: a linear map between factor space and output space (CGLS's ``apply`` and ``adjoint``)
LinearMap: TypeAlias = Callable[[np.ndarray], np.ndarray]
#: (f rows, c columns, j channels) of one block
Block: TypeAlias = tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Target:
    """What a conv's replacement is fitted to, besides its kernel."""

    row_scale: np.ndarray | None = None  # [c_out]: the following BN's γ / sqrt(var + ε)
    patches: np.ndarray | None = None  # [c_in·kh·kw, P]: input patches / sqrt(P)


@dataclass
class Factors:
    """A realisation's weights as dense masked factors, indexed by intermediate channel j."""

    a: np.ndarray  # [F, J], zero where n(f) != n(j)
    mid: np.ndarray  # two-factor: [J, C, S] (zero off the input group); three-factor: d [J, S]
    b: np.ndarray | None  # three-factor: [J, C], zero off the input group
    mask_a: np.ndarray  # [F, J] bool
    mask_in: np.ndarray  # [J, C] bool

    def dense(self) -> np.ndarray:
        """W_eq flattened to [F, C·S]."""
        if self.b is None:
            return self.a @ self.mid.reshape(self.mid.shape[0], -1)
        return self.a @ (self.b[:, :, None] * self.mid[:, None, :]).reshape(self.b.shape[0], -1)


@dataclass(frozen=True)
class Layout:
    """Where each intermediate channel j sits: output group, input group, pre-shuffle row."""

    three: bool
    c_in: int
    c_out: int
    width: int  # J
    n_groups: int  # N of the last stage
    m_groups: int  # M of the input side
    n_of_j: np.ndarray  # [J]
    m_of_j: np.ndarray  # [J]
    row_of_j: np.ndarray  # [J]: row of the first stage's weight that channel j comes from


def layout(real: Realisation) -> Layout:
    stages = real.stages
    first, last = stages[0], stages[-1]
    width = last.c_in
    perm = shuffle_permutation(width, first.shuffle) if first.shuffle > 1 else np.arange(width)
    n_of_j = np.arange(width) // (width // last.group)
    m_of_j = perm // (width // first.group)
    return Layout(
        len(stages) == 3,
        first.c_in,
        last.c_out,
        width,
        last.group,
        first.group,
        n_of_j,
        m_of_j,
        perm,
    )


def _masks(lay: Layout) -> tuple[np.ndarray, np.ndarray]:
    n_of_f = np.arange(lay.c_out) // (lay.c_out // lay.n_groups)
    m_of_c = np.arange(lay.c_in) // (lay.c_in // lay.m_groups)
    return n_of_f[:, None] == lay.n_of_j[None, :], lay.m_of_j[:, None] == m_of_c[None, :]


def _blocks(lay: Layout) -> Iterator[Block]:
    """(f rows, c columns, j channels) of every non-empty block."""
    fo, ci = lay.c_out // lay.n_groups, lay.c_in // lay.m_groups
    for n in range(lay.n_groups):
        for m in range(lay.m_groups):
            js = np.flatnonzero((lay.n_of_j == n) & (lay.m_of_j == m))
            if js.size:
                yield np.arange(n * fo, (n + 1) * fo), np.arange(m * ci, (m + 1) * ci), js


def _svd_block(t: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
    """Best rank-r factors (balanced) of t [p, q]; zero columns beyond t's rank.

    The singular vectors come from the eigenvectors of the smaller Gram matrix (t·tᵀ or tᵀ·t):
    far cheaper than an SVD of a wide block, and the projection onto them is the same optimum.
    """
    p, q = t.shape
    k = min(r, p, q)
    if p <= q:
        _, vecs = np.linalg.eigh(t @ t.T)
        u = vecs[:, ::-1][:, :k]
        left, right = u, u.T @ t
    else:
        _, vecs = np.linalg.eigh(t.T @ t)
        v = vecs[:, ::-1][:, :k]
        left, right = t @ v, v.T
    norms = np.sqrt(np.linalg.norm(left, axis=0) * np.linalg.norm(right, axis=1)) + 1e-300
    scale_l = norms / (np.linalg.norm(left, axis=0) + 1e-300)
    scale_r = norms / (np.linalg.norm(right, axis=1) + 1e-300)
    out_l = np.zeros((p, r))
    out_r = np.zeros((r, q))
    out_l[:, :k] = left * scale_l
    out_r[:k] = right * scale_r[:, None]
    return out_l, out_r


def _leading(mat: np.ndarray, r: int, gen: np.random.Generator) -> np.ndarray:
    """r leading left singular vectors of mat (eigenvectors of mat·matᵀ), padded with random
    unit columns."""
    _, vecs = np.linalg.eigh(mat @ mat.T)
    u = vecs[:, ::-1]
    out = gen.standard_normal((mat.shape[0], r))
    out /= np.linalg.norm(out, axis=0)
    k = min(r, u.shape[1])
    out[:, :k] = u[:, :k]
    return out


def _solve(gram: np.ndarray, rhs: np.ndarray, ridge: float) -> np.ndarray:
    """rhs · (gram + λI)^-1 with λ = ridge · tr(gram)/r (gram symmetric PSD)."""
    lam = ridge * max(np.trace(gram) / gram.shape[0], 1e-300)
    return np.linalg.solve(gram + lam * np.eye(gram.shape[0]), rhs.T).T


def _khatri_rao(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Column-wise Kronecker product [rows_x · rows_y, r] (y's index fastest)."""
    return (x[:, None, :] * y[None, :, :]).reshape(-1, x.shape[1])


def cp_als(
    t: np.ndarray,
    r: int,
    ridge: float = DEFAULT_RIDGE,
    iterations: int | None = None,
    tolerance: float = CP_TOLERANCE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rank-r CP of t [p, q, s] ≈ Σ_r a[:, r] ⊗ b[:, r] ⊗ d[:, r] by ridge ALS from an SVD start.

    Stops after ``iterations`` sweeps (default: as many as ``CP_FLOP_BUDGET`` allows, between
    ``CP_MIN_ITERATIONS`` and ``CP_ITERATIONS``) or when a sweep lowers the squared error by less
    than ``tolerance`` of itself.
    """
    p, q, s = t.shape
    if not t.any():  # exactly zero factors (ALS would solve 0 · x = 0: NaN)
        return np.zeros((p, r)), np.zeros((q, r)), np.zeros((s, r))
    if iterations is None:
        per_sweep = 3.0 * p * q * s * r
        iterations = int(min(CP_ITERATIONS, max(CP_MIN_ITERATIONS, CP_FLOP_BUDGET // per_sweep)))
    gen = np.random.default_rng(0)
    t1 = t.reshape(p, q * s)
    t2 = np.ascontiguousarray(t.transpose(1, 0, 2)).reshape(q, p * s)
    t3 = np.ascontiguousarray(t.transpose(2, 0, 1)).reshape(s, p * q)
    a, b, d = (_leading(x, r, gen) for x in (t1, t2, t3))
    norm2 = float(np.sum(t * t)) or 1.0
    prev = np.inf
    for _ in range(iterations):
        a = _solve((b.T @ b) * (d.T @ d), t1 @ _khatri_rao(b, d), ridge)
        b = _solve((a.T @ a) * (d.T @ d), t2 @ _khatri_rao(a, d), ridge)
        mttkrp = t3 @ _khatri_rao(a, b)
        d = _solve((a.T @ a) * (b.T @ b), mttkrp, ridge)
        # ||t − t̂||² = ||t||² − 2<t, t̂> + ||t̂||², all from r×r quantities
        gram = (a.T @ a) * (b.T @ b) * (d.T @ d)
        err = (norm2 - 2 * float(np.sum(mttkrp * d)) + float(np.sum(gram))) / norm2
        if prev - err < tolerance * max(err, 1e-300) or err < 1e-22:
            break
        prev = err
    # balance the column norms across the three factors
    na, nb, nd = (np.linalg.norm(x, axis=0) + 1e-300 for x in (a, b, d))
    g = np.cbrt(na * nb * nd)
    return a * (g / na), b * (g / nb), d * (g / nd)


def fit_weight(real: Realisation, w: np.ndarray, ridge: float = DEFAULT_RIDGE) -> Factors:
    """The weight-space fit of real's factors to w [F, C, S] (float64)."""
    lay = layout(real)
    mask_a, mask_in = _masks(lay)
    f, c, s = w.shape
    a = np.zeros((f, lay.width))
    if not lay.three:
        mid = np.zeros((lay.width, c, s))
        for fs, cs, js in _blocks(lay):
            block = w[np.ix_(fs, cs)].reshape(fs.size, cs.size * s)
            left, right = _svd_block(block, js.size)
            a[np.ix_(fs, js)] = left
            mid[np.ix_(js, cs)] = right.reshape(js.size, cs.size, s)
        return Factors(a, mid, None, mask_a, mask_in)
    d = np.zeros((lay.width, s))
    b = np.zeros((lay.width, c))
    for fs, cs, js in _blocks(lay):
        fa, fb, fd = cp_als(w[np.ix_(fs, cs)], js.size, ridge)
        a[np.ix_(fs, js)] = fa
        b[np.ix_(js, cs)] = fb.T
        d[js] = fd.T
    return Factors(a, d, b, mask_a, mask_in)


# ---- data-aware refinement: CGLS on one factor at a time ------------------------------------


def _cgls(
    apply: LinearMap, adjoint: LinearMap, x0: np.ndarray, resid: np.ndarray, iters: int
) -> np.ndarray:
    """min ||resid − apply(Δ)|| over Δ, from Δ = 0, returned as x0 + Δ (apply/adjoint linear)."""
    x = x0.copy()
    r = resid.copy()
    g = adjoint(r)
    p = g.copy()
    gamma = float(np.sum(g * g))
    for _ in range(iters):
        if gamma <= 1e-300:
            break
        q = apply(p)
        qq = float(np.sum(q * q))
        if qq <= 1e-300:
            break
        alpha = gamma / qq
        x += alpha * p
        r -= alpha * q
        g = adjoint(r)
        new = float(np.sum(g * g))
        p = g + (new / gamma) * p
        gamma = new
    return x


def _kr(b: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Rows of the input-side factor of a three-factor design: [J, C·S] = b[j, c]·d[j, s]."""
    return (b[:, :, None] * d[:, None, :]).reshape(b.shape[0], -1)


def _update_a(
    fac: Factors, mid_flat: np.ndarray, wl: np.ndarray, patches: np.ndarray, iters: int
) -> None:
    """A given the input side ``mid_flat  # [J, C·S]``: rows of A are independent least squares."""
    m = mid_flat @ patches  # [J, P]
    resid = wl - fac.a @ m
    fac.a = _cgls(lambda x: x @ m, lambda r: (r @ m.T) * fac.mask_a, fac.a, resid, iters)


def _update_spatial(fac: Factors, wl: np.ndarray, patches: np.ndarray, iters: int) -> None:
    """Two-factor designs: the spatial stage [J, C·S], masked to each channel's input group."""
    j, s = fac.mid.shape[0], fac.mid.shape[2]
    mask = np.repeat(fac.mask_in[:, :, None], s, axis=2).reshape(j, -1)
    a, lt = fac.a, patches.T
    flat = fac.mid.reshape(j, -1)
    resid = wl - a @ (flat @ patches)
    flat = _cgls(lambda x: a @ (x @ patches), lambda r: (a.T @ (r @ lt)) * mask, flat, resid, iters)
    fac.mid = flat.reshape(fac.mid.shape)


def _update_dw(fac: Factors, wl: np.ndarray, patches: np.ndarray, iters: int) -> None:
    """Three-factor designs: the depthwise taps d [J, S] given A and B.

    With B fixed, channel j's input side is ``Σ_s d[j, s] · q[j, s, :]`` with
    ``q[j, s, p] = Σ_c B[j, c] · L[(c, s), p]``, computed once (J·C·S·P multiply-adds): each
    CGLS step then costs J·S·P + F·J·P instead of J·C·S·P + F·C·S·P."""
    a, b = fac.a, fac.b
    assert b is not None  # three-factor designs have B
    j, c, s = b.shape[0], b.shape[1], fac.mid.shape[1]
    n = patches.shape[1]
    q = (b @ patches.reshape(c, s * n)).reshape(j, s, n)  # [J, S, P]

    def inputs(x: np.ndarray) -> np.ndarray:  # [J, S] → [J, P]
        return np.einsum("js,jsp->jp", x, q)

    resid = wl - a @ inputs(fac.mid)
    fac.mid = _cgls(
        lambda x: a @ inputs(x),
        lambda r: np.einsum("jp,jsp->js", a.T @ r, q),
        fac.mid,
        resid,
        iters,
    )


#: memory for ``r[j, c, p] = Σ_s d[j, s] · L[(c, s), p]`` in the B step, at most; above it each
#: CGLS step forms the input side from the Khatri–Rao rows instead (S times the arithmetic)
REFINE_BYTES = 256 * 2**20


def _update_b(fac: Factors, wl: np.ndarray, patches: np.ndarray, iters: int) -> None:
    """Three-factor designs: the first pointwise stage B [J, C] given A and d.

    The adjoint is taken as ``((Aᵀ·r)·Lᵀ)`` (J·P·C·S multiply-adds, not F·P·C·S); with d fixed,
    ``r[j, c, p] = Σ_s d[j, s] · L[(c, s), p]`` is computed once when it fits in
    ``REFINE_BYTES``, and each step then costs J·C·P instead of J·C·S·P."""
    a, b, d = fac.a, fac.b, fac.mid
    assert b is not None  # three-factor designs have B
    j, c, s = b.shape[0], b.shape[1], d.shape[1]
    n = patches.shape[1]
    mask = fac.mask_in
    if j * c * n * 8 <= REFINE_BYTES:
        by_s = np.ascontiguousarray(patches.reshape(c, s, n).transpose(1, 0, 2))  # [S, C, P]
        rr = (d @ by_s.reshape(s, c * n)).reshape(j, c, n)  # [J, C, P]

        def inputs(x: np.ndarray) -> np.ndarray:  # [J, C] → [J, P]
            return np.einsum("jc,jcp->jp", x, rr)

        def adjoint(r: np.ndarray) -> np.ndarray:
            return np.einsum("jp,jcp->jc", a.T @ r, rr) * mask
    else:
        lt = patches.T

        def inputs(x: np.ndarray) -> np.ndarray:
            return _kr(x, d) @ patches

        def adjoint(r: np.ndarray) -> np.ndarray:
            return np.einsum("jcs,js->jc", ((a.T @ r) @ lt).reshape(j, c, s), d) * mask

    resid = wl - a @ inputs(b)
    fac.b = _cgls(lambda x: a @ inputs(x), adjoint, b, resid, iters)


def refine_data(
    fac: Factors,
    w: np.ndarray,
    patches: np.ndarray,
    sweeps: int = DATA_SWEEPS,
    iters: int = CG_ITERATIONS,
) -> Factors:
    """Lower ||(W − W_eq) L||_F by alternating CGLS over the factors (never increases it)."""
    wl = w.reshape(w.shape[0], -1) @ patches  # [F, P]
    for _ in range(sweeps):
        if fac.b is None:
            _update_a(fac, fac.mid.reshape(fac.mid.shape[0], -1), wl, patches, iters)
            _update_spatial(fac, wl, patches, iters)
        else:
            _update_a(fac, _kr(fac.b, fac.mid), wl, patches, iters)
            _update_dw(fac, wl, patches, iters)
            _update_b(fac, wl, patches, iters)
    return fac


# ---- factors <-> stage weights -------------------------------------------------------------


def stage_weights(real: Realisation, fac: Factors, dtype: DTypeLike) -> list[np.ndarray]:
    """The factors as the stages' ONNX weights ``[c_out, c_in // group, kh, kw]``."""
    lay = layout(real)
    kernel = real.spec.kernel_shape
    first, last = real.stages[0], real.stages[-1]
    fo, jn = lay.c_out // lay.n_groups, lay.width // lay.n_groups
    a = np.stack([fac.a[f, (f // fo) * jn : (f // fo + 1) * jn] for f in range(lay.c_out)])
    a_w = a.reshape(*last.weight_shape(kernel))
    ci = lay.c_in // lay.m_groups
    order = np.argsort(lay.row_of_j)  # j of each first-stage row
    if not lay.three:
        rows = [fac.mid[j, lay.m_of_j[j] * ci : (lay.m_of_j[j] + 1) * ci] for j in order]
        first_w = np.stack(rows).reshape(*first.weight_shape(kernel))
        return [first_w.astype(dtype), a_w.astype(dtype)]
    b = fac.b
    assert b is not None  # three-factor designs have B
    rows = [b[j, lay.m_of_j[j] * ci : (lay.m_of_j[j] + 1) * ci] for j in order]
    first_w = np.stack(rows).reshape(*first.weight_shape(kernel))
    dw = fac.mid.reshape(*real.stages[1].weight_shape(kernel))
    return [first_w.astype(dtype), dw.astype(dtype), a_w.astype(dtype)]


def _scale(target: Target | None, c_out: int) -> np.ndarray:
    if target is None or target.row_scale is None:
        return np.ones(c_out)
    s = np.asarray(target.row_scale, dtype=np.float64).reshape(c_out)
    return np.where(np.abs(s) > 1e-12, s, 1.0)  # a dead BN channel: fit the conv alone


def fit(real: Realisation, weight: np.ndarray, target: Target | None = None) -> list[np.ndarray]:
    """Stage weights of ``real`` approximating ``weight`` [F, C, kh, kw] (and the target)."""
    f = weight.shape[0]
    scale = _scale(target, f)
    w = weight.astype(np.float64).reshape(f, weight.shape[1], -1) * scale[:, None, None]
    fac = fit_weight(real, w)
    if target is not None and target.patches is not None:
        fac = refine_data(fac, w, np.asarray(target.patches, dtype=np.float64))
    fac.a = fac.a / scale[:, None]
    return stage_weights(real, fac, weight.dtype)


def relative_errors(
    weight: np.ndarray, w_eq: np.ndarray, target: Target | None = None
) -> tuple[float, float | None]:
    """(weight error, output error or None): ||s·(W − W_eq)[·L]|| / ||s·W[·L]||.

    Summed over blocks of output rows (squared norms add up), so a multi-GB kernel needs
    ~64 MB of float64 temporaries, not four copies of itself.
    """
    f = weight.shape[0]
    scale = _scale(target, f)
    lp = (
        None if target is None or target.patches is None else np.asarray(target.patches, np.float64)
    )
    w_all, eq_all = weight.reshape(f, -1), w_eq.reshape(f, -1)
    sums = np.zeros(4)  # ||e||², ||w||², ||e·L||², ||w·L||²
    step = max(1, (8 << 20) // max(1, w_all.shape[1]))
    for lo in range(0, f, step):
        s = scale[lo : lo + step, None]
        w = w_all[lo : lo + step].astype(np.float64) * s
        e = w - eq_all[lo : lo + step].astype(np.float64) * s
        sums[:2] += (np.vdot(e, e), np.vdot(w, w))
        if lp is not None:
            el, wl = e @ lp, w @ lp
            sums[2:] += (np.vdot(el, el), np.vdot(wl, wl))
    werr = float(np.sqrt(sums[0]) / (np.sqrt(sums[1]) or 1.0))
    if lp is None:
        return werr, None
    return werr, float(np.sqrt(sums[2]) / (np.sqrt(sums[3]) or 1.0))
