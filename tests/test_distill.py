"""distill: a He-initialised SK student trained on unlabelled inputs gets closer to its teacher.

Teacher: models/table1_w16_bn.onnx (convs, BN, residual Adds, symbolic batch and spatial dims);
student: its ``onnx-sk optimize`` output (He init, far from the teacher). Inputs: seeded
low-frequency random images (2×2 blocks of normal draws), 96 samples at 3×16×16.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from helpers import MODELS, assert_clean_error, digest, run_cli

import onnx_sk
from onnx_sk.runtime.compare import difference
from onnx_sk.runtime.session import session
from onnx_sk.training import targets as targets_module
from onnx_sk.training.blocks import anchors, cut
from onnx_sk.training.data import load_samples
from onnx_sk.training.samples import read_npz

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

TEACHER = MODELS / "table1_w16_bn.onnx"


def _images(n: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, 3, 8, 8)).astype(np.float32)
    return np.repeat(np.repeat(x, 2, axis=2), 2, axis=3)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("distill")
    student = d / "student.onnx"
    onnx_sk.optimize(TEACHER, student, init="he", input_shape=["input:1x3x16x16"])
    data = d / "data.npz"
    np.savez(data, input=_images(96))
    return d, student, data


@pytest.fixture(scope="module")
def distilled(setup):
    d, student, data = setup
    before = digest(student)
    r = onnx_sk.distill(TEACHER, student, d / "out.onnx", data, epochs=6, holdout=0.25, seed=0)
    assert digest(student) == before
    return r


def test_held_out_loss_falls_and_output_gets_closer(distilled):
    r = distilled
    assert r.blocks > 1 and r.anchors  # the replaced convs' outputs are block targets
    assert r.stage1_skipped is None
    stages = {row["stage"] for row in r.curve}
    assert stages == {"blocks", "end-to-end"}
    assert r.holdout_loss_after < 0.1 * r.holdout_loss_before
    (b,), (a,) = r.before, r.after
    assert a.cosine > b.cosine + 0.2
    assert a.max_abs_diff < b.max_abs_diff and a.mean_abs_diff < b.mean_abs_diff
    assert r.holdout_samples == 24 and r.train_samples == 72


def test_written_model_is_the_student_graph_with_new_weights(setup, distilled):
    d, student, data = setup
    s, w = onnx.load(student), onnx.load(distilled.output)
    onnx.checker.check_model(w, full_check=True)
    assert [(n.op_type, list(n.input), list(n.output)) for n in s.graph.node] == [
        (n.op_type, list(n.input), list(n.output)) for n in w.graph.node
    ]
    assert s.graph.input == w.graph.input and s.graph.output == w.graph.output
    assert [t.name for t in s.graph.initializer] == [t.name for t in w.graph.initializer]
    changed = [
        t.name
        for t, u in zip(s.graph.initializer, w.graph.initializer, strict=True)
        if t.raw_data != u.raw_data
    ]
    assert changed
    # the reported fidelity is what ONNX Runtime gives for the written file and the teacher
    x = _images(96)
    held = np.random.default_rng(0).permutation(96)[:24]
    xs = x[held]
    want = session(TEACHER).run(None, {"input": xs})[0]
    got = session(str(distilled.output)).run(None, {"input": xs})[0]
    diff = difference(want, got)
    assert diff.cosine == pytest.approx(distilled.after[0].cosine, abs=1e-6)
    assert diff.max_abs_diff == pytest.approx(distilled.after[0].max_abs_diff, rel=1e-5)


def test_same_seed_same_file_and_iterable_data(setup, tmp_path):
    """An iterable of one-sample dicts gives the byte-identical file the .npz gives."""
    d, student, data = setup
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    onnx_sk.distill(TEACHER, student, a, data, epochs=2, seed=3)
    items = ({"input": x[None]} for x in _images(96))
    onnx_sk.distill(TEACHER, student, b, items, epochs=2, seed=3)
    assert digest(a) == digest(b)


def test_teacher_as_student_trains_on_aligned_targets(setup, tmp_path):
    """A student equal to its teacher starts at zero loss: every batch's targets belong to its
    inputs (a shuffled pairing would show as a training loss far above zero). A tiny learning
    rate: Adam takes steps of about ``lr`` even on rounding-noise gradients."""
    d, student, data = setup
    r = onnx_sk.distill(
        TEACHER, TEACHER, tmp_path / "o.onnx", data, epochs=1, batch_size=16, lr=1e-9
    )
    assert r.holdout_loss_before < 1e-9
    assert [row["stage"] for row in r.curve] == ["blocks", "end-to-end"]
    assert all(row["train_loss"] < 1e-6 for row in r.curve)
    assert r.after[0].cosine > 1 - 1e-6


def test_batch_fixed_at_one(setup, tmp_path):
    """A model whose batch is fixed at 1 is fed one sample at a time (ORT refuses a batch of 4)."""
    d, student, data = setup
    models = []
    for src, name in ((TEACHER, "t1.onnx"), (student, "s1.onnx")):
        m = onnx.load(src)
        m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
        onnx.save(m, tmp_path / name)
        models.append(tmp_path / name)
    small = tmp_path / "small.npz"
    np.savez(small, input=_images(12))
    r = onnx_sk.distill(*models, tmp_path / "o.onnx", small, epochs=1, batch_size=4)
    assert r.holdout_loss_after < r.holdout_loss_before
    assert r.after[0].mean_abs_diff < r.before[0].mean_abs_diff
    assert r.verification_max_abs_diff < 1e-3


def test_cli_writes_model_and_report(setup, tmp_path):
    d, student, data = setup
    out, report = tmp_path / "o.onnx", tmp_path / "r.json"
    proc = run_cli(
        "distill", TEACHER, student, out, "--data", data, "--epochs", "2", "--report", report,
        "--class-axis", "1",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "cosine to the teacher" in proc.stdout and "held-out loss" in proc.stdout
    doc = json.loads(report.read_text())
    assert doc["output"] == str(out) and doc["samples"] == 96
    assert {"cosine", "max_abs_diff", "mean_abs_diff"} <= set(doc["after"][0])
    assert "argmax agreement" in proc.stdout
    assert "blocks epoch 1/2" in proc.stdout and "stage ETA" in proc.stdout
    # the agreement is the fraction of held-out samples whose class is the teacher's
    x = _images(96)[np.random.default_rng(0).permutation(96)[:19]]
    want = session(TEACHER).run(None, {"input": x})[0].argmax(1)
    got = session(str(out)).run(None, {"input": x})[0].argmax(1)
    assert doc["after"][0]["argmax_agreement"] == pytest.approx(np.mean(want == got))
    assert len(doc["curve"]) >= 2 and doc["holdout_loss_after"] < doc["holdout_loss_before"]


def test_npz_stored_arrays_are_memory_mapped(tmp_path):
    x = _images(5)
    np.savez(tmp_path / "a.npz", input=x)
    np.savez_compressed(tmp_path / "b.npz", input=x)
    a, b = read_npz(tmp_path / "a.npz")["input"], read_npz(tmp_path / "b.npz")["input"]
    assert isinstance(a, np.memmap) and not isinstance(b, np.memmap)
    assert np.array_equal(a, x) and np.array_equal(b, x)


BAD = [
    ("empty", {"input": np.zeros((0, 3, 16, 16), np.float32)}, "0 samples (empty)"),
    ("no-arrays", {}, "no arrays (empty)"),
    ("missing", {"x": _images(4)}, "no array for input(s) input (it has x)"),
    (
        "dtype",
        {"input": _images(4).astype(np.float64)},
        "array 'input' is float64, the model's input is float32",
    ),
    (
        "shape",
        {"input": np.zeros((4, 4, 16, 16), np.float32)},
        "array 'input' has shape 4x4x16x16; the model's input is ?x3x?x? (first axis = samples)",
    ),
    (
        "rank",
        {"input": np.zeros((4, 3, 16), np.float32)},
        "array 'input' has shape 4x3x16; the model's input is ?x3x?x? (first axis = samples)",
    ),
    (
        "nan",
        {"input": np.where(_images(4) > 2, np.nan, _images(4))},
        "array 'input' holds NaN or Inf values",
    ),
    (
        "inf",
        {"input": np.full((4, 3, 16, 16), np.inf, np.float32)},
        "array 'input' holds NaN or Inf values",
    ),
    (
        "one",
        {"input": _images(1)},
        "1 sample cannot be split for --holdout 0.2 (need 2+)",
    ),
]


@pytest.mark.parametrize("case,arrays,message", BAD, ids=[c[0] for c in BAD])
def test_bad_data_one_line_error_nothing_written(setup, tmp_path, case, arrays, message):
    d, student, _ = setup
    data = tmp_path / "bad.npz"
    np.savez(data, **{k: v.astype(v.dtype) for k, v in arrays.items()})
    out = tmp_path / "out.onnx"
    proc = run_cli("distill", TEACHER, student, out, "--data", data)
    assert_clean_error(proc, f"--data {data}: {message}")
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["bad.npz"]


def test_bad_files_and_options(setup, tmp_path):
    d, student, data = setup
    out = tmp_path / "out.onnx"
    proc = run_cli("distill", TEACHER, student, out, "--data", tmp_path / "none.npz")
    assert_clean_error(proc, f"--data {tmp_path / 'none.npz'}: no such file")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    proc = run_cli("distill", TEACHER, student, out, "--data", tmp_path / "junk.npz")
    assert_clean_error(
        proc, f"--data {tmp_path / 'junk.npz'}: not a readable .npz file (BadZipFile)"
    )
    proc = run_cli("distill", TEACHER, student, out, "--data", data, "--holdout", "1")
    assert_clean_error(proc, "--holdout must be in [0, 1) (got 1.0)")
    fp16 = MODELS / "fp16_cnn.onnx"
    proc = run_cli("distill", fp16, fp16, out, "--data", data)
    assert_clean_error(proc, "distill trains float32 models; input 'input' is float16")
    proc = run_cli("distill", TEACHER, student, out, "--data", data, "--patience", "0")
    assert_clean_error(proc, "--patience must be at least 1 (got 0)")
    other = tmp_path / "other.onnx"
    m = onnx.load(student)
    m.graph.output[0].name = "renamed"
    m.graph.node[-1].output[0] = "renamed"
    onnx.save(m, other)
    proc = run_cli("distill", TEACHER, other, out, "--data", data)
    assert_clean_error(
        proc, "the student's outputs ['renamed'] differ from the teacher's ['logits']"
    )
    assert not out.exists()


def test_without_torch_one_line_error(setup, tmp_path):
    d, student, data = setup
    code = (
        "import sys; sys.modules['torch'] = None; from onnx_sk.cli import main; "
        f"sys.exit(main(['distill', {str(TEACHER)!r}, {str(student)!r}, "
        f"{str(tmp_path / 'o.onnx')!r}, '--data', {str(data)!r}]))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert_clean_error(proc, "distill needs PyTorch: pip install 'onnx-sk[torch]'")


def test_blocks_run_in_order_give_the_student(setup):
    """The student cut at the anchors: running the blocks one after another in ONNX Runtime, each
    on what the earlier ones computed, gives the whole student's outputs and anchors."""
    d, student, data = setup
    t, s = onnx.load(TEACHER), onnx.load(student)
    names = anchors(t, s)
    assert names[-1] == "logits" and len(names) == 13  # 12 convs + the output
    blocks = cut(s, names)
    x = _images(4)
    full = onnx.ModelProto()
    full.CopyFrom(s)
    for a in names[:-1]:
        full.graph.output.append(onnx.helper.make_tensor_value_info(a, 1, None))
    order = ["logits", *names[:-1]]
    want = dict(zip(order, session(full).run(None, {"input": x}), strict=True))
    env = {"input": x}
    for b in blocks:
        outs = session(b.model).run(None, {k: env[k] for k in b.inputs})
        env.update(zip(b.outputs, outs, strict=True))
        np.testing.assert_array_equal(env[b.anchor], want[b.anchor])
    assert sum(len(b.model.graph.node) for b in blocks) == len(s.graph.node)


