"""Efficiency analysis: every closed form against the exact count and a brute-force twin."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import pytest

from onnx_sk.maths import efficiency as eff
from onnx_sk.maths.designs import realisations
from onnx_sk.maths.spec import ConvSpec

DESIGNS = eff.DESIGN_ORDER
GROUPED = ("gc-pwg", "pwg-dw-pwg")
BOTTLENECK = ("pw-dw-pw", "pwg-dw-pwg")


def _formula_params(real) -> Fraction:
    g = real.group_dict
    c, f, s = Fraction(real.spec.c_in), Fraction(real.spec.c_out), real.spec.kernel_area
    return eff.design_params(real.design, c, f, s, real.bottleneck, g.get("M", 1), g.get("N", 1))


# --- the parameter formulas, exactly -----------------------------------------------------------


@pytest.mark.parametrize("design", DESIGNS)
@pytest.mark.parametrize("kernel", [(3, 3), (1, 5), (5, 5)])
@pytest.mark.parametrize("ratio", [0.25, 0.5, 1.0])
def test_formula_equals_every_realisation(design: str, kernel: tuple, ratio: float) -> None:
    for c in (1, 4, 6, 12, 16, 30):
        for f in (2, 8, 12, 36, 48):
            spec = ConvSpec(c, f, kernel)
            for real in realisations(design, spec, ratio):
                assert _formula_params(real) == real.weight_params
                g = real.group_dict
                ratio_exact = eff.param_ratio(
                    design, Fraction(c), Fraction(f), spec.kernel_area, real.bottleneck,
                    g.get("M", 1), g.get("N", 1),
                )  # fmt: skip
                assert ratio_exact == Fraction(real.weight_params, spec.kernel_area * c * f)


def test_papers_printed_ratios_s9_quarter_bottleneck() -> None:
    for c in (8, 16, 48, 64):
        for f in (16, 32, 64, 128):
            C, F, K = Fraction(c), Fraction(f), Fraction(f, 4)
            assert eff.param_ratio("dw-pw", C, F, 9) == 1 / F + Fraction(1, 9)
            assert eff.param_ratio("pw-dw-pw", C, F, 9, K) == (C + F + 9) / (36 * C)
            assert eff.param_ratio("pw-dw-pw", C, F, 9, K) == K * (C + F + 9) / (9 * C * F)
            for m in (1, 2, 4, 8):
                for n in (1, 2, 4):
                    got = eff.param_ratio("gc-pwg", C, F, 9, None, m, n)
                    assert got == C / (m * F) + Fraction(1, 9 * n)
                    if m * n == c:  # Theorem 1 tight: N/F + 1/(9N)
                        assert got == n / F + Fraction(1, 9 * n)
                    n_pwg = K / m  # tight M·N = K
                    got = eff.param_ratio("pwg-dw-pwg", C, F, 9, K, m, n_pwg)
                    assert got == (C / m + 4 * m + 9) / (36 * C)  # corrected formula
                    if m > 1:  # the papers' printed numerator C + 4M + 9 is a typo
                        assert got != (C + 4 * m + 9) / (36 * C)


@pytest.mark.parametrize("design", GROUPED)
def test_closed_form_is_the_real_minimum(design: str) -> None:
    for c, f, s, r in [
        (64, 128, 9, 0.25),
        (100, 30, 25, 0.5),
        (7.5, 300, 9, 0.25),
        (512, 512, 1, 1),
    ]:
        cf = eff.closed_form(design, c, f, s, r)
        k = cf["bottleneck"]
        width = c if design == "gc-pwg" else k
        m0 = cf["groups"]["M"]
        assert cf["groups"]["M"] * cf["groups"]["N"] == pytest.approx(width, rel=1e-12)
        for scale in (0.5, 0.9, 0.99, 1.01, 1.1, 2.0):  # along M·N = width and inside it
            m = m0 * scale
            assert eff.design_params(design, c, f, s, k, m, width / m) > cf["params"]
            assert eff.design_params(design, c, f, s, k, m, 0.9 * width / m) > cf["params"]
        if design == "gc-pwg":
            assert cf["groups"]["N"] == pytest.approx(math.sqrt(f / s), rel=1e-12)
            assert cf["ratio"] == pytest.approx(2 / math.sqrt(s * f), rel=1e-12)
        else:
            assert m0 == pytest.approx(math.sqrt(r * c), rel=1e-12)
    papers = eff.closed_form("pwg-dw-pwg", 64, 256, 9, 0.25)
    assert papers["groups"]["M"] == pytest.approx(math.sqrt(64) / 2)
    assert eff.closed_form("gc-pwg", 64, 144, 9)["groups"]["N"] == pytest.approx(math.sqrt(144) / 3)


# --- closed-form optimum vs exhaustive integer search ------------------------------------------


@pytest.mark.parametrize("kernel", [(3, 3), (5, 5), (1, 7)])
def test_gc_pwg_admissible_optimum_is_found_by_search(kernel: tuple) -> None:
    s = math.prod(kernel)
    for n in range(1, 6):
        for m in range(1, 13):
            c, f = m * n, s * n * n  # N = sqrt(F/S), M = C/N
            cf = eff.closed_form("gc-pwg", c, f, s)
            assert cf["admissible"]
            best = eff.best_integer("gc-pwg", ConvSpec(c, f, kernel))
            assert best.group_dict == {"M": m, "N": n}
            assert best.params == pytest.approx(cf["params"], rel=1e-12)


@pytest.mark.parametrize("q", [4, 2, 1])  # bottleneck ratio r = 1/q
def test_pwg_dw_pwg_admissible_optimum_is_found_by_search(q: int) -> None:
    for m in range(1, 8):
        for n in range(1, 8):
            c, f = q * m * m, q * m * n  # M = sqrt(r·C), K = r·F = M·N
            cf = eff.closed_form("pwg-dw-pwg", c, f, 9, 1 / q)
            assert cf["admissible"], (c, f)
            best = eff.best_integer("pwg-dw-pwg", ConvSpec(c, f, (3, 3)), 1 / q)
            assert best.group_dict == {"M": m, "N": n} and best.bottleneck == m * n
            assert best.params == pytest.approx(cf["params"], rel=1e-12)


@pytest.mark.parametrize("design", DESIGNS)
def test_closed_form_and_search_agree_whenever_admissible(design: str) -> None:
    seen = 0
    for c in range(1, 41):
        for f in range(1, 100):
            cf = eff.closed_form(design, c, f, 9)
            best = eff.best_integer(design, ConvSpec(c, f, (3, 3)))
            if best.bottleneck in (None, f / 4):  # K = r·F exact: the real form is a bound
                assert best.params >= cf["params"] * (1 - 1e-12)
            if cf["admissible"]:
                seen += 1
                assert best.group_dict == {k: round(v) for k, v in cf["groups"].items()}
                assert best.params == pytest.approx(cf["params"], rel=1e-12)
    assert seen >= 10, seen


def test_best_integer_objective_macs_counts_stride() -> None:
    spec = ConvSpec(64, 64, (3, 3), strides=(2, 2))
    by_params = eff.best_integer("pwg-dw-pwg", spec, objective="params")
    by_macs = eff.best_integer("pwg-dw-pwg", spec, objective="macs")
    assert by_macs.macs_per_output_pixel() <= by_params.macs_per_output_pixel()
    assert by_params.params <= by_macs.params
    assert by_macs.macs_per_output_pixel() == min(
        r.macs_per_output_pixel() for r in realisations("pwg-dw-pwg", spec)
    )
    with pytest.raises(ValueError, match="objective must be one of"):
        eff.best_integer("dw-pw", spec, objective="latency")


# --- greatest width under a budget --------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0, 4.0])
@pytest.mark.parametrize("budget", [1e3, 5e4, 1.1e6])
def test_greatest_width_matches_papers_s9(alpha: float, budget: float) -> None:
    a, p = alpha, budget
    papers = {
        "dw-pw": (-9 + math.sqrt(81 + 4 * a * p)) / (2 * a),
        "gc-pwg": (p / (6 * math.sqrt(a))) ** (2 / 3),
        "pw-dw-pw": (-9 * a + math.sqrt(81 * a * a + 16 * (a * a + a) * p)) / (2 * (a * a + a)),
    }
    for design, want in papers.items():
        assert eff.greatest_width(design, p, a, 9, 0.25) == pytest.approx(want, rel=1e-12)
    g = eff.greatest_width("pwg-dw-pwg", p, a, 9, 0.25)
    assert (a * g / 4) * (9 + 4 * math.sqrt(g)) == pytest.approx(p, rel=1e-12)


@pytest.mark.parametrize("design", DESIGNS)
@pytest.mark.parametrize("s,r", [(9, 0.25), (1, 0.5), (25, 1.0), (49, 0.125)])
def test_greatest_width_spends_the_budget(design: str, s: int, r: float) -> None:
    for alpha in (0.5, 1.0, 3.0):
        for p in (50.0, 2e4, 3e7):
            g = eff.greatest_width(design, p, alpha, s, r)
            at = eff.closed_form(design, g, alpha * g, s, r)
            assert at["params"] == pytest.approx(p, rel=1e-10)
            wider = eff.closed_form(design, g * 1.001, alpha * g * 1.001, s, r)
            assert wider["params"] > p
            if design == "gc-pwg":  # 9N = αM generalised: S·N = α·M
                assert s * at["groups"]["N"] == pytest.approx(alpha * at["groups"]["M"])
            if design == "pwg-dw-pwg":  # N = α·M
                assert at["groups"]["N"] == pytest.approx(alpha * at["groups"]["M"])


def _brute_force_width(design: str, budget: float, alpha: float, kernel: tuple, ratio: float):
    top = math.ceil(2 * eff.greatest_width(design, budget, alpha, math.prod(kernel), ratio)) + 10
    best = None
    for c in range(1, top + 1):
        f = alpha * c
        if abs(f - round(f)) > 1e-9 or round(f) < 1:
            continue
        real = eff.best_integer(design, ConvSpec(c, round(f), kernel), ratio)
        if real.params <= budget:
            best = c
    return best


@pytest.mark.parametrize("design", DESIGNS)
@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0, 4.0])
def test_greatest_width_integer_is_the_brute_force_one(design: str, alpha: float) -> None:
    for budget in (20, 300, 2000, 12000):
        g = eff.greatest_width(design, budget, alpha, 9, 0.25)
        found = eff.greatest_width_integer(design, budget, alpha, (3, 3), 0.25)
        want = _brute_force_width(design, budget, alpha, (3, 3), 0.25)
        assert (found.spec.c_in if found else None) == want
        if found is None:
            continue
        assert found.params <= budget and found.spec.c_out == round(alpha * found.spec.c_in)
        if design not in BOTTLENECK or alpha == 4.0:  # K = r·F exact: the real form bounds it
            assert found.spec.c_in <= g + 1e-9
        else:  # K = round(F/4) can be a little cheaper than F/4
            assert found.spec.c_in <= g + 2
        if design == "dw-pw" or (design == "pw-dw-pw" and alpha == 4.0):  # no groups: floor
            step = 2 if alpha == 0.5 else 1
            assert found.spec.c_in == math.floor(g / step + 1e-12) * step


def test_greatest_width_exact_at_admissible_budgets() -> None:
    for n in range(1, 6):  # GC+PWG, α = 1: C = 9N², M = 9N, P = 6·C^{3/2}
        c = 9 * n * n
        p = 6 * c**1.5
        assert eff.greatest_width("gc-pwg", p, 1, 9) == pytest.approx(c, rel=1e-12)
        found = eff.greatest_width_integer("gc-pwg", round(p), 1, (3, 3))
        assert found.spec.c_in == c and found.group_dict == {"M": 9 * n, "N": n}
    for t in range(1, 4):  # GC+PWG, α = 4: 9N = 4M with N = 4t, M = 9t
        c = 36 * t * t
        p = 2 * math.sqrt(36) * c**1.5
        found = eff.greatest_width_integer("gc-pwg", round(p), 4, (3, 3))
        assert found.spec.c_in == c and found.group_dict == {"M": 9 * t, "N": 4 * t}
    for m in range(1, 7):  # PWG+DW+PWG, α = 1: C = 4M², N = M, P = (C/4)(9 + 4√C)
        c = 4 * m * m
        p = (c / 4) * (9 + 4 * math.sqrt(c))
        assert eff.greatest_width("pwg-dw-pwg", p, 1, 9) == pytest.approx(c, rel=1e-12)
        found = eff.greatest_width_integer("pwg-dw-pwg", round(p), 1, (3, 3))
        assert found.spec.c_in == c and found.group_dict == {"M": m, "N": m}


def test_greatest_width_integer_none_when_nothing_fits() -> None:
    assert eff.greatest_width_integer("dw-pw", 5, 1, (3, 3)) is None  # C = 1 needs 10


# --- the API and the CLI ------------------------------------------------------------------------


def test_efficiency_table_is_json_and_consistent() -> None:
    doc = eff.efficiency_table(64, 256, 3, budget=1e5, alpha=2.0)
    assert json.loads(json.dumps(doc)) == doc
    assert doc["dense"]["params"] == 9 * 64 * 256
    assert [r["design"] for r in doc["designs"]] == list(DESIGNS)
    by = {r["design"]: r for r in doc["designs"]}
    assert by["pwg-dw-pwg"]["closed_form"]["groups"] == {"M": 4.0, "N": 16.0}
    assert by["pwg-dw-pwg"]["best_integer"]["groups"] == {"M": 4, "N": 16}
    assert by["dw-pw"]["closed_form"]["ratio"] == pytest.approx(1 / 256 + 1 / 9)
    for row in doc["designs"]:
        width = row["greatest_width"]
        assert width["closed_form"]["params"] == pytest.approx(1e5)
        assert width["integer"]["params"] <= 1e5
        assert width["integer"]["c_out"] == 2 * width["integer"]["c_in"]
    assert eff.efficiency_table(8, 8)["designs"][0]["greatest_width"] is None


def _cli(args: list[str], capsys) -> tuple[int, str, str]:
    from onnx_sk.cli import main

    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_json(capsys) -> None:
    code, out, _ = _cli(
        ["efficiency", "--c-in", "64", "--c-out", "128", "--budget", "50000", "--json"], capsys
    )
    assert code == 0
    doc = json.loads(out)
    assert set(doc) == {
        "c_in",
        "c_out",
        "kernel_shape",
        "kernel_area",
        "bottleneck_ratio",
        "budget",
        "alpha",
        "dense",
        "designs",
    }
    row = doc["designs"][1]
    assert set(row) == {"design", "paper_name", "closed_form", "best_integer", "greatest_width"}
    assert set(row["closed_form"]) == {
        "formula",
        "ratio",
        "groups",
        "bottleneck",
        "params",
        "macs_per_output_pixel",
        "admissible",
    }
    assert set(row["best_integer"]) == {
        "c_in",
        "c_out",
        "groups",
        "bottleneck",
        "params",
        "macs_per_output_pixel",
        "ratio",
    }
    assert set(row["greatest_width"]) == {"closed_form", "integer"}
    assert doc == eff.efficiency_table(64, 128, budget=50000.0)


def test_cli_table(capsys) -> None:
    code, out, _ = _cli(
        ["efficiency", "--c-in", "32", "--c-out", "64", "--kernel", "5", "--budget", "1e4"], capsys
    )
    assert code == 0
    assert "5×5 conv 32→64" in out and "PWG+shuffle+DW+PWG" in out and "greatest width" in out


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--c-in", "0", "--c-out", "8"], "--c-in must be a positive integer, got 0"),
        (["--c-in", "8", "--c-out", "-1"], "--c-out must be a positive integer, got -1"),
        (["--c-in", "8", "--c-out", "8", "--kernel", "0"], "--kernel must be a positive integer"),
        (["--c-in", "8", "--c-out", "8", "--budget", "-5"], "--budget must be a positive number"),
        (["--c-in", "8", "--c-out", "8", "--alpha", "0"], "--alpha must be a positive number"),
        (["--c-in", "8", "--c-out", "8", "--bottleneck-ratio", "0"], "must be in (0, 1]"),
        (["--c-in", "8", "--c-out", "8", "--bottleneck-ratio", "1.5"], "got 1.5"),
    ],
)
def test_cli_bad_input(extra: list[str], message: str, capsys) -> None:
    code, out, err = _cli(["efficiency", *extra], capsys)
    assert code == 2
    assert message in err and err.startswith("error: ") and err.count("\n") == 1
    assert out == ""
