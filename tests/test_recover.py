"""optimize --recover: optimize, then distill the result from the original, written once.

Model: models/table1_w16_bn.onnx (convs, BN, residual Adds, symbolic dims), He init (far from
the original, so recovery has something to recover). Inputs: seeded low-frequency random images
(2×2 blocks of normal draws) at 3×16×16, as in test_distill.py.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from helpers import MODELS, assert_clean_error, conv_model, digest, run_cli

import onnx_sk
from onnx_sk.graph.batchnorm import fold_into_convs
from onnx_sk.runtime.compare import difference
from onnx_sk.runtime.session import session

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

MODEL = MODELS / "table1_w16_bn.onnx"
SHAPE = ["input:1x3x16x16"]


def _images(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, 3, 8, 8)).astype(np.float32)
    return np.repeat(np.repeat(x, 2, axis=2), 2, axis=3)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same optimize without and with --recover; the fidelity on 16 other images."""
    d = tmp_path_factory.mktemp("recover")
    data, test = d / "data.npz", d / "test.npz"
    np.savez(data, input=_images(96, 0))
    np.savez(test, input=_images(16, 1))
    before = digest(MODEL)
    # params pinned: the same designs in both runs (--recover's default, latency, is measured)
    options = {"init": "he", "input_shape": SHAPE, "inputs": test, "objective": "params"}
    _, plain = onnx_sk.optimize(MODEL, d / "plain.onnx", **options)
    _, rec = onnx_sk.optimize(MODEL, d / "rec.onnx", recover=data, recover_epochs=6, **options)
    assert digest(MODEL) == before
    return d, plain, rec


def test_recovery_brings_the_output_closer_to_the_original(runs):
    d, plain, rec = runs
    (p,), (r,) = plain.fidelity["outputs"], rec.fidelity["outputs"]
    assert r["cosine"] > p["cosine"] + 0.3
    assert r["mean_abs_diff"] < 0.1 * p["mean_abs_diff"]
    # the reported fidelity is the written file's, measured again after recovery
    x = _images(16, 1)
    want = session(str(MODEL)).run(None, {"input": x})[0]
    got = session(str(d / "rec.onnx")).run(None, {"input": x})[0]
    diff = difference(want, got)
    assert r["cosine"] == pytest.approx(diff.cosine, abs=1e-6)
    assert r["max_abs_diff"] == pytest.approx(diff.max_abs_diff, rel=1e-5)
    assert rec.next_step.startswith("next: ")


def test_report_has_the_recovery_section(runs):
    d, plain, rec = runs
    s = rec.recovery
    assert s is not None and "recovery" not in plain.to_dict()
    assert s["samples"] == 96 and s["train_samples"] == 77 and s["holdout_samples"] == 19
    assert s["holdout_loss_after"] < 0.1 * s["holdout_loss_before"]
    assert s["after"][0]["cosine"] > s["before"][0]["cosine"] + 0.2
    assert s["seconds"] > 0 and len(s["curve"]) >= 2
    assert s["options"]["epochs"] == 6 and s["options"]["seed"] == 0
    # the fidelity before recovery is the plain run's (same options, same seed)
    assert s["fidelity_before"] == plain.fidelity
    assert rec.to_dict()["recovery"] == s
    v = rec.verification["recovery"]
    assert v["checker"] and v["only_weights_changed"] and v["fields_checked"] == 8
    assert v["runtime_vs_trained_max_abs_diff"] < 1e-3
    assert rec.options["recover"] == str(d / "data.npz")


def test_only_the_weights_change(runs):
    d, _, _ = runs
    plain, rec, original = (onnx.load(p) for p in (d / "plain.onnx", d / "rec.onnx", MODEL))
    onnx.checker.check_model(rec, full_check=True)
    assert rec.graph.input == original.graph.input and rec.graph.output == original.graph.output
    assert [(n.op_type, list(n.input), list(n.output)) for n in plain.graph.node] == [
        (n.op_type, list(n.input), list(n.output)) for n in rec.graph.node
    ]
    assert [(t.name, list(t.dims)) for t in plain.graph.initializer] == [
        (t.name, list(t.dims)) for t in rec.graph.initializer
    ]
    assert any(
        a.raw_data != b.raw_data
        for a, b in zip(plain.graph.initializer, rec.graph.initializer, strict=True)
    )


