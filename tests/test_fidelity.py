"""optimize's two checks kept apart: the structure verified (against the dense twin) and the
fidelity against the original; the next step; provenance in the written model's metadata."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from helpers import assert_clean_error, conv_model, run_cli

import onnx_sk
from onnx_sk.cli.optimize import print_checks
from onnx_sk.report import Report, next_step
from onnx_sk.runtime.compare import Accumulator
from onnx_sk.runtime.machine import onnx_sk_version
from onnx_sk.runtime.session import session


def _separable(rng: np.random.Generator, c: int = 8) -> np.ndarray:
    """A kernel DW+PW represents exactly: W[o, i] = P[o, i] · D[i]."""
    depthwise = rng.standard_normal((c, 3, 3))
    pointwise = rng.standard_normal((c, c))
    return pointwise[:, :, None, None] * depthwise[None]  # [c_out, c_in, 3, 3]


def _save(model: onnx.ModelProto, path, producer=("pytorch", "2.13.0")) -> str:
    model.producer_name, model.producer_version = producer
    onnx.save(model, path)
    return str(path)


def _expected(a, b, feeds) -> tuple[float, float, float]:
    """cosine, max and mean |b − a| of the one output, from two plain ORT sessions."""
    (ya,) = session(a).run(None, feeds)
    (yb,) = session(b).run(None, feeds)
    x, y = ya.astype(np.float64).ravel(), yb.astype(np.float64).ravel()
    return x @ y / np.linalg.norm(x) / np.linalg.norm(y), np.abs(y - x).max(), np.abs(y - x).mean()


def test_fidelity_is_measured_against_the_original_not_the_twin(tmp_path, rng):
    src = _save(conv_model(rng.standard_normal((8, 8, 3, 3))), tmp_path / "m.onnx")
    out = tmp_path / "o.onnx"
    shapes = ["x:1x8x16x16"]
    _, report = onnx_sk.optimize(src, out, init="he", include_first=True, input_shape=shapes)
    f = report.fidelity
    assert f["reference"] == "original"
    assert f["inputs"] == {"file": None, "seed": 0, "shapes": {"x": [1, 8, 16, 16]}}
    (row,) = f["outputs"]
    assert set(row) == {"name", "cosine", "max_abs_diff", "mean_abs_diff"} and row["name"] == "y"
    x = np.random.default_rng(0).standard_normal((1, 8, 16, 16)).astype(np.float32)
    cos, max_abs, mean_abs = _expected(src, str(out), {"x": x})
    assert row["cosine"] == pytest.approx(cos, rel=1e-6)
    assert row["max_abs_diff"] == pytest.approx(max_abs, rel=1e-6)
    assert row["mean_abs_diff"] == pytest.approx(mean_abs, rel=1e-6)
    # He weights: the structure is verified to rounding, yet far from the original
    assert report.verification["max_rel_diff"] < 1e-5 and row["cosine"] < 0.9
    assert report.next_step.startswith("next: the outputs differ from the original")
    assert f"onnx-sk export-torch {out} OUT.pt" in report.next_step
    assert f"onnx-sk distill IN.onnx {out} RECOVERED.onnx --data INPUTS.npz" in report.next_step
    assert "optimize --recover INPUTS.npz" in report.next_step


@pytest.mark.parametrize("widen_init", ["he", "preserve"])
def test_widen_fidelity_is_against_the_original(tmp_path, rng, widen_init):
    """In widen he mode the original's outputs the widen pass ran are reused, in preserve mode
    (widened after reduce) the original runs again: either way the figures are the original's."""
    w = [rng.standard_normal((8, 8, 3, 3)).astype(np.float32) for _ in range(2)]
    graph = onnx.helper.make_graph(
        [
            onnx.helper.make_node("Conv", ["x", "w0"], ["h"], name="c0", pads=[1] * 4),
            onnx.helper.make_node("Relu", ["h"], ["r"]),
            onnx.helper.make_node("Conv", ["r", "w1"], ["y"], name="c1", pads=[1] * 4),
        ],
        "two",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 8, 16, 16])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 8, 16, 16])],
        [onnx.numpy_helper.from_array(w[i], f"w{i}") for i in range(2)],
    )
    g = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    src = _save(g, tmp_path / "m.onnx")
    out = tmp_path / "o.onnx"
    _, report = onnx_sk.optimize(
        src, out, mode="widen", widen_init=widen_init, design="dw-pw", include_first=True
    )
    f = report.fidelity
    (row,) = f["outputs"]
    assert f["inputs"]["shapes"] == {"x": [1, 8, 16, 16]}
    x = np.random.default_rng(0).standard_normal((1, 8, 16, 16)).astype(np.float32)
    cos, max_abs, mean_abs = _expected(src, str(out), {"x": x})
    assert row["cosine"] == pytest.approx(cos, rel=1e-6)
    assert row["max_abs_diff"] == pytest.approx(max_abs, rel=1e-6)
    assert row["mean_abs_diff"] == pytest.approx(mean_abs, rel=1e-6)


