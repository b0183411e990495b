"""The distillation method's pieces: input mixing, KL on distributions, their detection, the
cosine schedule, and a distill run that uses all of them."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from helpers import MODELS, run_cli
from onnx import TensorProto, helper

import onnx_sk
from onnx_sk.training.method import NOISE, SHIFT, Method, augment, mix, spatial_axes
from onnx_sk.training.targets import distributions

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

from onnx_sk.training import fit  # noqa: E402 (needs torch)

TEACHER = MODELS / "table1_w16_bn.onnx"


def test_mix_replaces_a_fraction_by_convex_mixtures_of_the_batch():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 3, 4)).astype(np.float32)
    y = rng.standard_normal((8, 2)).astype(np.float32)
    out = mix({"x": x, "y": y}, 0.5, np.random.default_rng(1))
    again = mix({"x": x, "y": y}, 0.5, np.random.default_rng(1))
    assert all(np.array_equal(out[k], again[k]) for k in out)  # seeded
    assert out["x"].shape == x.shape and out["x"].dtype == np.float32
    assert np.array_equal(out["x"][4:], x[4:]) and np.array_equal(out["y"][4:], y[4:])
    # each mixed sample is λ·a + (1 − λ)·b of two samples, with one λ and pair for every input
    for i in range(4):
        found = False
        for a in range(8):
            for b in range(8):
                d = x[a] - x[b]
                if not np.any(d):
                    continue
                lam = float(np.sum((out["x"][i] - x[b]) * d) / np.sum(d * d))
                if (
                    -1e-5 <= lam <= 1 + 1e-5
                    and np.allclose(out["x"][i], lam * x[a] + (1 - lam) * x[b], atol=1e-5)
                    and np.allclose(out["y"][i], lam * y[a] + (1 - lam) * y[b], atol=1e-5)
                ):
                    found = True
        assert found, i
    assert mix({"x": x}, 0.0, rng)["x"] is x


def test_kl_divergence():
    t = torch.randn(5, 7, 3)
    assert float(fit.kl_divergence(t, t, 1, 4.0)) == pytest.approx(0.0, abs=1e-6)
    s = torch.randn(5, 7, 3)
    got = float(fit.kl_divergence(s, t, 1, 2.0))
    p, q = torch.softmax(t / 2, 1), torch.softmax(s / 2, 1)
    want = float((p * (p.log() - q.log())).sum(1).mean() * 4)
    assert got == pytest.approx(want, rel=1e-5) and got > 0
    # probabilities become logits up to a constant: the same divergence
    assert float(
        fit.kl_divergence(
            fit.as_logits(torch.softmax(s, 1), "probabilities"),
            fit.as_logits(torch.softmax(t, 1), "probabilities"),
            1,
            2.0,
        )
    ) == pytest.approx(got, rel=1e-4)


def _head(op: str, opset: int, axis: int | None) -> onnx.ModelProto:
    attrs = {} if axis is None else {"axis": axis}
    nodes = [
        helper.make_node("Relu", ["x"], ["h"]),
        helper.make_node(op, ["h"], ["p"], **attrs),
        helper.make_node("Relu", ["x"], ["r"]),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 3])],
        [
            helper.make_tensor_value_info("p", TensorProto.FLOAT, [2, 4, 3]),
            helper.make_tensor_value_info("r", TensorProto.FLOAT, [2, 4, 3]),
        ],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def test_distributions_found():
    held = {"p": np.zeros((2, 4, 3)), "r": np.zeros((2, 4, 3))}
    outs = ["p", "r"]
    assert distributions(_head("Softmax", 13, None), held, outs, None) == {
        "p": (2, "probabilities")
    }
    assert distributions(_head("LogSoftmax", 13, 1), held, outs, None) == {
        "p": (1, "log-probabilities")
    }
    # before opset 13 an axis that is not the last flattens: not a softmax along one axis
    assert distributions(_head("Softmax", 11, 1), held, outs, None) == {}
    assert distributions(_head("Softmax", 11, -1), held, outs, None) == {"p": (2, "probabilities")}
    # a class axis makes every other output with that axis a distribution of logits
    assert distributions(_head("Softmax", 13, None), held, outs, -2) == {
        "p": (2, "probabilities"),
        "r": (1, "logits"),
    }
    assert distributions(_head("Relu", 13, None), held, outs, 3) == {}


def test_cosine_schedule_decays_to_zero(monkeypatch):
    """Per step, ``lr · (1 + cos(π·f)) / 2`` with ``f`` the fraction of the stage's epochs done."""
    p = torch.nn.Parameter(torch.ones(1))
    seen: list[float] = []
    orig = torch.optim.Adam.step

    def step(self, *a, **k):
        seen.append(self.param_groups[0]["lr"])
        return orig(self, *a, **k)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    stage = fit.Stage("s", [p], lambda index: p.sum(), lambda: 0.0, dict, lambda s: None)
    fit.run_stage(stage, 8, 4, 3, 1.0, float("inf"), np.random.default_rng(0), fit.Curve(),
                  0.0, None, 100, "cosine")  # fmt: skip
    assert seen == pytest.approx([(1 + np.cos(np.pi * i / 6)) / 2 for i in range(6)])


