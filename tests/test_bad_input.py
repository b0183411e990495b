"""Bad input: a one-line error on stderr, exit code 2, no traceback, input untouched, no output.

Each case runs the real console script in a subprocess, as a user would.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import CLI, MODELS, assert_clean_error, conv_model, digest, run_cli


@pytest.fixture
def small_model(tmp_path: Path, rng) -> Path:
    w = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
    path = tmp_path / "in.onnx"
    onnx.save(conv_model(w, attrs={"pads": [1, 1, 1, 1]}), path)
    return path


def _bad_files(tmp: Path) -> dict[str, tuple[Path, str]]:
    good = (MODELS / "table1_w16.onnx").read_bytes()
    cases = {}

    def put(name: str, data: bytes) -> Path:
        p = tmp / name
        p.write_bytes(data)
        return p

    p = put("empty.onnx", b"")
    cases["empty"] = (p, f"{p} is empty (0 bytes), not an ONNX model")
    not_model = (
        "is not a valid ONNX model (protobuf parse failed: truncated, corrupt or not a model)"
    )
    not_model2 = (
        "is not a valid ONNX model (no IR version, opset or graph outputs: truncated, corrupt "
        "or not a model)"
    )
    p = put("truncated.onnx", good[: len(good) // 2])
    cases["truncated"] = (p, f"{p} {not_model}")
    p = put("random.onnx", np.random.default_rng(0).bytes(4096))
    cases["random bytes"] = (p, f"{p} {not_model}")
    p = put("text.onnx", b'{"model": "not really", "layers": [1, 2, 3]}\n')
    cases["json text"] = (p, f"{p} {not_model}")
    p = put("no_graph.onnx", onnx.ModelProto(ir_version=8).SerializeToString())
    cases["model without graph"] = (p, f"{p} {not_model2}")
    return cases


@pytest.mark.parametrize(
    "case", ["empty", "truncated", "random bytes", "json text", "model without graph"]
)
@pytest.mark.parametrize("command", ["analyze", "optimize"])
def test_malformed_files(tmp_path, case, command):
    path, message = _bad_files(tmp_path)[case]
    before = digest(path)
    args = [command, path] + ([tmp_path / "out.onnx"] if command == "optimize" else [])
    assert_clean_error(run_cli(*args), message)
    assert digest(path) == before
    assert not (tmp_path / "out.onnx").exists()


def test_missing_file(tmp_path):
    assert_clean_error(
        run_cli("analyze", tmp_path / "nope.onnx"), f"{tmp_path / 'nope.onnx'}: no such file"
    )


def test_directory(tmp_path):
    assert_clean_error(
        run_cli("analyze", tmp_path), f"{tmp_path} is a directory, not an ONNX model file"
    )


def test_missing_external_data(tmp_path):
    src = MODELS / "resnet18_w8_ext"
    dst = tmp_path / "ext"
    shutil.copytree(src, dst)
    data = [p for p in dst.iterdir() if p.suffix != ".onnx"]
    assert data, "the committed external-data model has a data file"
    for p in data:
        p.unlink()
    model = next(dst.glob("*.onnx"))
    proc = run_cli("analyze", model)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: external data file ")
    assert f"is missing (looked in {dst})" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "location,why",
    [
        ("../../etc/passwd", "escapes the model's folder: refused"),
        ("/etc/passwd", "is an absolute path: refused"),
    ],
)
def test_external_data_location_escaping(tmp_path, small_model, location, why):
    model = onnx.load(small_model)
    w = model.graph.initializer[0]
    w.ClearField("raw_data")
    w.ClearField("float_data")
    w.data_location = onnx.TensorProto.EXTERNAL
    entry = w.external_data.add()
    entry.key, entry.value = "location", location
    bad = tmp_path / "sub" / "escape.onnx"
    bad.parent.mkdir()
    bad.write_bytes(model.SerializeToString())
    assert_clean_error(
        run_cli("analyze", bad), f"external data location {location!r} of tensor 'w' {why}"
    )


def test_output_folder_missing(tmp_path, small_model):
    out = tmp_path / "no" / "such" / "out.onnx"
    assert_clean_error(
        run_cli("optimize", small_model, out), f"output folder {out.parent} does not exist"
    )
    assert not out.parent.exists()


def test_output_equal_to_input_is_refused(small_model):
    before = digest(small_model)
    assert_clean_error(
        run_cli("optimize", small_model, small_model),
        f"output path {small_model} is the input model: refusing to overwrite it (pass --overwrite to allow)",
    )
    assert digest(small_model) == before


def _as_unprivileged_user() -> list[str]:
    """Command prefix that drops root to uid 65534 (root may read and write anywhere)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv to drop privileges")
    return [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.fixture
def open_dir(small_model: Path):
    """A world-readable folder (pytest's tmp folders are private to root) with a model in it."""
    folder = Path(tempfile.mkdtemp(prefix="onnx-sk-perm-"))
    folder.chmod(0o755)
    model = folder / "in.onnx"
    shutil.copy(small_model, model)
    model.chmod(0o644)
    yield folder
    shutil.rmtree(folder)


def test_output_folder_not_writable(open_dir):
    ro = open_dir / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    cmd = [
        *_as_unprivileged_user(),
        *CLI,
        "optimize",
        str(open_dir / "in.onnx"),
        str(ro / "o.onnx"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=open_dir)
    assert_clean_error(proc, f"output folder {ro} is not writable")
    assert not list(ro.iterdir())


def test_input_not_readable(open_dir):
    model = open_dir / "in.onnx"
    model.chmod(0o600)
    cmd = [*_as_unprivileged_user(), *CLI, "analyze", str(model)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=open_dir)
    assert_clean_error(proc, f"{model}: permission denied")


def test_bad_input_shape(small_model):
    assert_clean_error(
        run_cli("analyze", small_model, "--input-shape", "x:1xAx8x8"),
        "--input-shape 'x:1xAx8x8': expected NAME:1x3x224x224, NAME:1,3,224,224 or NAME:[1,3,224,224]",
    )
    assert_clean_error(
        run_cli("analyze", small_model, "--input-shape", "nope:1x8x8x8"),
        "--input-shape names 'nope', which is not a graph input (inputs: x)",
    )
    assert_clean_error(
        run_cli("analyze", small_model, "--input-shape", "x:1x8x100000x100000x100"),
        "--input-shape 'x:1x8x100000x100000x100': 8000000000000 elements is absurdly large: refused",
    )