def test_inputs_file_and_a_close_fit(tmp_path, rng):
    src = _save(conv_model(_separable(rng)), tmp_path / "m.onnx")
    data = tmp_path / "in.npz"
    x = rng.standard_normal((3, 8, 12, 12)).astype(np.float32)
    np.savez(data, x=x)
    out = tmp_path / "o.onnx"
    _, report = onnx_sk.optimize(
        src, out, init="approx", design="dw-pw", include_first=True, inputs=data
    )
    f = report.fidelity
    assert f["inputs"] == {"file": str(data), "seed": None}
    (row,) = f["outputs"]
    cos, max_abs, mean_abs = _expected(src, str(out), {"x": x})
    assert row["cosine"] == pytest.approx(cos, rel=1e-6) and row["cosine"] > 0.999999
    assert row["max_abs_diff"] == pytest.approx(max_abs, rel=1e-5)
    assert report.next_step.startswith("next: the outputs match the original closely")


def test_a_model_proto_is_compared_with_itself_as_given(rng):
    model = conv_model(rng.standard_normal((8, 8, 3, 3)))
    before = model.SerializeToString()
    _, report = onnx_sk.optimize(model, init="he", include_first=True)
    assert report.fidelity["outputs"][0]["cosine"] < 0.9
    assert model.SerializeToString() == before


def test_no_fidelity_without_verification_or_change(tmp_path, rng):
    src = _save(conv_model(rng.standard_normal((8, 8, 3, 3))), tmp_path / "m.onnx")
    _, report = onnx_sk.optimize(src, init="he", include_first=True, verify=False)
    assert report.fidelity is None and report.next_step == ""
    _, report = onnx_sk.optimize(src)  # the first conv is kept: nothing changes
    assert report.fidelity is None and report.to_dict()["fidelity"] is None


def test_cli_prints_two_separate_checks_and_the_next_step(tmp_path, rng):
    src = _save(conv_model(rng.standard_normal((8, 8, 3, 3))), tmp_path / "m.onnx")
    out, rep = tmp_path / "o.onnx", tmp_path / "r.json"
    proc = run_cli(
        "optimize", src, out, "--init", "he", "--include-first", "--input-shape", "x:1x8x16x16",
        "--report", rep,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    structure = next(i for i, line in enumerate(lines) if line.startswith("structure verified: "))
    assert "outputs match the dense-equivalent model at x 1×8×16×16" in lines[structure]
    assert lines[structure + 1].startswith(
        "fidelity against the original (seeded random input, x 1×8×16×16): y: cosine "
    )
    assert lines[structure + 2].startswith("next: the outputs differ from the original")
    doc = json.loads(rep.read_text())
    assert doc["fidelity"]["reference"] == "original" and doc["next_step"].startswith("next: ")


def test_missing_inputs_file(tmp_path, rng):
    src = _save(conv_model(rng.standard_normal((8, 8, 3, 3))), tmp_path / "m.onnx")
    out = tmp_path / "o.onnx"
    assert_clean_error(
        run_cli("optimize", src, out, "--inputs", tmp_path / "none.npz"),
        f"--inputs {tmp_path / 'none.npz'}: no such file",
    )
    assert not out.exists()
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x=np.zeros((1, 3, 8, 8), np.float32))  # 3 channels for an 8-channel conv
    proc = run_cli("optimize", src, out, "--include-first", "--inputs", wrong)
    assert proc.returncode == 2 and not out.exists()
    assert proc.stderr.startswith(
        f"error: --inputs {wrong}: a model does not run in ONNX Runtime on these inputs: "
    )
    assert len(proc.stderr.strip().splitlines()) == 1


def test_provenance_in_metadata(tmp_path, rng):
    src = _save(conv_model(rng.standard_normal((8, 8, 3, 3))), tmp_path / "m.onnx")
    out = tmp_path / "o.onnx"
    _, report = onnx_sk.optimize(src, out, init="he", include_first=True, seed=4)
    written = onnx.load(out)
    assert (written.producer_name, written.producer_version) == ("onnx-sk", onnx_sk_version())
    props = {p.key: p.value for p in written.metadata_props}
    assert props["onnx_sk.version"] == onnx_sk_version()
    assert props["onnx_sk.source_producer"] == "pytorch"
    assert props["onnx_sk.source_producer_version"] == "2.13.0"
    options = json.loads(props["onnx_sk.options"])
    assert options == report.options and options["seed"] == 4 and options["init"] == "he"