def _images(n: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, 3, 8, 8)).astype(np.float32)
    return np.repeat(np.repeat(x, 2, axis=2), 2, axis=3)


def test_distill_with_mixing_kl_and_cosine(tmp_path):
    """The whole method on the tiny model: mixed batches labelled by the teacher, KL on the
    outputs along the class axis, cosine schedule; the student gets closer to the teacher and the
    run is deterministic for a seed."""
    student = tmp_path / "student.onnx"
    onnx_sk.optimize(TEACHER, student, init="he", input_shape=["input:1x3x16x16"])
    data = tmp_path / "data.npz"
    np.savez(data, input=_images(64))
    m = Method(mix=0.5, schedule="cosine", temperature=2.0)
    runs = []
    for name in ("a.onnx", "b.onnx"):
        runs.append(
            onnx_sk.distill(
                TEACHER,
                student,
                tmp_path / name,
                data,
                epochs=4,
                holdout=0.25,
                seed=0,
                class_axis=1,
                method=m,
            )  # fmt: skip
        )
    r = runs[0]
    out = onnx.load(TEACHER).graph.output[0].name
    assert r.options["method"]["distributions"] == {out: (1, "logits")}
    assert r.holdout_loss_after < r.holdout_loss_before
    assert r.after[0].cosine > r.before[0].cosine
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()


