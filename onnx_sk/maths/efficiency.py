"""Efficiency of the four SK designs: parameters, MACs, the papers' closed forms, integer optima.

Notation (code names in brackets): C input channels (``c_in``), F output channels (``c_out``),
S kernel area kh·kw (``kernel_area``, 9 in the papers), r bottleneck ratio (``ratio``, 1/4 in the
papers), K = r·F bottleneck width, M and N the group numbers of the first and second grouped
stage, P a parameter budget (``budget``), F = α·C (``alpha``). Parameters are weights only (the
papers count no bias). The dense conv has S·C·F of them (``dense_params``). At stride 1 every stage
runs at the output resolution, so MACs per output pixel equal the weight count.

Parameters and ratio to the dense conv (ICLR'19 Sec. 3.3, T-ITS'21 Sec. IV; ``design_params``,
``param_ratio``)::

    dw-pw       S·C + C·F                ratio 1/F + 1/S                  (Sec. 3.3.1 / IV-A)
    gc-pwg      S·C²/M + C·F/N           ratio C/(M·F) + 1/(S·N)          (Sec. 3.3.2 / IV-B)
    pw-dw-pw    K·(C + F + S)            ratio K·(C + F + S)/(S·C·F)      (Sec. 3.3.3 / IV-C)
    pwg-dw-pwg  K·(C/M + S + F/N)        ratio K·(C/M + S + F/N)/(S·C·F)  (Sec. 3.3.4 / IV-D)

Best real group numbers for given C, F (``closed_form``). Both grouped formulas decrease in M and
in N, so the optimum lies on M·N = (intermediate width) (Theorem 1):

- gc-pwg, M·N = C: ratio N/F + 1/(S·N) ≥ 2/sqrt(S·F), equality at N = sqrt(F/S), M = C/N
  (papers: N = sqrt(F)/3); params 2·C·sqrt(S·F).
- pwg-dw-pwg, M·N = K = r·F: F/N = M/r, ratio (C/M + M/r + S)/(S·C/r), minimal at
  M = sqrt(r·C) (papers, r = 1/4: (C/M + 4M + 9)/(36C), M = sqrt(C)/2; the printed numerator
  "C + 4M + 9" is a typo), N = K/M; params K·(S + 2·sqrt(C/r)).
- dw-pw, pw-dw-pw: no group numbers; the ratio is fixed by C, F (and r).

Greatest width under a budget P with F = α·C (``greatest_width``; every design's least parameter
count is increasing in C, so the greatest C is where it equals P):

- dw-pw: α·C² + S·C = P, C = (−S + sqrt(S² + 4αP))/(2α) (papers, S = 9).
- gc-pwg: P = M·N·(S·N + α·M) ≥ 2·sqrt(S·α)·C^{3/2} at S·N = α·M, so C = (P/(2·sqrt(S·α)))^{2/3}
  (papers: P = 6·sqrt(α)·C^{3/2} at 9N = αM).
- pw-dw-pw: r·α·(1+α)·C² + r·α·S·C = P, C = (−S + sqrt(S² + 4(1+α)P/(r·α)))/(2(1+α)); at
  r = 1/4, S = 9 this is the papers' (−9α + sqrt(81α² + 16(α²+α)P))/(2(α²+α)).
- pwg-dw-pwg: P = r·α·C·(S + 2·sqrt(C/r)) = r·α·S·C + 2·α·sqrt(r)·C^{3/2} at N = α·M; with
  x = sqrt(C) the positive root of 2α·sqrt(r)·x³ + r·α·S·x² − P = 0 (papers, r = 1/4, S = 9:
  P = (αC/4)(9 + 4·sqrt(C))).

The closed forms treat C, M, N and K = r·F as real numbers. A real layer needs integers:
``best_integer`` searches every admissible realisation of ``designs.realisations`` (M, N divisors
of the channel counts, M·N ≤ intermediate width, K = round(r·F) at least 1 as in
``designs.bottleneck_width``), and ``greatest_width_integer`` the greatest integer C with F = α·C
an integer for which some such realisation fits in P. The closed form is a lower bound on the
parameters of every realisation with K = r·F, so both agree exactly whenever the real optimum is an
admissible integer; when r·F is not an integer the rounded K can make the integer design slightly
cheaper (or dearer) than the real formula.

This module imports numpy and the standard library only (plus onnx-sk's own maths modules).
Arguments outside the formulas' domain raise :class:`~onnx_sk.maths.domain.DomainError`.
"""

