"""Hostile models through the real CLI: refused with exit code 2 and one exact line, or kept with
a reason; never a traceback, the input never touched, no output or temporary file left behind.

(The malformed-file cases — empty, truncated, random bytes, JSON, directory, external data —
are in ``test_bad_input.py``.)
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import MODELS, assert_clean_error, conv_model, digest, run_cli
from onnx import TensorProto, helper, numpy_helper


def _model(tmp: Path, name: str, edit=None, **kw) -> Path:
    """A one-conv model (8→8, 3×3) saved as ``name`` after ``edit(model)``, unchecked."""
    w = np.random.default_rng(0).standard_normal((8, 8, 3, 3)).astype(np.float32)
    model = conv_model(w, attrs={"pads": [1, 1, 1, 1]}, **kw)
    if edit is not None:
        edit(model)
    path = tmp / name
    path.write_bytes(model.SerializeToString())
    return path


def _refused(tmp: Path, src: Path, message: str, *extra: str) -> None:
    """optimize SRC OUT is refused with ``message``; SRC untouched, nothing written in ``tmp``."""
    before, listing = digest(src), sorted(p.name for p in tmp.iterdir())
    out = tmp / "out.onnx"
    assert_clean_error(run_cli("optimize", src, out, "--include-first", *extra), message)
    assert digest(src) == before
    assert sorted(p.name for p in tmp.iterdir()) == listing, "no output, no temporary file"


def _kept(tmp: Path, src: Path, reasons: dict[str, str]) -> dict:
    """optimize SRC OUT exits 0 and the JSON report gives each named conv its skip reason."""
    before = digest(src)
    out, rep = tmp / "kept_out.onnx", tmp / "kept_report.json"
    proc = run_cli("optimize", src, out, "--include-first", "--report", rep)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert digest(src) == before
    doc = json.loads(rep.read_text())
    got = {c["name"]: c["reason"] for c in doc["convs"]}
    for name, reason in reasons.items():
        assert got[name] == reason
    assert not [p for p in tmp.iterdir() if p.name.endswith(".tmp")]
    onnx.checker.check_model(str(out), full_check=True)
    return doc


def test_absurd_dims_refused_before_allocating(tmp_path):
    src = _model(tmp_path, "huge.onnx", dims=(1, None, 10**12, 10**12))
    _refused(
        tmp_path, src,
        "input 'x' of shape 1x8x1000000000000x1000000000000: 8000000000000000000000000 elements "
        "is absurdly large for a random input: refused",
    )  # fmt: skip


def test_dims_beyond_memory_refused_before_allocating(tmp_path):
    src = _model(tmp_path, "big.onnx", dims=(1, None, 40_000, 40_000))  # 12.8 G elements
    out = tmp_path / "out.onnx"
    proc = run_cli("optimize", src, out, "--include-first")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert re.fullmatch(
        r"error: input 'x' of shape 1x8x40000x40000: a random input needs 143\.1 GiB, more than "
        r"the \d+\.\d GiB of memory available: refused\n",
        proc.stderr,
    ), proc.stderr
    assert not out.exists()


def test_negative_input_dim(tmp_path):
    def edit(m):
        m.graph.input[0].type.tensor_type.shape.dim[2].dim_value = -5

    src = _model(tmp_path, "neg.onnx", edit)
    _refused(tmp_path, src, f"{src}: tensor 'x' has a negative dim (-5): not a valid ONNX model")


@pytest.mark.parametrize(
    "command", [["optimize"], ["optimize", "--mode", "widen"], ["analyze"]], ids=lambda c: c[-1]
)
def test_an_input_dim_fixed_at_zero_is_refused_at_load(tmp_path, command):
    """Batch 0: analyze and optimize said '--input-shape x: dim 1 contradicts the model's fixed
    dim 0' (no --input-shape was given), widen exited 1 from ONNX Runtime."""
    src = _model(tmp_path, "batch0.onnx", dims=(0, None, 16, 16))
    before, listing = digest(src), sorted(p.name for p in tmp_path.iterdir())
    out = [tmp_path / "out.onnx"] if command[0] == "optimize" else []
    assert_clean_error(
        run_cli(command[0], src, *out, *command[1:]),
        f"{src}: input 'x' has dim 0 fixed at 0 (shape 0x8x16x16): it takes only empty tensors, "
        "nothing to optimize or verify",
    )
    assert digest(src) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == listing


def test_negative_initializer_dims(tmp_path):
    def edit(m):
        m.graph.initializer[0].dims[0] = -8

    src = _model(tmp_path, "neg_w.onnx", edit)
    _refused(
        tmp_path, src, f"{src}: tensor 'w' has negative dims [-8, 8, 3, 3]: not a valid ONNX model"
    )


@pytest.mark.parametrize("opset", [1, 6])
def test_opset_too_old(tmp_path, opset):
    def edit(m):
        m.opset_import[0].version = opset

    src = _model(tmp_path, f"opset{opset}.onnx", edit)
    newest = onnx.defs.onnx_opset_version()
    _refused(
        tmp_path, src,
        f"{src} uses opset {opset} of the default ONNX domain; onnx-sk supports opsets 7 to "
        f"{newest} (upgrade it with onnx.version_converter)",
    )  # fmt: skip