def test_recover_class_axis_trains_kl_and_reports_agreement(tmp_path):
    """``optimize --recover ... --recover-class-axis 1``: the output is trained by KL along axis 1
    (the report's method says so) and the fidelity gives the argmax agreement."""
    data = tmp_path / "data.npz"
    np.savez(data, input=_images(32))
    out, report = tmp_path / "o.onnx", tmp_path / "r.json"
    proc = run_cli(
        "optimize", TEACHER, out, "--init", "he", "--objective", "params", "--recover", data,
        "--recover-epochs", "1", "--recover-class-axis", "1", "--report", report,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rec = json.loads(report.read_text())["recovery"]
    name = onnx.load(TEACHER).graph.output[0].name
    assert rec["options"]["class_axis"] == 1
    assert rec["options"]["method"]["distributions"] == {name: [1, "logits"]}
    assert rec["after"][0]["argmax_agreement"] is not None


@pytest.mark.parametrize(
    ("flag", "key", "recover_value", "distill_value", "recover_bad", "distill_bad"),
    [("mix", "mix", "0.5", "0.25", "1.5", "-0.1"),
     ("carried-lr", "carried_lr", "0.5", "0", "2", "-1")],
)  # fmt: skip
def test_method_options_from_the_command_lines(
    tmp_path, flag, key, recover_value, distill_value, recover_bad, distill_bad
):
    """``--recover-<flag>`` (optimize) and ``--<flag>`` (distill) reach the method; out of
    [0, 1]: one line, exit 2, nothing written."""
    data = tmp_path / "data.npz"
    np.savez(data, input=_images(32))
    out, report = tmp_path / "o.onnx", tmp_path / "r.json"
    proc = run_cli(
        "optimize", TEACHER, out, "--init", "he", "--objective", "params", "--recover", data,
        "--recover-epochs", "1", f"--recover-{flag}", recover_value, "--report", report,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    method = json.loads(report.read_text())["recovery"]["options"]["method"]
    assert method[key] == float(recover_value)
    distilled, dreport = tmp_path / "d.onnx", tmp_path / "d.json"
    proc = run_cli("distill", TEACHER, out, distilled, "--data", data, "--epochs", "1",
                   f"--{flag}", distill_value, "--report", dreport)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(dreport.read_text())["options"]["method"][key] == float(distill_value)
    for args, name in (
        (("optimize", TEACHER, tmp_path / "x.onnx", "--recover", data,
          f"--recover-{flag}", recover_bad), f"--recover-{flag}"),
        (("distill", TEACHER, out, tmp_path / "x.onnx", "--data", data, f"--{flag}",
          distill_bad), f"--{flag}"),
    ):  # fmt: skip
        proc = run_cli(*args)
        assert proc.returncode == 2 and proc.stderr.startswith(f"error: {name} must be in [0, 1]")
        assert len(proc.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize(("schedule", "epochs_run"), [("constant", 1), ("cosine", 5)])
def test_patience_waits_for_half_the_cosine_schedule(schedule, epochs_run):
    """A held-out loss that never improves stops a constant-rate stage after ``patience`` epochs,
    a cosine stage only ``patience`` epochs into the second half of its epochs."""
    p = torch.nn.Parameter(torch.ones(1))
    stage = fit.Stage("s", [p], lambda index: p.sum(), lambda: 1.0, dict, lambda s: None)
    curve = fit.Curve()
    fit.run_stage(stage, 8, 4, 10, 1e-3, float("inf"), np.random.default_rng(0), curve, 0.0,
                  None, 1, schedule)  # fmt: skip
    assert len(curve.rows) == epochs_run


def test_a_cosine_stage_with_a_deadline_runs_to_it():
    """With a time budget (a finite deadline) the patience stop does not end a cosine stage: a
    held-out loss that never improves still gets every epoch the deadline allows; a constant-rate
    stage still stops."""
    import time

    p = torch.nn.Parameter(torch.ones(1))
    stage = fit.Stage("s", [p], lambda index: p.sum(), lambda: 1.0, dict, lambda s: None)
    for schedule, epochs_run in (("cosine", 10), ("constant", 1)):
        curve = fit.Curve()
        fit.run_stage(stage, 8, 4, 10, 1e-3, time.monotonic() + 600, np.random.default_rng(0),
                      curve, 0.0, None, 1, schedule)  # fmt: skip
        assert len(curve.rows) == epochs_run, schedule


def test_augment_perturbs_a_fraction_alike_in_every_input():
    rng = np.random.default_rng(0)
    grid = np.arange(16, dtype=np.float32) / 16
    phase = rng.uniform(0, 1, size=(8, 3, 1, 1)).astype(np.float32)
    x = np.sin(2 * np.pi * (grid[:, None] + grid[None, :] + phase))  # smooth [8, 3, 16, 16]
    ids = np.arange(8, dtype=np.int64)
    out = augment({"x": x, "ids": ids}, 0.5, np.random.default_rng(1))
    again = augment({"x": x, "ids": ids}, 0.5, np.random.default_rng(1))
    assert np.array_equal(out["x"], again["x"])  # deterministic for the generator
    assert out["x"].shape == x.shape and out["x"].dtype == x.dtype
    assert out["ids"] is ids  # integer inputs are not perturbed
    assert np.array_equal(out["x"][4:], x[4:])  # the other half as given
    for i in range(4):
        a, b = out["x"][i], x[i]
        assert not np.array_equal(a, b)
        # a perturbation, not a new sample: close to the original relative to its spread
        assert np.linalg.norm(a - b) < np.linalg.norm(b - b.mean())
    assert augment({"x": x}, 0.0, rng)["x"] is x


def test_augment_shift_and_noise_amounts():
    """A ramp along W: after the shift by s whole pixels (edges repeated) and the contrast
    factor f about the shifted sample's mean m, the centre reads f·j + (1 − f)·m(s) − f·s. The
    fit of that line recovers f within the contrast range and one integer s within SHIFT of the
    width, with a residual at the noise level."""
    ramp = np.tile(np.arange(64, dtype=np.float32), (1, 2, 64, 1))  # [1, 2, 64, 64], along W
    cols = np.arange(20, 44)
    shifts = []
    for seed in range(6):
        out = augment({"x": ramp}, 1.0, np.random.default_rng(seed))["x"][0, 0, 20:44, 20:44]
        f, c = np.polyfit(np.tile(cols, 24), out.ravel(), 1)  # slope: the contrast factor
        assert 0.79 < f < 1.26
        resid = out - (f * cols + c)
        assert np.std(resid) < 3 * NOISE * ramp.std()  # noise at its stated level, no more
        max_s = int(64 * SHIFT)
        err = {
            s: abs(c - ((1 - f) * np.clip(np.arange(64) - s, 0, 63).mean() - f * s))
            for s in range(-max_s - 2, max_s + 3)
        }
        s = min(err, key=err.get)
        assert err[s] < 0.3 and abs(s) <= max_s  # a whole-pixel shift within SHIFT
        shifts.append(s)
    assert any(shifts)  # the samples do move
    assert spatial_axes(np.zeros((2, 3, 8, 8))) == (2, 3)
    assert spatial_axes(np.zeros((2, 8, 8, 3))) == (1, 2)
    assert spatial_axes(np.zeros((2, 4, 100))) == (2,)


def test_distill_with_augmentation(tmp_path):
    """Augmented batches, labelled by the teacher as drawn: the student gets closer to it and
    the run is deterministic for a seed; --augment and --recover-augment reach the method."""
    student = tmp_path / "student.onnx"
    onnx_sk.optimize(TEACHER, student, init="he", input_shape=["input:1x3x16x16"])
    data = tmp_path / "data.npz"
    np.savez(data, input=_images(64))
    runs = [
        onnx_sk.distill(
            TEACHER,
            student,
            tmp_path / name,
            data,
            epochs=4,
            holdout=0.25,
            seed=0,
            method=Method(augment=1.0),
        )  # fmt: skip
        for name in ("a.onnx", "b.onnx")
    ]
    r = runs[0]
    assert r.options["method"]["augment"] == 1.0
    assert r.holdout_loss_after < r.holdout_loss_before
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    report = tmp_path / "r.json"
    proc = run_cli(
        "optimize", TEACHER, tmp_path / "o.onnx", "--init", "he", "--objective", "params",
        "--recover", data, "--recover-epochs", "1", "--recover-augment", "0.5",
        "--recover-threads", "2", "--report", report,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(report.read_text())["recovery"]["options"]["method"]["augment"] == 0.5
    for args, flag in (
        (("--recover-augment", "2"), "--recover-augment must be in [0, 1]"),
        (("--recover-threads", "0"), "--recover-threads must be at least 1"),
    ):
        proc = run_cli("optimize", TEACHER, tmp_path / "x.onnx", "--recover", data, *args)
        assert proc.returncode == 2 and proc.stderr.startswith(f"error: {flag}"), proc.stderr
        assert not (tmp_path / "x.onnx").exists()


def test_carried_weights_train_at_their_own_rate(monkeypatch):
    """The parameters in a stage's ``slow`` set get ``slow_lr`` times the rate, through the
    whole cosine schedule."""
    fast, slow = torch.nn.Parameter(torch.ones(1)), torch.nn.Parameter(torch.ones(1))
    seen: list[tuple[float, float]] = []
    orig = torch.optim.Adam.step

    def step(self, *a, **k):
        seen.append(tuple(g["lr"] for g in self.param_groups))
        return orig(self, *a, **k)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    stage = fit.Stage("s", [slow, fast], lambda index: (fast + slow).sum(), lambda: 0.0, dict,
                      lambda s: None, frozenset({id(slow)}))  # fmt: skip
    fit.run_stage(stage, 8, 4, 3, 1.0, float("inf"), np.random.default_rng(0), fit.Curve(),
                  0.0, None, 100, "cosine", 0.1)  # fmt: skip
    want = [(1 + np.cos(np.pi * i / 6)) / 2 for i in range(6)]
    assert [a for a, _ in seen] == pytest.approx(want)
    assert [b for _, b in seen] == pytest.approx([0.1 * w for w in want])
    # Adam moves each weight by about its rate per step: the slow one ten times less
    assert float(1 - slow.detach()) == pytest.approx(0.1 * float(1 - fast.detach()), rel=1e-3)


def test_distill_leaves_the_teachers_weights_at_rate_zero(tmp_path):
    """``carried_lr=0``: the weights the student shares with the teacher (same name, same
    values: here the kept first conv, the head) come out unchanged, onnx-sk's new ones train."""
    from onnx import numpy_helper

    student = tmp_path / "student.onnx"
    onnx_sk.optimize(TEACHER, student, init="he", input_shape=["input:1x3x16x16"])
    data = tmp_path / "data.npz"
    np.savez(data, input=_images(64))
    out = tmp_path / "out.onnx"
    r = onnx_sk.distill(TEACHER, student, out, data, epochs=3, holdout=0.25, seed=0,
                        method=Method(carried_lr=0.0))  # fmt: skip
    assert r.holdout_loss_after < r.holdout_loss_before
    teacher = {t.name: numpy_helper.to_array(t) for t in onnx.load(TEACHER).graph.initializer}
    before = {t.name: numpy_helper.to_array(t) for t in onnx.load(student).graph.initializer}
    after = {t.name: numpy_helper.to_array(t) for t in onnx.load(out).graph.initializer}
    shared = [n for n in before if n in teacher and np.array_equal(teacher[n], before[n])]
    new = [n for n in before if n not in shared and before[n].dtype == np.float32]
    assert shared and new
    assert all(np.array_equal(after[n], before[n]) for n in shared)
    assert sum(not np.array_equal(after[n], before[n]) for n in new) >= len(new) // 2
