"""``optimize --mode widen`` end to end: budgets within ±1% on reference models, function
preservation, widening alone, and bad input (one-line message, exit code 2)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import MODELS, assert_clean_error, run_cli
from test_width import G

from onnx_sk.graph.counts import conv_params as model_conv_params
from onnx_sk.pipeline import optimize
from onnx_sk.runtime.feeds import random_inputs
from onnx_sk.runtime.session import session


def densenet_like() -> onnx.ModelProto:
    """stem → two dense blocks (conv, Concat) with a 1×1 transition → GAP → Gemm."""
    g = G(3)
    t = g.op("Relu", [g.conv("x", 3, 16)])
    c = 16
    for block in range(2):
        for _ in range(3):
            new = g.op("Relu", [g.conv(t, c, 12)])
            t, c = g.op("Concat", [t, new], axis=1), c + 12
        if block == 0:
            t = g.op(
                "AveragePool", [g.conv(t, c, c // 2, k=1)], kernel_shape=[2, 2], strides=[2, 2]
            )
            c //= 2
    f = g.op("Flatten", [g.op("GlobalAveragePool", [t])])
    y = g.op(
        "Gemm", [f, g.const(np.random.default_rng(0).standard_normal((10, c)) * 0.1)], transB=1
    )
    return g.model([y])


def yolo_like() -> onnx.ModelProto:
    """A backbone, a CSP-like Split/Concat neck and two heads that reshape channels into boxes."""
    g = G(3)
    t = g.op("Relu", [g.conv("x", 3, 32)])
    t = g.op("Relu", [g.conv(t, 32, 64)])
    a, b = g.op("Split", [t, g.const([32, 32], np.int64)], n_out=2, axis=1)
    b = g.op("Relu", [g.conv(g.op("Relu", [g.conv(b, 32, 32)]), 32, 32)])
    neck = g.op("Relu", [g.conv(g.op("Concat", [a, b], axis=1), 64, 64, k=1)])
    small = g.op("MaxPool", [neck], kernel_shape=[2, 2], strides=[2, 2])
    outs = []
    for feat, hw in ((neck, 8), (small, 4)):
        h = g.conv(g.op("Relu", [g.conv(feat, 64, 64)]), 64, 21, k=1)  # 3 × (4 + 1 + 2)
        outs.append(g.op("Reshape", [h, g.const([1, 3, 7, hw, hw], np.int64)]))
    return g.model(outs)


def _check_budget(model, tmp_path, **kw):
    out = tmp_path / "wide.onnx"
    result, rep = optimize(model, out, mode="widen", **kw)
    w = rep.widen
    assert w["met"] and abs(w["ratio"] - 1) <= 0.01, w
    assert w["scale"] > 1
    if kw.get("budget", "conv") == "conv":
        assert model_conv_params(result) == w["achieved"]
    onnx.checker.check_model(str(out), full_check=True)
    return result, rep


@pytest.mark.parametrize("name", ["resnet20_cifar.onnx", "table1_w16.onnx"])
def test_reference_models_meet_the_conv_budget(name, tmp_path):
    result, rep = _check_budget(str(MODELS / name), tmp_path)
    assert rep.totals["replaced"] > 0 and rep.verification["fields_checked"] > 0
    wider = [r for r in rep.widen["layers"] if r["c_out_after"] > r["c_out"]]
    assert wider and all(r["c_out_after"] >= 3 * r["c_out"] for r in wider)  # several times wider


@pytest.mark.parametrize("build", [densenet_like, yolo_like])
def test_concat_and_split_models_meet_the_budget(build, tmp_path):
    model = build()
    _, rep = _check_budget(model, tmp_path)
    if build is yolo_like:
        heads = [f for f in rep.widen["frozen_by"] if "reshapes 21 channels" in f["reason"]]
        assert len(heads) == 2


def test_budget_all_and_round_to(tmp_path):
    _, rep = _check_budget(str(MODELS / "resnet20_cifar.onnx"), tmp_path, budget="all", round_to=8)
    assert all(r["c_out_after"] % 8 == 0 for r in rep.widen["layers"] if r["c_out"] != 10)


def test_preserve_keeps_the_reduced_models_outputs(tmp_path):
    model = str(MODELS / "resnet20_cifar.onnx")
    reduced, _ = optimize(model, None, seed=3)
    wide, rep = optimize(model, None, mode="widen", widen_init="preserve", width_scale=2.0, seed=3)
    assert rep.verification["preserved"]
    feeds = random_inputs(reduced, np.random.default_rng(1))
    want = session(reduced).run(None, feeds)[0]
    got = session(wide).run(None, feeds)[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert model_conv_params(wide) > 3 * model_conv_params(reduced)


def test_widen_alone_with_design_none():
    g = G(3)  # MobileNetV2-like: PW expand → DW → PW project, residual
    t = g.conv("x", 3, 16)
    e = g.op("Clip", [g.conv(t, 16, 64, k=1), g.const(0.0), g.const(6.0)])
    d = g.op("Clip", [g.conv(e, 64, 64, group=64), g.const(0.0), g.const(6.0)])
    p = g.op("Add", [t, g.conv(d, 64, 16, k=1)])
    y = g.op("Gemm", [g.op("Flatten", [g.op("GlobalAveragePool", [p])]), g.const(np.ones((16, 5)))])
    model = g.model([y])
    for init in ("he", "preserve"):
        wide, rep = optimize(
            model, None, mode="widen", design="none", width_scale=1.5, widen_init=init
        )
        assert rep.totals["replaced"] == 0
        assert {(r["c_in"], r["c_in_after"]) for r in rep.widen["layers"]} >= {(64, 96), (16, 24)}
    before = model_conv_params(model)
    _, rep = optimize(model, None, mode="widen", design="none", param_budget=2 * before)
    assert rep.widen["met"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--width-scale", "0"], "--width-scale 0.0: expected 0 < S <= 64"),
        (["--width-scale", "-2"], "--width-scale -2.0: expected 0 < S <= 64"),
        (["--width-scale", "1e9"], "--width-scale 1000000000.0: expected 0 < S <= 64"),
        (["--width-scale", "nan"], "--width-scale nan: expected 0 < S <= 64"),
        (["--width-scale", "0.5", "--widen-init", "preserve"],
         "--width-scale 0.5: --widen-init preserve cannot narrow (expected S >= 1)"),
        (["--param-budget", "0"], "--param-budget 0: expected a positive number of parameters"),
        (["--round-to", "0"], "--round-to 0: expected 1 <= N <= 1024"),
        (["--budget", "macs"], "--budget 'macs': expected one of conv, all"),
        (["--widen-init", "svd"], "--widen-init 'svd': expected one of he, preserve"),
        (["--design", "none"],
         "--design none keeps the parameter budget at s = 1: give --width-scale or --param-budget"),
    ],
)  # fmt: skip
def test_bad_widen_options(args, message, tmp_path):
    out = tmp_path / "out.onnx"
    proc = run_cli("optimize", MODELS / "table1_w16.onnx", out, "--mode", "widen", *args)
    assert_clean_error(proc, message)
    assert not out.exists()


def test_widen_options_need_widen_mode(tmp_path):
    proc = run_cli(
        "optimize", MODELS / "table1_w16.onnx", tmp_path / "o.onnx", "--width-scale", "2"
    )
    assert_clean_error(proc, "--width-scale needs --mode widen")


def test_everything_frozen_says_nothing_could_be_widened(tmp_path):
    g = G()
    y = g.conv("x", 8, 4)
    path = tmp_path / "one.onnx"
    onnx.save(g.model([y]), path)
    proc = run_cli("optimize", path, tmp_path / "o.onnx", "--mode", "widen", "--design", "none",
                   "--width-scale", "2")  # fmt: skip
    assert_clean_error(
        proc,
        "nothing could be widened: every channel space is frozen (graph input 'x'; graph output "
        f"{y!r})",
    )


def test_analyze_channels_cli():
    proc = run_cli("analyze", MODELS / "resnet20_cifar.onnx", "--channels", "--json")
    assert proc.returncode == 0, proc.stderr
    import json

    doc = json.loads(proc.stdout)
    assert doc["free"] == 12 and doc["frozen"] == 2
    assert {s["size"] for s in doc["spaces"] if not s["frozen"]} == {16, 32, 64}
