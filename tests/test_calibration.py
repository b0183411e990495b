"""--calibration FILE.npz: the first axis is the sample axis; samples are streamed in batches
the model accepts (one at a time for a batch fixed at 1), within a stated budget; every bad file
is one line, exit code 2 (models built here, fixed-batch included)."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import onnx
import pytest
from helpers import assert_clean_error, conv_model, run_cli
from onnx import TensorProto, helper, numpy_helper

from onnx_sk.errors import UserError
from onnx_sk.graph.convs import find_convs
from onnx_sk.graph.shapes import infer_shapes
from onnx_sk.maths.patches import patches
from onnx_sk.options import option_fields
from onnx_sk.runtime import calibration, feeds
from onnx_sk.runtime.calibration import calibration_patches

RNG = np.random.default_rng(0)
C, HW = 4, 6


def _model(batch: int | str = 1) -> onnx.ModelProto:
    w = RNG.standard_normal((8, C, 3, 3))
    return conv_model(w, attrs={"pads": [1, 1, 1, 1]}, dims=(batch, C, HW, HW))


def _sites(model):
    return find_convs(model, infer_shapes(model, {}))


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def _all_columns(model, x: np.ndarray) -> np.ndarray:
    spec = _sites(model)[0].spec
    return patches(spec, x, 10**9, np.random.default_rng(0), normalise=False)


def _sorted_columns(cols: np.ndarray) -> np.ndarray:
    return cols[:, np.lexsort(cols[::-1])]


def test_a_batch_fixed_at_one_takes_every_sample_one_at_a_time(tmp_path):
    model = _model(1)
    x = RNG.standard_normal((5, C, HW, HW)).astype(np.float32)
    got = calibration_patches(_npz(tmp_path / "c.npz", x=x), model, _sites(model))["y"]
    p = got.shape[1]
    assert p == 5 * HW * HW  # every position of every sample (the share exceeds the positions)
    np.testing.assert_allclose(
        _sorted_columns(got * np.sqrt(p)), _sorted_columns(_all_columns(model, x)), rtol=1e-12
    )


def test_a_fixed_batch_of_two_uses_full_batches_and_too_few_samples_is_an_error(tmp_path):
    model = _model(2)
    x = RNG.standard_normal((5, C, HW, HW)).astype(np.float32)
    got = calibration_patches(_npz(tmp_path / "c.npz", x=x), model, _sites(model))["y"]
    assert got.shape[1] == 4 * HW * HW  # the fifth sample makes no full batch
    model4 = _model(4)
    with pytest.raises(UserError, match="3 samples, but the model's batch is fixed at 4"):
        calibration_patches(_npz(tmp_path / "d.npz", x=x[:3]), model4, _sites(model4))


def test_a_free_batch_reads_at_most_max_samples(tmp_path, monkeypatch):
    """Samples past MAX_SAMPLES are never read: a NaN there goes unnoticed."""
    model = _model("N")
    x = RNG.standard_normal((12, C, HW, HW)).astype(np.float32)
    x[10] = np.nan
    monkeypatch.setattr(calibration, "MAX_SAMPLES", 10)
    monkeypatch.setattr(calibration, "MAX_BATCH", 3)
    got = calibration_patches(_npz(tmp_path / "c.npz", x=x), model, _sites(model))["y"]
    assert got.shape[1] == 10 * HW * HW and np.isfinite(got).all()


def test_one_sample_over_the_batch_budget_is_refused(tmp_path, monkeypatch):
    model = _model("N")
    monkeypatch.setattr(calibration, "BATCH_BYTES", 100)
    x = np.zeros((2, C, HW, HW), np.float32)
    with pytest.raises(
        UserError, match="one sample declares 576 bytes, over the 100 bytes calibration budget"
    ):
        calibration_patches(_npz(tmp_path / "c.npz", x=x), model, _sites(model))


def _cli(tmp_path, model, npz):
    src = tmp_path / "m.onnx"
    onnx.save(model, src)
    out = tmp_path / "o.onnx"
    proc = run_cli("optimize", src, out, "--init", "approx", "--calibration", npz)
    return proc, out


def test_cli_on_a_fixed_batch_model(tmp_path):
    x = RNG.standard_normal((3, C, HW, HW)).astype(np.float32)
    proc, out = _cli(tmp_path, _model(1), _npz(tmp_path / "c.npz", x=x))
    assert proc.returncode == 0, proc.stderr
    assert out.exists()


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((2, C, 8, 8), np.float32)},
         "array 'x' has samples of shape 4x8x8 but input 'x' takes 4x6x6 (the first axis is the "
         "sample axis)"),
        ({"x": np.zeros((C, HW, HW), np.float32)},
         "array 'x' has samples of shape 6x6 but input 'x' takes 4x6x6 (the first axis is the "
         "sample axis)"),
        ({"x": np.zeros((0, C, HW, HW), np.float32)}, "array 'x' has no samples"),
        ({"x": np.zeros((2, C, HW, HW), np.int64)}, "array 'x' is int64, input 'x' takes float32"),
        ({"x": np.float32(1)}, "array 'x' has no sample axis (a scalar)"),
    ],
)  # fmt: skip
def test_bad_arrays_are_one_line(tmp_path, arrays, message):
    npz = _npz(tmp_path / "c.npz", **arrays)
    proc, out = _cli(tmp_path, _model(1), npz)
    assert_clean_error(proc, f"--calibration {npz}: {message}")
    assert not out.exists()


def test_non_finite_data_is_one_line_without_numpy_warnings(tmp_path):
    x = RNG.standard_normal((3, C, HW, HW)).astype(np.float32)
    x[2, 1, 0, 0] = np.inf
    npz = _npz(tmp_path / "c.npz", x=x)
    proc, out = _cli(tmp_path, _model(1), npz)
    assert_clean_error(
        proc, f"--calibration {npz}: calibration data contains NaN/Inf (array 'x', samples 2..2)"
    )
    assert not out.exists()


def _two_input_model() -> onnx.ModelProto:
    w = numpy_helper.from_array(RNG.standard_normal((8, C, 3, 3)).astype(np.float32), "w")
    nodes = [
        helper.make_node("Add", ["a", "b"], ["s"]),
        helper.make_node("Conv", ["s", "w"], ["y"], name="conv", pads=[1, 1, 1, 1]),
    ]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", C, HW, HW]) for n in "ab"]
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "g", inputs, [out], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_two_inputs_need_one_sample_count(tmp_path):
    a = np.zeros((3, C, HW, HW), np.float32)
    npz = _npz(tmp_path / "c.npz", a=a, b=a[:2])
    proc, _ = _cli(tmp_path, _two_input_model(), npz)
    assert_clean_error(
        proc, f"--calibration {npz}: the arrays have different sample counts (a: 3, b: 2)"
    )
    ok = _npz(tmp_path / "ok.npz", a=a + 1, b=a)
    proc, out = _cli(tmp_path, _two_input_model(), ok)
    assert proc.returncode == 0, proc.stderr


def _npy_bytes(header_shape: tuple[int, ...], data: bytes, descr: str = "<f4") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": descr, "fortran_order": False, "shape": header_shape}
    )
    return buf.getvalue() + data


def test_a_small_file_declaring_gigabytes_is_refused_before_loading(tmp_path):
    npz = tmp_path / "lie.npz"
    with zipfile.ZipFile(npz, "w") as zf:
        zf.writestr("x.npy", _npy_bytes((100_000, C, HW, HW), b"\0" * 64))
    proc, out = _cli(tmp_path, _model(1), npz)
    assert_clean_error(
        proc,
        f"--calibration {npz}: array 'x' declares shape 100000x4x6x6 (57600000 bytes) but the "
        "file holds 64",
    )
    assert not out.exists()


def test_object_arrays_are_never_unpickled(tmp_path):
    npz = tmp_path / "obj.npz"
    np.savez(npz, x=np.array([object()] * 2, dtype=object), allow_pickle=True)
    proc, _ = _cli(tmp_path, _model(1), npz)
    assert_clean_error(
        proc, f"--calibration {npz}: array 'x' holds Python objects (pickles are never loaded)"
    )


def test_compressed_and_fortran_ordered_files_stream_too(tmp_path):
    model = _model(1)
    x = RNG.standard_normal((3, C, HW, HW)).astype(np.float32)
    np.savez_compressed(tmp_path / "z.npz", x=x)
    np.savez(tmp_path / "f.npz", x=np.asfortranarray(x))
    want = _sorted_columns(_all_columns(model, x))
    for name in ("z.npz", "f.npz"):
        got = calibration_patches(tmp_path / name, model, _sites(model))["y"]
        np.testing.assert_allclose(_sorted_columns(got * np.sqrt(got.shape[1])), want, rtol=1e-12)


def test_the_help_states_the_budget():
    help_text = next(f.metadata["help"] for _, f in option_fields() if f.name == "calibration")
    for number in (calibration.MAX_SAMPLES, calibration.MAX_BATCH):
        assert str(number) in help_text
    assert f"{calibration.BATCH_BYTES // 2**20} MiB" in help_text


def test_load_calibration_checks_declared_sizes_first(tmp_path, monkeypatch):
    npz = _npz(tmp_path / "c.npz", x=np.zeros((2, C, HW, HW), np.float32))
    monkeypatch.setattr(feeds, "available_memory", lambda: 1000)
    with pytest.raises(UserError, match=r"its arrays declare 1152 bytes, more than half the 1000"):
        feeds.load_calibration(npz, _model(1), "--inputs")


def test_a_fixed_batch_over_the_memory_available_is_refused(tmp_path, monkeypatch):
    model = _model(1)
    monkeypatch.setattr(calibration, "available_memory", lambda: 2000)
    npz = _npz(tmp_path / "c.npz", x=np.zeros((2, C, HW, HW), np.float32))
    with pytest.raises(UserError) as err:
        calibration_patches(npz, model, _sites(model))
    assert str(err.value) == (
        f"--calibration {npz}: one batch of 1 samples (the model's fixed batch) declares 576 "
        "bytes, over a quarter of the 2000 bytes of memory available: refused"
    )


def test_the_patch_budget_is_shared_between_batches_exactly(tmp_path):
    model = _model(1)
    npz = _npz(tmp_path / "c.npz", x=RNG.standard_normal((5, C, HW, HW)).astype(np.float32))
    for budget in (7, 3):  # 2+2+1+1+1, and 1+1+1+0+0
        got = calibration_patches(npz, model, _sites(model), max_patches=budget)["y"]
        assert got.shape == (C * 9, budget) and np.isfinite(got).all()


def test_an_input_without_a_declared_shape_takes_the_samples_as_they_are(tmp_path):
    model = _model("N")
    model.graph.input[0].type.tensor_type.ClearField("shape")
    x = RNG.standard_normal((3, C, HW, HW)).astype(np.float32)
    sites = find_convs(model, {})
    got = calibration_patches(_npz(tmp_path / "c.npz", x=x), model, sites)["y"]
    assert got.shape[1] == 3 * HW * HW