def test_cli_prints_recovery_and_writes_the_report(runs, tmp_path):
    d, _, _ = runs
    out, report = tmp_path / "o.onnx", tmp_path / "r.json"
    proc = run_cli(
        "optimize", MODEL, out, "--init", "he", "--objective", "macs", "--recover",
        d / "data.npz", "--recover-epochs", "2", "--recover-holdout", "0.5", "--report", report,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(report.read_text())
    assert doc["recovery"]["holdout_samples"] == 48 and doc["options"]["objective"] == "macs"
    assert "recovered by distillation from the original on 96 samples" in proc.stdout
    assert "after recovery: full checker ok, only the weights changed" in proc.stdout
    assert "before recovery, fidelity against the original" in proc.stdout
    assert out.exists()


def test_default_objective_is_latency_where_sizes_are_static(runs, tmp_path):
    """--recover without --objective: latency when every replaceable conv's input size is known
    (here from --input-shape), else params (the model's spatial dims are symbolic); without
    --recover, params. The report and the written metadata say which was used."""
    d, _, _ = runs
    data = d / "data.npz"
    small = {"recover": data, "recover_epochs": 1, "init": "he"}
    _, rep = onnx_sk.optimize(MODEL, tmp_path / "a.onnx", input_shape=SHAPE, **small)
    assert rep.options["objective"] == "latency"
    meta = {p.key: p.value for p in onnx.load(tmp_path / "a.onnx").metadata_props}
    if rep.replaced:  # measured: on this tiny model the dense convs may all be the fastest
        assert json.loads(meta["onnx_sk.options"])["objective"] == "latency"
    else:
        assert "onnx_sk.options" not in meta and rep.recovery["skipped"]
    _, rep = onnx_sk.optimize(MODEL, tmp_path / "b.onnx", **small)
    assert rep.options["objective"] == "params"
    _, rep = onnx_sk.optimize(MODEL, tmp_path / "c.onnx", input_shape=SHAPE, init="he")
    assert rep.options["objective"] == "params" and rep.recovery is None
    _, rep = onnx_sk.optimize(MODEL, tmp_path / "d.onnx", mode="widen", **small)
    assert rep.options["objective"] == "params" and rep.recovery["samples"] == 96


def test_nothing_replaced_nothing_to_recover(runs, tmp_path):
    d, _, _ = runs
    out = tmp_path / "o.onnx"
    _, rep = onnx_sk.optimize(MODEL, out, min_channels=10**6, recover=d / "data.npz")
    assert rep.recovery == {"skipped": "no pass changed the model: nothing to recover"}
    assert digest(out) == digest(MODEL)


BAD = [
    ("missing", {"x": _images(4, 0)}, "no array for input(s) input (it has x)"),
    ("nan", {"input": np.full((4, 3, 16, 16), np.nan, np.float32)}, "holds NaN or Inf values"),
    ("one", {"input": _images(1, 0)}, "1 sample cannot be split for --recover-holdout 0.2"),
    ("dtype", {"input": _images(4, 0).astype(np.float64)}, "array 'input' is float64"),
]


@pytest.mark.parametrize("case,arrays,message", BAD, ids=[c[0] for c in BAD])
def test_bad_data_one_line_error_nothing_written(tmp_path, case, arrays, message):
    data = tmp_path / "bad.npz"
    np.savez(data, **arrays)
    out = tmp_path / "out.onnx"
    proc = run_cli("optimize", MODEL, out, "--recover", data)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: --recover {data}: ") and message in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npz"]


def test_bad_options_refused_before_any_work(tmp_path):
    out = tmp_path / "out.onnx"
    proc = run_cli("optimize", MODEL, out, "--recover", tmp_path / "none.npz")
    assert_clean_error(proc, f"--recover {tmp_path / 'none.npz'}: no such file")
    np.savez(tmp_path / "d.npz", input=_images(4, 0))
    before = digest(tmp_path / "d.npz")
    proc = run_cli("optimize", MODEL, tmp_path / "d.npz", "--recover", tmp_path / "d.npz")
    assert_clean_error(
        proc, f"output path {tmp_path / 'd.npz'} is the --recover data: refusing to overwrite it"
    )
    assert digest(tmp_path / "d.npz") == before
    for flag, value, message in (
        ("--recover-epochs", "0", "--recover-epochs must be at least 1 (got 0)"),
        ("--recover-holdout", "1", "--recover-holdout must be in [0, 1) (got 1.0)"),
        ("--recover-minutes", "-1", "--recover-minutes must be a positive number (got -1.0)"),
    ):
        proc = run_cli("optimize", MODEL, out, "--recover", tmp_path / "d.npz", flag, value)
        assert_clean_error(proc, message)
    assert not out.exists()


def test_without_torch_one_line_error(tmp_path):
    np.savez(tmp_path / "d.npz", input=_images(4, 0))
    code = (
        "import sys; sys.modules['torch'] = None; from onnx_sk.cli import main; "
        f"sys.exit(main(['optimize', {str(MODEL)!r}, {str(tmp_path / 'o.onnx')!r}, "
        f"'--recover', {str(tmp_path / 'd.npz')!r}]))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert_clean_error(proc, "--recover needs PyTorch: pip install 'onnx-sk[torch]'")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npz"]