from __future__ import annotations

import math
from typing import Any, TypeAlias

import numpy as np

from onnx_sk.maths.designs import (
    DEFAULT_BOTTLENECK_RATIO,
    DESIGNS,
    PAPER_NAMES,
    Realisation,
    bottleneck_width,
    realisations,
)
from onnx_sk.maths.domain import DomainError
from onnx_sk.maths.spec import ConvSpec

#: the designs in registry order (each needs its formulas below)
DESIGN_ORDER = tuple(DESIGNS)
OBJECTIVES = ("params", "macs")
_INT_TOL = 1e-9

#: the ratio formulas as printed in the table (corrected for pwg-dw-pwg)
RATIO_FORMULAS = {
    "dw-pw": "1/F + 1/S",
    "gc-pwg": "C/(M·F) + 1/(S·N)",
    "pw-dw-pw": "K·(C + F + S)/(S·C·F)",
    "pwg-dw-pwg": "K·(C/M + S + F/N)/(S·C·F)",
}

#: sort key of a realisation: (objective, other metric, shuffles, group numbers)
_Score: TypeAlias = tuple[float, float, int, tuple[tuple[str, int], ...]]


def dense_params(c_in: Any, c_out: Any, kernel_area: Any) -> Any:
    """S·C·F weights of the dense conv."""
    return kernel_area * c_in * c_out


def design_params(
    design: str,
    c_in: Any,
    c_out: Any,
    kernel_area: Any,
    bottleneck: Any = None,
    m: Any = 1,
    n: Any = 1,
) -> Any:
    """Weights of ``design`` from the papers' formulas; exact when given ints and Fractions."""
    s, c, f, k = kernel_area, c_in, c_out, bottleneck
    if design == "dw-pw":
        return s * c + c * f
    if design == "gc-pwg":
        return s * c * c / m + c * f / n
    if design == "pw-dw-pw":
        return k * (c + f + s)
    if design == "pwg-dw-pwg":
        return k * (c / m + s + f / n)
    raise KeyError(f"unknown design {design!r}; known: {', '.join(DESIGN_ORDER)}")


def param_ratio(
    design: str,
    c_in: Any,
    c_out: Any,
    kernel_area: Any,
    bottleneck: Any = None,
    m: Any = 1,
    n: Any = 1,
) -> Any:
    """Parameters after / before: ``design_params / dense_params``."""
    params = design_params(design, c_in, c_out, kernel_area, bottleneck, m, n)
    return params / dense_params(c_in, c_out, kernel_area)


def closed_form(
    design: str,
    c_in: float,
    c_out: float,
    kernel_area: float,
    ratio: float = DEFAULT_BOTTLENECK_RATIO,
) -> dict[str, Any]:
    """The papers' optimum with real group numbers: ratio, groups, bottleneck, params."""
    s, c, f = float(kernel_area), float(c_in), float(c_out)
    k = ratio * f if design in ("pw-dw-pw", "pwg-dw-pwg") else None
    groups: dict[str, float] = {}
    if design == "gc-pwg":
        n = math.sqrt(f / s)
        groups = {"M": c / n, "N": n}
    elif design == "pwg-dw-pwg":
        assert k is not None  # set above for both bottleneck designs
        m = math.sqrt(c * k / f)  # = sqrt(r·C)
        groups = {"M": m, "N": k / m}
    params = float(design_params(design, c, f, s, k, groups.get("M", 1.0), groups.get("N", 1.0)))
    return {
        "formula": RATIO_FORMULAS[design],
        "ratio": params / dense_params(c, f, s),
        "groups": groups,
        "bottleneck": k,
        "params": params,
        "macs_per_output_pixel": params,
        "admissible": _admissible(design, c_in, c_out, groups, k, ratio),
    }