def test_output_over_an_input_is_refused(setup):
    d, student, data = setup
    before = digest(student)
    proc = run_cli("distill", TEACHER, student, student, "--data", data)
    assert_clean_error(
        proc, f"output path {student} is the student model: refusing to overwrite it"
    )
    assert digest(student) == before


def test_targets_per_batch_equal_the_cache(setup, tmp_path, monkeypatch):
    """Training targets recomputed per batch (over the cache budget) give the same file."""
    d, student, data = setup
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    onnx_sk.distill(TEACHER, student, a, data, epochs=2, seed=1)
    monkeypatch.setattr(targets_module, "TARGET_CACHE_BYTES", 0)
    onnx_sk.distill(TEACHER, student, b, data, epochs=2, seed=1)
    assert digest(a) == digest(b)


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol: get_next() until None."""

    def __init__(self, x: np.ndarray) -> None:
        self.items = iter([{"input": x[i : i + 8]} for i in range(0, len(x), 8)])

    def get_next(self) -> dict | None:
        return next(self.items, None)


def test_reader_and_no_holdout(setup, tmp_path):
    """A CalibrationDataReader gives the samples; --holdout 0 measures on the training samples."""
    d, student, data = setup
    r = onnx_sk.distill(
        TEACHER, student, tmp_path / "o.onnx", _Reader(_images(40)), epochs=2, holdout=0
    )
    assert r.samples == 40 and r.train_samples == 40 and r.holdout_samples == 0
    assert r.holdout_loss_after < r.holdout_loss_before


def test_batch_fixed_above_one_refused():
    m = onnx.load(TEACHER)
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 4
    with pytest.raises(onnx_sk.UserError) as e:
        load_samples([{"input": _images(4)}], m, 0.2)
    assert str(e.value) == (
        "input 'input' has its batch fixed at 4: distill feeds a free batch or a batch fixed at 1"
    )