def test_api_from_a_model_proto_and_without_verification(runs):
    """A ModelProto source is the teacher as given (never edited); --no-verify skips the
    re-checks and the fidelity, not distill's own check of the trained graph."""
    d, _, _ = runs
    proto = onnx.load(MODEL)
    copy = proto.SerializeToString()
    small = {"recover": d / "data.npz", "recover_epochs": 2, "init": "he", "objective": "params"}
    model, rep = onnx_sk.optimize(proto, None, input_shape=SHAPE, **small)
    assert proto.SerializeToString() == copy
    assert rep.recovery["after"][0]["cosine"] > rep.recovery["before"][0]["cosine"]
    assert rep.recovery["verification_max_abs_diff"] < 1e-3
    assert (
        rep.fidelity["outputs"][0]["cosine"]
        > rep.recovery["fidelity_before"]["outputs"][0]["cosine"]
    )
    onnx.checker.check_model(model, full_check=True)
    _, rep = onnx_sk.optimize(MODEL, d / "nv.onnx", verify=False, **small)
    assert rep.verification is None and rep.fidelity is None
    assert rep.recovery["samples"] == 96 and rep.recovery["fidelity_before"] is None


def test_fold_into_convs_is_exact_and_local():
    """conv → BN (random γ, β, mean, var) folded: the same outputs in ONNX Runtime, no BN left;
    a BN whose conv output is read twice stays."""
    rng = np.random.default_rng(0)
    m = conv_model(
        rng.standard_normal((6, 4, 3, 3)), rng.standard_normal(6), attrs={"pads": [1] * 4}
    )
    conv = next(n for n in m.graph.node if n.op_type == "Conv")
    out = conv.output[0]
    conv.output[0] = "pre"
    params = [rng.uniform(0.5, 2, 6), rng.standard_normal(6), rng.standard_normal(6),
              rng.uniform(0.5, 2, 6)]  # fmt: skip
    for name, v in zip(["bn_g", "bn_b", "bn_m", "bn_v"], params, strict=True):
        m.graph.initializer.append(onnx.numpy_helper.from_array(v.astype(np.float32), name))
    bn = onnx.helper.make_node(
        "BatchNormalization", ["pre", "bn_g", "bn_b", "bn_m", "bn_v"], [out], name="bn"
    )
    m.graph.node.insert(list(m.graph.node).index(conv) + 1, bn)
    x = rng.standard_normal((2, 4, 8, 8)).astype(np.float32)
    want = session(m).run(None, {m.graph.input[0].name: x})[0]
    shared = onnx.ModelProto()
    shared.CopyFrom(m)
    shared.graph.output.append(onnx.helper.make_tensor_value_info("pre", 1, None))
    assert fold_into_convs(shared, {"bn"}) == []  # the conv's output is also a graph output
    assert fold_into_convs(m, {"bn"}) == ["bn"]
    onnx.checker.check_model(m, full_check=True)
    assert [n.op_type for n in m.graph.node].count("BatchNormalization") == 0
    assert not {"bn_g", "bn_b", "bn_m", "bn_v"} & {t.name for t in m.graph.initializer}
    got = session(m).run(None, {m.graph.input[0].name: x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_for_training_bns_folded_after_recovery(runs, tmp_path):
    """--for-training --recover: the identity BNs train with the stages, then are folded into
    them: the written model has the original's BNs only, and its reported fidelity is its own."""
    d, _, _ = runs
    opts = {"init": "he", "input_shape": SHAPE, "objective": "params", "for_training": True}
    _, plain = onnx_sk.optimize(MODEL, tmp_path / "ft.onnx", **opts)
    inserted = [n.name for n in onnx.load(tmp_path / "ft.onnx").graph.node
                if n.op_type == "BatchNormalization" and n.name.endswith("/bn")]  # fmt: skip
    assert inserted
    _, rec = onnx_sk.optimize(
        MODEL, tmp_path / "rec.onnx", recover=d / "data.npz", recover_epochs=2, **opts
    )
    assert rec.recovery["training_bns_folded"] == len(inserted)
    written = onnx.load(tmp_path / "rec.onnx")
    bns = [n.name for n in written.graph.node if n.op_type == "BatchNormalization"]
    original = [n.name for n in onnx.load(MODEL).graph.node if n.op_type == "BatchNormalization"]
    assert sorted(bns) == sorted(original)
    x = _images(8, 3)
    want = session(str(MODEL)).run(None, {"input": x})[0]
    got = session(str(tmp_path / "rec.onnx")).run(None, {"input": x})[0]
    assert difference(want, got).cosine > plain.fidelity["outputs"][0]["cosine"]
    # distill reads the BNs off the student file's onnx-sk metadata and folds them too; its
    # check (ORT on the written file gives the trained module's outputs) runs on the folded file
    r = onnx_sk.distill(MODEL, tmp_path / "ft.onnx", tmp_path / "d.onnx", d / "data.npz", epochs=2)
    assert r.training_bns_folded == len(inserted)
    written = onnx.load(tmp_path / "d.onnx")
    bns = [n.name for n in written.graph.node if n.op_type == "BatchNormalization"]
    assert sorted(bns) == sorted(original)
    assert r.after[0].cosine > r.before[0].cosine