def _admissible(
    design: str, c_in: float, c_out: float, groups: dict[str, float], k: float | None, ratio: float
) -> bool:
    """True when the real optimum is an integer realisation that ``designs`` would build."""
    values = [c_in, c_out, *groups.values()] + ([k] if k is not None else [])
    if any(abs(v - round(v)) > _INT_TOL * max(1.0, abs(v)) or round(v) < 1 for v in values):
        return False
    c, f = round(c_in), round(c_out)
    if k is not None and round(k) != bottleneck_width(f, ratio):
        return False
    want = {name: round(v) for name, v in groups.items()}
    spec = ConvSpec(c, f, (1, 1))
    return any(r.group_dict == want for r in realisations(design, spec, ratio))


def _score(real: Realisation, objective: str) -> _Score:
    params, macs = real.params, real.macs_per_output_pixel()
    first, second = (params, macs) if objective == "params" else (macs, params)
    return (first, second, real.shuffles, real.groups)


def best_integer(
    design: str, spec: ConvSpec, ratio: float = DEFAULT_BOTTLENECK_RATIO, objective: str = "params"
) -> Realisation:
    """Exhaustive search over ``designs.realisations``: the least params (or MACs per pixel).

    Ties go to the other metric, then fewer shuffles, then smaller group numbers.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, not {objective!r}")
    candidates = realisations(design, spec, ratio)
    if not candidates:
        raise ValueError(f"design {design!r} has no realisation for {spec}")
    return min(candidates, key=lambda real: _score(real, objective))


def greatest_width(
    design: str,
    budget: float,
    alpha: float = 1.0,
    kernel_area: float = 9,
    ratio: float = DEFAULT_BOTTLENECK_RATIO,
) -> float:
    """The papers' greatest real width C with F = α·C whose best design has ``budget`` params."""
    p, a, s, r = float(budget), float(alpha), float(kernel_area), float(ratio)
    if design == "dw-pw":
        # (−S + sqrt(S² + 4αP))/(2α), written without cancellation
        return 2 * p / (s + math.sqrt(s * s + 4 * a * p))
    if design == "gc-pwg":
        return (p / (2 * math.sqrt(s * a))) ** (2 / 3)
    if design == "pw-dw-pw":
        q = 4 * (1 + a) * p / (r * a)
        return q / (2 * (1 + a)) / (s + math.sqrt(s * s + q))
    if design == "pwg-dw-pwg":
        roots = np.roots([2 * a * math.sqrt(r), r * a * s, 0.0, -p])
        x = max(z.real for z in roots if abs(z.imag) <= 1e-9 * max(1.0, abs(z)) and z.real > 0)
        for _ in range(3):  # Newton polish of the cubic's positive root x = sqrt(C)
            fx = 2 * a * math.sqrt(r) * x**3 + r * a * s * x * x - p
            x -= fx / (6 * a * math.sqrt(r) * x * x + 2 * r * a * s * x)
        return x * x
    raise KeyError(f"unknown design {design!r}; known: {', '.join(DESIGN_ORDER)}")


def _integer_c_out(c_in: int, alpha: float) -> int | None:
    """F = α·C when that is a positive integer, else None."""
    f = alpha * c_in
    return round(f) if round(f) >= 1 and abs(f - round(f)) <= _INT_TOL * f else None


def _params_lower_bound(design: str, c: int, f: int, s: int, ratio: float) -> float:
    """Least params over real M, N (M·N ≤ width) with the integer K: non-decreasing in C."""
    k = bottleneck_width(f, ratio)
    if design == "gc-pwg":
        return 2 * c * math.sqrt(s * f)
    if design == "pwg-dw-pwg":
        return k * s + 2 * math.sqrt(k * c * f)
    return float(design_params(design, c, f, s, k))


def greatest_width_integer(
    design: str,
    budget: float,
    alpha: float = 1.0,
    kernel_shape: tuple[int, ...] = (3, 3),
    ratio: float = DEFAULT_BOTTLENECK_RATIO,
) -> Realisation | None:
    """The realisation of the greatest integer C (F = α·C integer) with params ≤ ``budget``.

    No C above the last one whose real lower bound fits can fit, so the search starts there and
    walks down to the first C for which ``best_integer`` fits. None when not even C = 1 fits.
    """
    s = math.prod(kernel_shape)

    def bound(c: int) -> float:
        return _params_lower_bound(design, c, max(1, round(alpha * c)), s, ratio)

    top = max(1, math.floor(greatest_width(design, budget, alpha, s, ratio)))
    while bound(top + 1) <= budget:
        top += 1
    for c in range(top, 0, -1):
        f = _integer_c_out(c, alpha)
        if f is None or bound(c) > budget:
            continue
        best = best_integer(design, ConvSpec(c, f, tuple(kernel_shape)), ratio)
        if best.params <= budget:
            return best
    return None


