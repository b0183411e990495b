"""optimize (Mode 1: reduce) on real exported models: verified, idempotent, deterministic."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import MODELS, assert_clean_error, conv_model, run_cli

import onnx_sk
from onnx_sk.errors import VerificationError
from onnx_sk.maths.designs import DESIGNS
from onnx_sk.runtime.feeds import random_inputs
from onnx_sk.runtime.session import session
from onnx_sk.runtime.verify import check_outputs

REFERENCE = [
    "resnet20_cifar.onnx",
    "resnet20_cifar_dynamo.onnx",
    "table1_w16.onnx",
    "table1_w16_bn.onnx",
    "const_weights.onnx",
    "keras_cnn_tf2onnx.onnx",
    "resnet18_w8_ext/model.onnx",
]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _io_signature(model: onnx.ModelProto) -> list:
    inits = {i.name for i in model.graph.initializer}
    sig = []
    for vi in [*model.graph.input, *model.graph.output]:
        if vi.name in inits:
            continue
        t = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in t.shape.dim]
        sig.append((vi.name, t.elem_type, dims))
    return sig


@pytest.mark.parametrize("name", REFERENCE)
@pytest.mark.parametrize("design", [None, *DESIGNS])
def test_reference_models_optimize_and_verify(tmp_path, name, design):
    src = MODELS / name
    before = _sha(src)
    out = tmp_path / "out.onnx"
    model, report = onnx_sk.optimize(src, out, design=design, include_first=True)
    assert _sha(src) == before, "the input is never modified"
    assert report.replaced > 0
    assert (
        report.verification["checker"] and report.verification["fields_checked"] == report.replaced
    )
    written = onnx.load(out)
    onnx.checker.check_model(str(out), full_check=True)
    assert _io_signature(written) == _io_signature(onnx.load(src))
    if design is not None:
        used = {c["design"] for c in report.convs if c["design"]}
        fell_back = [c for c in report.convs if c["note"]]
        assert used <= {design} | {c["design"] for c in fell_back}
    assert report.totals["conv_params_after"] < report.totals["conv_params_before"]


def test_ext_data_model_is_written_with_external_data(tmp_path):
    out = tmp_path / "out.onnx"
    onnx_sk.optimize(MODELS / "resnet18_w8_ext" / "model.onnx", out)
    assert (tmp_path / "out.onnx.data").exists()
    model = onnx.load(out, load_external_data=False)
    assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    onnx.checker.check_model(str(out), full_check=True)


def test_idempotent_and_deterministic(tmp_path):
    src = MODELS / "table1_w16.onnx"
    a, b, c = tmp_path / "a.onnx", tmp_path / "b.onnx", tmp_path / "c.onnx"
    onnx_sk.optimize(src, a, seed=7)
    onnx_sk.optimize(src, b, seed=7)
    assert _sha(a) == _sha(b), "same input and seed give a byte-identical file"
    _, report = onnx_sk.optimize(a, c, seed=7)
    assert report.replaced == 0
    assert _sha(c) == _sha(a), "optimizing the output again changes nothing"
    assert "written unchanged" in report.message


def test_first_conv_kept_by_default_and_policy_reasons():
    _, report = onnx_sk.optimize(
        MODELS / "table1_w16.onnx", exclude=["/stages/stages.0/body/body.0/Conv"], min_channels=64
    )
    reasons = {c["name"]: c["reason"] for c in report.convs}
    assert (
        reasons["/stem/stem.0/Conv"] == "first conv: kept by default (--include-first replaces it)"
    )
    assert reasons["/stages/stages.0/body/body.0/Conv"] == "excluded by --exclude"
    assert reasons["/stages/stages.0/body/body.3/Conv"] == "fewer than --min-channels 64 channels"
    assert reasons["/stages/stages.1/shortcut/shortcut.0/Conv"] == "pointwise (1×1) conv"
    assert reasons["/stages/stages.3/body/body.3/Conv"] is None


def test_objective_macs_differs_from_params_where_stride_matters():
    spec_model = MODELS / "table1_w16.onnx"
    _, by_params = onnx_sk.optimize(spec_model, objective="params", input_shape=["input:1x3x64x64"])
    _, by_macs = onnx_sk.optimize(spec_model, objective="macs", input_shape=["input:1x3x64x64"])
    assert by_macs.totals["conv_macs_after"] <= by_params.totals["conv_macs_after"]
    assert by_params.totals["conv_params_after"] <= by_macs.totals["conv_params_after"]


def test_unfused_bn_follows_the_last_stage(tmp_path):
    model, report = onnx_sk.optimize(MODELS / "table1_w16_bn.onnx", include_first=True)
    bns = [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    assert bns, "the BN nodes are kept"
    producers = {o: n for n in model.graph.node for o in n.output}
    assert all(producers[b.input[0]].op_type == "Conv" for b in bns)


def test_no_eligible_conv_is_written_unchanged(tmp_path, rng):
    w = rng.standard_normal((8, 8, 1, 1)).astype(np.float32)
    src = tmp_path / "pw.onnx"
    onnx.save(conv_model(w), src)
    out = tmp_path / "out.onnx"
    proc = run_cli("optimize", src, out)
    assert proc.returncode == 0, proc.stderr
    assert "no conv was replaced: the model is written unchanged" in proc.stdout
    assert _sha(out) == _sha(src)


@pytest.mark.parametrize(
    "name,reason",
    [
        ("conv_weight_input.onnx", "weights are not constant (a graph input or computed)"),
        ("fp16_cnn.onnx", "weights are float16: only float32 convs are rewritten"),
    ],
)
def test_skip_reasons_on_special_models(name, reason):
    _, report = onnx_sk.optimize(MODELS / name, include_first=True)
    assert reason in {c["reason"] for c in report.convs}


def test_conv_inside_subgraph_is_skipped_with_reason(tmp_path):
    _, report = onnx_sk.optimize(MODELS / "loop_conv.onnx", tmp_path / "o.onnx", include_first=True)
    reasons = [c["reason"] for c in report.convs]
    assert any(
        r and r.startswith("inside an If branch") or r and r.startswith("inside a Loop body")
        for r in reasons
    )


def test_quantized_model_says_nothing_to_do(tmp_path):
    for name in ("qlinear_conv.onnx", "qdq_conv.onnx"):
        out = tmp_path / name
        proc = run_cli("optimize", MODELS / name, out)
        assert proc.returncode == 0, proc.stderr
        assert "no conv was replaced" in proc.stdout


def test_cli_report_json(tmp_path):
    out, rep = tmp_path / "o.onnx", tmp_path / "r.json"
    proc = run_cli("optimize", MODELS / "resnet20_cifar.onnx", out, "--report", rep, "--seed", "3")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(rep.read_text())
    assert set(doc) == {
        "model", "output", "options", "convs", "totals", "verification", "fidelity", "message",
        "next_step", "quantized_convs",
    }  # fmt: skip
    row = next(c for c in doc["convs"] if c["design"])
    assert set(row) == {
        "name",
        "design",
        "groups",
        "bottleneck",
        "params_before",
        "params_after",
        "macs_before",
        "macs_after",
        "reason",
        "note",
        "init_error",
        "init_output_error",
    }
    assert doc["options"]["seed"] == 3


def test_bad_options(tmp_path):
    src = MODELS / "resnet20_cifar.onnx"
    out = tmp_path / "o.onnx"
    assert_clean_error(
        run_cli("optimize", src, out, "--design", "nope"),
        "--design 'nope': expected one of dw-pw, gc-pwg, pw-dw-pw, pwg-dw-pwg",
    )
    assert_clean_error(
        run_cli("optimize", src, out, "--objective", "speed"),
        "--objective 'speed': expected one of params, macs, latency",
    )
    assert_clean_error(
        run_cli("optimize", src, out, "--bottleneck-ratio", "0"),
        "--bottleneck-ratio 0.0: expected 0 < R <= 1",
    )
    assert not out.exists()


def test_verification_catches_a_wrong_rewrite(rng):
    """check_outputs is the numeric gate: a perturbed kernel must fail it."""
    w = rng.standard_normal((8, 8, 3, 3)).astype(np.float32) / 9
    model = conv_model(w, attrs={"pads": [1, 1, 1, 1]})
    feeds = random_inputs(model, np.random.default_rng(0), spatial=12)
    want = session(model).run(None, feeds)
    w_bad = w.copy()
    w_bad[0, 0, 1, 1] += 0.05
    got = session(conv_model(w_bad, attrs={"pads": [1, 1, 1, 1]})).run(None, feeds)
    with pytest.raises(VerificationError, match="differs from the dense-equivalent model"):
        check_outputs(["y"], want, ["y"], got)


def test_output_file_mode_follows_umask(tmp_path):
    out, rep = tmp_path / "o.onnx", tmp_path / "r.json"
    onnx_sk.optimize(MODELS / "resnet20_cifar.onnx", out)
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask
    from onnx_sk.graph.save import save_json

    save_json({"a": 1}, rep)
    assert rep.stat().st_mode & 0o777 == 0o666 & ~umask


def test_overwrite_input_when_asked(tmp_path):
    src = tmp_path / "m.onnx"
    shutil.copy(MODELS / "table1_w16.onnx", src)
    proc = run_cli("optimize", src, src, "--overwrite", "-q")
    assert proc.returncode == 0, proc.stderr
    model = onnx.load(src)
    onnx.checker.check_model(model, full_check=True)
    assert any("/sk/" in n.name for n in model.graph.node)
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"], "no temporary file left behind"