def test_opset_newer_than_onnx_knows(tmp_path):
    newer = onnx.defs.onnx_opset_version() + 1

    def edit(m):
        m.opset_import[0].version = newer

    src = _model(tmp_path, "opset_new.onnx", edit)
    _refused(
        tmp_path, src,
        f"{src} uses opset {newer} of the default ONNX domain, newer than this onnx "
        f"({onnx.__version__}) knows ({newer - 1})",
    )  # fmt: skip


def test_ir_version_too_new(tmp_path):
    def edit(m):
        m.ir_version = onnx.IR_VERSION + 1

    src = _model(tmp_path, "ir_new.onnx", edit)
    _refused(
        tmp_path, src,
        f"{src} has IR version {onnx.IR_VERSION + 1}, newer than this onnx ({onnx.__version__}) "
        f"knows ({onnx.IR_VERSION})",
    )  # fmt: skip


def test_conv_weights_as_graph_input_are_kept(tmp_path):
    src = tmp_path / "in.onnx"
    shutil.copy(MODELS / "conv_weight_input.onnx", src)
    _kept(
        tmp_path,
        src,
        {"conv_dynamic_weight": "weights are not constant (a graph input or computed)"},
    )


def test_convs_inside_if_and_loop_are_kept(tmp_path):
    src = tmp_path / "in.onnx"
    shutil.copy(MODELS / "loop_conv.onnx", src)
    _kept(tmp_path, src, {"if_conv": "inside an If branch", "loop_conv": "inside a Loop body"})


def test_float16_model_is_written_unchanged(tmp_path):
    src = tmp_path / "in.onnx"
    shutil.copy(MODELS / "fp16_cnn.onnx", src)
    reason = "weights are float16: only float32 convs are rewritten"
    doc = _kept(
        tmp_path, src, {"/features/features.0/Conv": reason, "/features/features.3/Conv": reason}
    )
    assert doc["message"] == "no conv was replaced: the model is written unchanged"
    assert digest(tmp_path / "kept_out.onnx") == digest(src)


def test_bfloat16_model_is_written_unchanged(tmp_path):
    def edit(m):
        w = m.graph.initializer[0]
        values = numpy_helper.to_array(w).ravel().tolist()
        w.CopyFrom(helper.make_tensor("w", TensorProto.BFLOAT16, list(w.dims), values))
        m.graph.input[0].type.tensor_type.elem_type = TensorProto.BFLOAT16
        m.graph.output[0].type.tensor_type.elem_type = TensorProto.BFLOAT16
        onnx.checker.check_model(m, full_check=True)

    src = _model(tmp_path, "bf16.onnx", edit, opset=22)  # Conv takes bfloat16 from opset 22
    doc = _kept(tmp_path, src, {"conv": "weights are bfloat16: only float32 convs are rewritten"})
    assert doc["message"] == "no conv was replaced: the model is written unchanged"
    assert digest(tmp_path / "kept_out.onnx") == digest(src)


@pytest.mark.parametrize("name", ["qlinear_conv.onnx", "qdq_conv.onnx"])
def test_quantized_model_is_written_unchanged(tmp_path, name):
    src = tmp_path / "in.onnx"
    shutil.copy(MODELS / name, src)
    doc = _kept(tmp_path, src, {})
    assert all(c["design"] is None for c in doc["convs"])
    quantized = "; 1 quantized convs (QLinearConv/ConvInteger) are not rewritten"
    assert doc["message"] == "no conv was replaced: the model is written unchanged" + (
        quantized if name == "qlinear_conv.onnx" else ""
    )
    assert digest(tmp_path / "kept_out.onnx") == digest(src)


@pytest.mark.parametrize("how", ["symlink", "hardlink", "dot-dot path"])
def test_output_is_the_input_by_another_name(tmp_path, how):
    src = _model(tmp_path, "in.onnx")
    if how == "symlink":
        out = tmp_path / "alias.onnx"
        out.symlink_to(src)
    elif how == "hardlink":
        out = tmp_path / "alias.onnx"
        os.link(src, out)
    else:
        (tmp_path / "sub").mkdir()
        out = tmp_path / "sub" / ".." / "in.onnx"
    before, listing = digest(src), sorted(p.name for p in tmp_path.iterdir())
    assert_clean_error(
        run_cli("optimize", src, out, "--include-first"),
        f"output path {out} is the input model: refusing to overwrite it (pass --overwrite to allow)",
    )
    assert digest(src) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == listing


@pytest.mark.parametrize("out_name", ["out.onnx", "out.onnx.data"])
def test_output_would_overwrite_the_inputs_external_data(tmp_path, out_name):
    """OUT.data (or OUT itself) must never be the file the input's weights live in."""
    model = onnx.load(MODELS / "resnet18_w8_ext" / "model.onnx")
    src = tmp_path / "model.onnx"
    onnx.save(model, src, save_as_external_data=True, location="out.onnx.data", size_threshold=1024)
    data = tmp_path / "out.onnx.data"
    before, listing = digest(data), sorted(p.name for p in tmp_path.iterdir())
    target = data.name if out_name == "out.onnx" else out_name
    assert_clean_error(
        run_cli("optimize", src, tmp_path / out_name),
        f"output path {tmp_path / out_name} would overwrite {target}, the input model's external "
        "data: refused (choose another output name)",
    )
    assert digest(data) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == listing
