"""optimize --init approx end to end: --calibration, --max-error, --for-training, and compare."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from helpers import MODELS, assert_clean_error, conv_model, run_cli

import onnx_sk
from onnx_sk.passes.error_budget import layer_error
from onnx_sk.runtime.compare import compare
from onnx_sk.runtime.session import session

MODEL = MODELS / "table1_w16_bn.onnx"  # unfused Conv→BN pairs, input [N, 3, H, W]


@pytest.fixture(scope="module")
def calibration(tmp_path_factory):
    path = tmp_path_factory.mktemp("cal") / "cal.npz"
    np.savez(
        path, input=np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    )
    return path


def _input_name() -> str:
    return onnx.load(MODEL).graph.input[0].name


def test_calibration_reports_both_errors(calibration):
    _, report = onnx_sk.optimize(MODEL, init="approx", design="dw-pw", calibration=calibration)
    rows = [r for r in report.convs if r["design"]]
    assert rows and all(r["init_output_error"] is not None for r in rows)
    _, plain = onnx_sk.optimize(MODEL, init="approx", design="dw-pw")
    # the same convs, fitted to the weights only: a larger output error on the same patches
    assert all(r["init_output_error"] < 1.0 for r in rows)
    assert [r["name"] for r in rows] == [r["name"] for r in plain.convs if r["design"]]
    assert report.verification is not None


def test_max_error_zero_keeps_everything_and_infinity_takes_the_cheapest():
    _, none = onnx_sk.optimize(MODEL, init="approx", max_error=0.0)
    assert none.replaced == 0
    kept = [r for r in none.convs if r["reason"] and r["reason"].startswith("no design within")]
    assert kept and all("error" in r["reason"] for r in kept)
    assert any(r["reason"].startswith("first conv") for r in none.convs)  # policy reasons stand
    _, all_ = onnx_sk.optimize(MODEL, init="approx", max_error=1e9)
    _, plain = onnx_sk.optimize(MODEL, init="approx")
    assert [(r["design"], r["groups"]) for r in all_.convs] == [
        (r["design"], r["groups"]) for r in plain.convs
    ]


def test_max_error_picks_the_cheapest_design_within_the_budget():
    tau = 0.8
    _, report = onnx_sk.optimize(MODEL, init="approx", max_error=tau)
    replaced = [r for r in report.convs if r["design"]]
    assert replaced, "some conv of this trained-like net fits within 0.8"
    for r in replaced:
        assert r["init_error"] <= tau + 1e-9


def test_a_larger_budget_never_costs_more_parameters():
    w = np.random.default_rng(0).standard_normal((32, 16, 3, 3)).astype(np.float32)
    model = conv_model(w, attrs={"pads": [1, 1, 1, 1]})
    params = []
    for tau in (0.5, 0.7, 0.8, 0.9, 0.95, 1.0):
        _, report = onnx_sk.optimize(model, init="approx", max_error=tau, include_first=True)
        row = report.convs[0]
        assert row["design"] is None or row["init_error"] <= tau
        params.append(row["params_after"])
    assert params == sorted(params, reverse=True) and params[0] > params[-1]


def test_layer_error_matches_the_reported_error():
    from onnx_sk.maths.designs import realisations
    from onnx_sk.maths.spec import ConvSpec

    w = np.random.default_rng(0).standard_normal((8, 8, 3, 3)).astype(np.float32)
    real = realisations("dw-pw", ConvSpec(8, 8, (3, 3)))[0]
    assert 0 < layer_error(real, w, None) < 1


def test_for_training_inserts_identity_bns(tmp_path):
    out = tmp_path / "train.onnx"
    model, report = onnx_sk.optimize(
        MODEL, out, init="approx", design="pw-dw-pw", for_training=True
    )
    base, _ = onnx_sk.optimize(MODEL, init="approx", design="pw-dw-pw")
    bns = [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    base_bns = [n for n in base.graph.node if n.op_type == "BatchNormalization"]
    assert len(bns) - len(base_bns) == 2 * report.replaced  # after PW and DW, not the last PW
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    (a,) = session(base).run(None, {_input_name(): x})
    (b,) = session(onnx.load(out)).run(None, {_input_name(): x})
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
    assert report.verification is not None


def test_compare_identical_and_different(tmp_path, calibration):
    same = compare(MODEL, MODEL, samples=2, input_shapes={"": (1, 3, 32, 32)})
    assert same[0].max_abs_diff == 0 and same[0].cosine == pytest.approx(1.0)
    assert same[0].top1_agreement == 1.0
    out = tmp_path / "sk.onnx"
    onnx_sk.optimize(MODEL, out, init="he", design="dw-pw")
    diff = compare(MODEL, out, inputs=calibration)
    assert diff[0].shape[0] == 4 and diff[0].max_abs_diff > 0 and diff[0].cosine < 0.999


def test_compare_cli_json(tmp_path, calibration):
    proc = run_cli("compare", MODEL, MODEL, "--inputs", calibration, "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["outputs"][0]["max_abs_diff"] == 0.0 and doc["outputs"][0]["top1_agreement"] == 1.0


def test_bad_inputs(tmp_path, calibration):
    out = tmp_path / "o.onnx"
    assert_clean_error(
        run_cli("optimize", MODEL, out, "--init", "he", "--max-error", "0.5"),
        "--max-error needs --init approx (He weights do not approximate anything)",
    )
    assert_clean_error(
        run_cli("optimize", MODEL, out, "--init", "approx", "--calibration", tmp_path / "none.npz"),
        f"--calibration {tmp_path / 'none.npz'}: no such file",
    )
    bad = tmp_path / "bad.npz"
    np.savez(bad, other=np.zeros((1, 3, 8, 8), np.float32), more=np.zeros(1))
    assert_clean_error(
        run_cli("optimize", MODEL, out, "--init", "approx", "--calibration", bad),
        f"--calibration {bad}: no array for input(s) {_input_name()} (the file has other, more)",
    )
    assert_clean_error(
        run_cli("compare", MODEL, MODEL, "--samples", "0"),
        "--samples 0: expected a positive integer",
    )
    assert not out.exists()