#: the largest arguments ``efficiency_table`` takes: the integer searches enumerate divisors
#: and widths, so their work grows with these (at the limits, a few seconds)
MAX_CHANNELS = 2**20
MAX_KERNEL = 63
MAX_BUDGET = 1e9
MAX_ALPHA = 1024.0


def _check_inputs(
    c_in: int, c_out: int, kernel: int, budget: float | None, alpha: float, ratio: float
) -> None:
    for name, value, top in (
        ("--c-in", c_in, MAX_CHANNELS),
        ("--c-out", c_out, MAX_CHANNELS),
        ("--kernel", kernel, MAX_KERNEL),
    ):
        if value <= 0:
            raise DomainError(f"{name} must be a positive integer, got {value}")
        if value > top:
            raise DomainError(f"{name} {value} is too large (at most {top})")
    if budget is not None and not 0 < budget <= MAX_BUDGET:
        raise DomainError(
            f"--budget must be a positive number of parameters up to {MAX_BUDGET:.0e}, got {budget}"
        )
    if not (0 < alpha <= MAX_ALPHA and math.isfinite(alpha)):
        raise DomainError(
            f"--alpha must be a positive number up to {MAX_ALPHA:g} (F = alpha·C), got {alpha}"
        )
    if not 0 < ratio <= 1:
        raise DomainError(f"--bottleneck-ratio must be in (0, 1] (K = ratio·F), got {ratio}")


def _integer_row(real: Realisation) -> dict[str, Any]:
    dense = dense_params(real.spec.c_in, real.spec.c_out, real.spec.kernel_area)
    return {
        "c_in": real.spec.c_in,
        "c_out": real.spec.c_out,
        "groups": real.group_dict,
        "bottleneck": real.bottleneck,
        "params": real.params,
        "macs_per_output_pixel": real.macs_per_output_pixel(),
        "ratio": real.params / dense,
    }


def _budget_row(
    design: str, budget: float, alpha: float, kernel_shape: tuple[int, ...], ratio: float
) -> dict[str, Any]:
    s = math.prod(kernel_shape)
    width = greatest_width(design, budget, alpha, s, ratio)
    at_width = closed_form(design, width, alpha * width, s, ratio)
    found = greatest_width_integer(design, budget, alpha, kernel_shape, ratio)
    return {
        "closed_form": {
            "c_in": width,
            "c_out": alpha * width,
            "groups": at_width["groups"],
            "bottleneck": at_width["bottleneck"],
            "params": at_width["params"],
        },
        "integer": None if found is None else _integer_row(found),
    }


def efficiency_table(
    c_in: int,
    c_out: int,
    kernel: int = 3,
    budget: float | None = None,
    alpha: float = 1.0,
    ratio: float = DEFAULT_BOTTLENECK_RATIO,
) -> dict[str, Any]:
    """The efficiency analysis of the four designs for a k×k conv C → F (JSON-able).

    Per design: the closed form (real optimum), the best valid integer realisation and, with a
    ``budget``, the greatest width by closed form and by integer search (F = alpha·C).
    """
    _check_inputs(c_in, c_out, kernel, budget, alpha, ratio)
    kernel_shape = (kernel, kernel)
    spec = ConvSpec(c_in, c_out, kernel_shape)
    s = spec.kernel_area
    rows = []
    for design in DESIGN_ORDER:
        rows.append(
            {
                "design": design,
                "paper_name": PAPER_NAMES[design],
                "closed_form": closed_form(design, c_in, c_out, s, ratio),
                "best_integer": _integer_row(best_integer(design, spec, ratio)),
                "greatest_width": None
                if budget is None
                else _budget_row(design, budget, alpha, kernel_shape, ratio),
            }
        )
    dense = dense_params(c_in, c_out, s)
    return {
        "c_in": c_in,
        "c_out": c_out,
        "kernel_shape": list(kernel_shape),
        "kernel_area": s,
        "bottleneck_ratio": ratio,
        "budget": budget,
        "alpha": alpha,
        "dense": {"params": dense, "macs_per_output_pixel": dense},
        "designs": rows,
    }
