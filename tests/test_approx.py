"""--init approx: exact recovery per design, optimality, monotone errors, BN folding, calibration."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from helpers import MODELS, conv_model
from onnx import helper, numpy_helper

from onnx_sk.graph.batchnorm import bn_scales
from onnx_sk.graph.convs import find_convs
from onnx_sk.graph.shapes import infer_shapes
from onnx_sk.maths import approx
from onnx_sk.maths.designs import DESIGNS, dense_equivalent, realisations
from onnx_sk.maths.patches import patches
from onnx_sk.maths.spec import ConvSpec
from onnx_sk.maths.weight_init import INITIALISERS
from onnx_sk.runtime.session import session

SPEC = ConvSpec(16, 32, (3, 3))


def _random_design_kernel(real, rng) -> np.ndarray:
    """A kernel exactly representable by ``real``: its dense equivalent of random stage weights."""
    zero = np.zeros((real.spec.c_out, real.spec.c_in, *real.spec.kernel_shape), np.float32)
    return dense_equivalent(real.stages, INITIALISERS["he"](real, zero, None, rng))


def _error(real, w, target=None) -> float:
    return approx.relative_errors(
        w, dense_equivalent(real.stages, approx.fit(real, w, target)), target
    )[0]


@pytest.mark.parametrize("name", list(DESIGNS))
def test_representable_kernels_are_recovered(name, rng):
    reals = realisations(name, SPEC)
    picks = (
        reals
        if len(reals) <= 6
        else [reals[i] for i in np.linspace(0, len(reals) - 1, 6).astype(int)]
    )
    for real in picks:
        w = _random_design_kernel(real, rng)
        assert _error(real, w) < 1e-5, real.groups
        weights = approx.fit(real, w)
        assert [x.shape for x in weights] == [
            s.weight_shape(SPEC.kernel_shape) for s in real.stages
        ]


def test_dw_pw_fit_is_the_per_channel_rank1_svd(rng):
    w = rng.standard_normal((32, 16, 3, 3))
    real = realisations("dw-pw", SPEC)[0]
    # the exact optimum: every input channel's [F, S] slice keeps its top singular value only
    tails = [np.linalg.svd(w[:, c].reshape(32, 9), compute_uv=False)[1:] for c in range(16)]
    best = math.sqrt(sum(float(np.sum(t**2)) for t in tails)) / np.linalg.norm(w)
    assert _error(real, w) == pytest.approx(best, rel=1e-9)


def test_gc_pwg_error_falls_as_groups_fall(rng):
    """Block SVDs are exact optima, and M | M' makes M' kernels a subset of M kernels."""
    w = rng.standard_normal((32, 16, 3, 3))
    by_groups = {tuple(r.groups): r for r in realisations("gc-pwg", SPEC)}
    for key in ("M", "N"):
        chain = [
            by_groups[(("M", g), ("N", 1)) if key == "M" else (("M", 1), ("N", g))]
            for g in (1, 2, 4, 8, 16)
        ]
        errors = [_error(r, w) for r in chain]
        assert errors == sorted(errors), (key, errors)
        assert errors[0] < errors[-1]


def test_bottleneck_error_falls_as_the_bottleneck_widens(rng):
    w = rng.standard_normal((32, 16, 3, 3))
    for name in ("pw-dw-pw", "pwg-dw-pwg"):
        errors = [
            _error(realisations(name, SPEC, ratio)[0], w) for ratio in (0.125, 0.25, 0.5, 1.0)
        ]
        assert all(b <= a + 1e-6 for a, b in zip(errors, errors[1:], strict=False)), (name, errors)
        assert errors[-1] < errors[0] - 0.05


def test_pwg_dw_pwg_error_rises_with_the_output_groups(rng):
    w = rng.standard_normal((32, 16, 3, 3))
    reals = {tuple(r.groups): r for r in realisations("pwg-dw-pwg", SPEC, 0.5)}
    errors = [_error(reals[(("M", 1), ("N", n))], w) for n in (1, 2, 4, 8)]
    assert all(b >= a - 1e-6 for a, b in zip(errors, errors[1:], strict=False)), errors


def test_he_init_statistics():
    real = realisations("pw-dw-pw", ConvSpec(256, 512, (3, 3)))[0]
    w = np.zeros((512, 256, 3, 3), np.float32)
    weights = INITIALISERS["he"](real, w, None, np.random.default_rng(0))
    for stage, x in zip(real.stages, weights, strict=False):
        fan_in = stage.weight_shape((3, 3))[1] * (9 if stage.spatial else 1)
        assert x.dtype == np.float32
        assert abs(float(x.mean())) < 0.05 * math.sqrt(2 / fan_in)
        assert float(x.std()) == pytest.approx(math.sqrt(2 / fan_in), rel=0.05)


def test_approx_draws_no_randomness(rng):
    w = rng.standard_normal((32, 16, 3, 3)).astype(np.float32)
    real = realisations("pwg-dw-pwg", SPEC)[3]
    a = INITIALISERS["approx"](real, w, None, np.random.default_rng(1))
    b = INITIALISERS["approx"](real, w, None, np.random.default_rng(2))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=False))


def test_bn_scale_weights_the_fit(rng):
    """Fitting diag(s)·W beats fitting W and scaling afterwards, measured through the BN."""
    w = rng.standard_normal((32, 16, 3, 3))
    scale = np.exp(rng.standard_normal(32) * 1.5)
    target = approx.Target(row_scale=scale)
    for name in DESIGNS:
        real = realisations(name, SPEC)[0]
        plain = dense_equivalent(real.stages, approx.fit(real, w))
        folded = dense_equivalent(real.stages, approx.fit(real, w, target))
        e_plain = approx.relative_errors(w, plain, target)[0]
        e_folded = approx.relative_errors(w, folded, target)[0]
        assert e_folded < e_plain - 0.01, name


def test_bn_scales_found_in_an_inference_graph():
    model = onnx.load(MODELS / "table1_w16_bn.onnx")
    scales = bn_scales(model)
    bns = [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    assert len(scales) == len(bns) == 12
    assert all(np.all(np.isfinite(s)) for s in scales.values())


@pytest.mark.parametrize(
    "attrs",
    [
        {},
        {"pads": [1, 1, 1, 1]},
        {"strides": [2, 2], "pads": [1, 0, 2, 1]},
        {"dilations": [2, 2], "pads": [2, 2, 2, 2]},
        {"auto_pad": "SAME_UPPER", "strides": [2, 2]},
    ],
)
def test_patches_reproduce_the_conv_in_ort(attrs, rng):
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    model = conv_model(w, attrs=attrs)
    x = rng.standard_normal((2, 3, 9, 8)).astype(np.float32)
    (y,) = session(model).run(None, {"x": x})
    site = find_convs(model, infer_shapes(model, {}))[0]
    lp = patches(
        site.spec, x, max_patches=10**6, rng=np.random.default_rng(0)
    )  # every position, in order
    got = (w.reshape(5, -1).astype(np.float64) @ lp) * math.sqrt(lp.shape[1])  # [F, N·Ho·Wo]
    want = y.transpose(1, 0, 2, 3).reshape(5, -1)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_data_aware_fit_lowers_the_output_error(rng):
    """Low-rank activations: the data fit approximates outputs far better than the weight fit."""
    w = rng.standard_normal((32, 16, 3, 3))
    basis = rng.standard_normal((16 * 9, 12))
    lp = basis @ rng.standard_normal((12, 400)) / 20  # patches in a 12-dim subspace
    target = approx.Target(patches=lp)
    for name in DESIGNS:
        real = realisations(name, SPEC)[0]
        weight_fit = dense_equivalent(real.stages, approx.fit(real, w))
        data_fit = dense_equivalent(real.stages, approx.fit(real, w, target))
        _, out_weight = approx.relative_errors(w, weight_fit, target)
        werr, out_data = approx.relative_errors(w, data_fit, target)
        assert out_data < 0.7 * out_weight, (name, out_data, out_weight)
        assert werr > out_data  # the weights may move far: only outputs matter


def test_refine_never_increases_the_output_error(rng):
    w = rng.standard_normal((32, 16, 9))
    lp = rng.standard_normal((16 * 9, 300)) * np.linspace(0.05, 2, 16 * 9)[:, None]
    for name in DESIGNS:
        real = realisations(name, SPEC)[0]
        fac = approx.fit_weight(real, w)
        errors = []
        for _ in range(4):
            errors.append(float(np.linalg.norm((w.reshape(32, -1) - fac.dense()) @ lp)))
            fac = approx.refine_data(fac, w, lp, sweeps=1)
        assert all(b <= a * (1 + 1e-9) for a, b in zip(errors, errors[1:], strict=False)), (
            name,
            errors,
        )


def _conv_bn_model(w: np.ndarray, scale: np.ndarray) -> onnx.ModelProto:
    c = w.shape[0]
    inits = [
        numpy_helper.from_array(w.astype(np.float32), "w"),
        numpy_helper.from_array(scale.astype(np.float32), "g"),
        numpy_helper.from_array(np.zeros(c, np.float32), "beta"),
        numpy_helper.from_array(np.zeros(c, np.float32), "mean"),
        numpy_helper.from_array(np.ones(c, np.float32), "var"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node(
            "BatchNormalization", ["c", "g", "beta", "mean", "var"], ["y"], name="bn", epsilon=0.0
        ),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, w.shape[1], 8, 8])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, c, 8, 8])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_optimize_reports_bn_scaled_errors(rng):
    import onnx_sk

    w = rng.standard_normal((32, 16, 3, 3)).astype(np.float32)
    scale = np.exp(rng.standard_normal(32))
    model = _conv_bn_model(w, scale)
    _, report = onnx_sk.optimize(model, init="approx", design="dw-pw", include_first=True)
    row = report.convs[0]
    real = realisations("dw-pw", SPEC)[0]
    want = _error(
        real,
        w.astype(np.float64),
        approx.Target(row_scale=scale.astype(np.float32).astype(np.float64)),
    )
    assert row["init_error"] == pytest.approx(want, rel=1e-4)
    assert row["init_output_error"] is None
    _, he = onnx_sk.optimize(model, init="he", design="dw-pw", include_first=True)
    assert he.convs[0]["init_error"] > 1.0 > row["init_error"]


def _reference_refine(fac: approx.Factors, w: np.ndarray, lp: np.ndarray) -> approx.Factors:
    """One sweep of the three-factor refinement with the input side formed from the
    Khatri–Rao rows at every step (the formulas before the cheaper B and d steps)."""
    wl, lt, it = w.reshape(w.shape[0], -1) @ lp, lp.T, approx.CG_ITERATIONS
    kr = approx._kr
    approx._update_a(fac, kr(fac.b, fac.mid), wl, lp, it)
    a, b = fac.a, fac.b
    j, c, s = b.shape[0], b.shape[1], fac.mid.shape[1]
    fac.mid = approx._cgls(
        lambda x: a @ (kr(b, x) @ lp),
        lambda r: np.einsum("jcs,jc->js", (a.T @ (r @ lt)).reshape(j, c, s), b),
        fac.mid,
        wl - a @ (kr(b, fac.mid) @ lp),
        it,
    )
    d = fac.mid
    fac.b = approx._cgls(
        lambda x: a @ (kr(x, d) @ lp),
        lambda r: np.einsum("jcs,js->jc", (a.T @ (r @ lt)).reshape(j, c, s), d) * fac.mask_in,
        b,
        wl - a @ (kr(b, d) @ lp),
        it,
    )
    return fac


@pytest.mark.parametrize("budget", [approx.REFINE_BYTES, 0], ids=["stored", "per-step"])
def test_refine_steps_equal_the_khatri_rao_formulas(rng, monkeypatch, budget):
    """The B and d steps computed from precomputed contractions of L equal the plain
    Khatri–Rao formulas up to float rounding (the same CGLS iterates)."""
    monkeypatch.setattr(approx, "REFINE_BYTES", budget)
    w = rng.standard_normal((32, 16, 9))
    lp = rng.standard_normal((16 * 9, 300)) * np.linspace(0.05, 2, 16 * 9)[:, None]
    for name in ("pw-dw-pw", "pwg-dw-pwg"):
        reals = realisations(name, SPEC)
        grouped = [r for r in reals if dict(r.groups).get("M", 1) > 1]  # B masked to groups
        assert grouped or name == "pw-dw-pw"
        for real in reals[:2] + grouped[:2]:
            ours = approx.refine_data(approx.fit_weight(real, w), w, lp, sweeps=1)
            ref = _reference_refine(approx.fit_weight(real, w), w, lp)
            for x, y in ((ours.a, ref.a), (ours.mid, ref.mid), (ours.b, ref.b)):
                np.testing.assert_allclose(x, y, rtol=1e-9, atol=1e-12 * np.abs(y).max())