def test_provenance_keeps_the_first_source_and_other_entries(tmp_path, rng):
    model = conv_model(rng.standard_normal((8, 8, 3, 3)))
    model.metadata_props.add(key="onnx_sk.source_producer", value="tf2onnx")
    model.metadata_props.add(key="onnx_sk.source_producer_version", value="1.16")
    model.metadata_props.add(key="author", value="me")
    src = _save(model, tmp_path / "m.onnx", producer=("onnx-sk", "0.0.1"))
    out = tmp_path / "o.onnx"
    onnx_sk.optimize(src, out, init="he", include_first=True)
    props = {p.key: p.value for p in onnx.load(out).metadata_props}
    assert props["onnx_sk.source_producer"] == "tf2onnx" and props["author"] == "me"
    assert props["onnx_sk.source_producer_version"] == "1.16"
    assert list(props).count("onnx_sk.version") == 1


def test_an_unchanged_model_gets_no_provenance(tmp_path, rng):
    src = _save(conv_model(rng.standard_normal((8, 8, 3, 3))), tmp_path / "m.onnx")
    out = tmp_path / "o.onnx"
    onnx_sk.optimize(src, out)  # the only conv is the first: kept
    assert out.read_bytes() == open(src, "rb").read()


def test_a_non_finite_output_has_no_fidelity_figures(capsys):
    """NaN in an output (Conv → Log on random input): the measures are NaN, never a silent 0;
    the report says null, the line says so and the next step asks for inputs in the domain."""
    acc = Accumulator("z")
    acc.add(np.array([1.0, np.nan]), np.array([1.0, 2.0]))
    acc.add(np.array([1.0, 5.0]), np.array([1.0, 2.0]))
    assert np.isnan(acc.max_abs) and np.isnan(acc.cosine)
    fidelity = {
        "reference": "original",
        "inputs": {"file": None, "seed": 0, "shapes": {"x": [1, 8, 8, 8]}},
        "outputs": [{"name": "z", "cosine": None, "max_abs_diff": None, "mean_abs_diff": None}],
    }
    report = Report(None, "o.onnx", {}, fidelity=fidelity, next_step=next_step(fidelity, "o.onnx"))
    print_checks(report)
    out = capsys.readouterr().out
    assert "z: cosine not finite, max abs diff not finite" in out
    assert "give --inputs FILE.npz with inputs in the model's domain" in out


def test_the_init_error_column_has_its_footnote(tmp_path, rng):
    src = _save(conv_model(_separable(rng)), tmp_path / "m.onnx")
    proc = run_cli("optimize", src, tmp_path / "o.onnx", "--include-first", "--design", "dw-pw")
    assert proc.returncode == 0, proc.stderr
    assert "init error" in proc.stdout
    text = " ".join(proc.stdout.split())
    assert (
        "init error: relative weight error of each conv's new stages vs its original kernel" in text
    )


def _with_argmax(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` (x → y) with a second output: the argmax of y over channels (int64)."""
    g = model.graph
    g.node.append(onnx.helper.make_node("ArgMax", ["y"], ["cls"], axis=1, keepdims=0))
    g.output.append(onnx.helper.make_tensor_value_info("cls", onnx.TensorProto.INT64, None))
    return model


def test_an_integer_output_is_rated_by_its_equal_elements(tmp_path, rng):
    src = _save(_with_argmax(conv_model(rng.standard_normal((8, 8, 3, 3)))), tmp_path / "m.onnx")
    out, rep = tmp_path / "o.onnx", tmp_path / "r.json"
    proc = run_cli(
        "optimize", src, out, "--init", "he", "--include-first", "--input-shape", "x:1x8x16x16",
        "--report", rep,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = {o["name"]: o for o in json.loads(rep.read_text())["fidelity"]["outputs"]}
    assert "equal_fraction" not in rows["y"]
    x = np.random.default_rng(0).standard_normal((1, 8, 16, 16)).astype(np.float32)
    want = session(src).run(["cls"], {"x": x})[0]
    got = session(str(out)).run(["cls"], {"x": x})[0]
    assert rows["cls"]["equal_fraction"] == pytest.approx(float(np.mean(want == got)))
    assert rows["cls"]["equal_fraction"] < 1.0  # He weights change most argmaxes
    line = next(s for s in proc.stdout.splitlines() if s.startswith("fidelity against"))
    assert f"cls: {rows['cls']['equal_fraction']:.1%} of elements equal (integer output)" in line
    compared = run_cli("compare", src, out, "--samples", "2", "--input-shape", "x:1x8x16x16")
    assert compared.returncode == 0, compared.stderr
    assert " equal" in next(s for s in compared.stdout.splitlines() if "cls" in s)
