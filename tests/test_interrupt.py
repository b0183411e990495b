"""Crash safety: SIGINT or SIGTERM while ``onnx-sk optimize`` writes and verifies its output.

The CLI turns both into the same clean path (``onnx_sk.cli.main``): exit code 128 + signal,
one line on stderr, the temporary files (``.OUT.*.tmp``, ``.OUT.data.*.tmp``) removed, no
output, the input untouched. The model is made big enough (8 convs 512→512, 3×3, at 64×64)
that the signal lands while the temporary output exists: it is sent as soon as one appears.
"""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

#: the child starts with Python's own SIGINT handler even when the test runner ignores SIGINT
CHILD = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv = ['onnx-sk', *sys.argv[1:]]; runpy.run_module('onnx_sk', run_name='__main__')"
)


def _slow_model(folder: Path, external: bool, c: int = 512, convs: int = 8) -> Path:
    rng = np.random.default_rng(0)
    nodes, inits, t = [], [], "x"
    for i in range(convs):
        w = rng.standard_normal((c, c, 3, 3), dtype=np.float32) / np.float32(np.sqrt(c * 9))
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(
            helper.make_node("Conv", [t, f"w{i}"], [f"y{i}"], name=f"conv{i}", pads=[1] * 4)
        )
        t = f"y{i}"
    graph = helper.make_graph(
        nodes, "slow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, 64, 64])],
        [helper.make_tensor_value_info(t, TensorProto.FLOAT, [1, c, 64, 64])],
        inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = folder / "in.onnx"
    onnx.save(model, path, save_as_external_data=external, location="in.onnx.data")
    return path


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("external", [False, True], ids=["inline", "external-data"])
@pytest.mark.parametrize(
    "signum,code,message",
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")],
    ids=["SIGINT", "SIGTERM"],
)
def test_signal_during_optimize_leaves_nothing(tmp_path, external, signum, code, message):
    src = _slow_model(tmp_path, external)
    before = _digests(tmp_path)
    out = tmp_path / "out.onnx"
    proc = subprocess.Popen(
        # one conv replaced, seven kept: the output keeps ~66 MB of weights, so its (post-
        # verification) write lasts long enough to be interrupted
        [sys.executable, "-c", CHILD, "optimize", str(src), str(out), "--include-first",
         "--init", "he", *(a for i in range(1, 8) for a in ("--exclude", f"conv{i}"))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while not list(tmp_path.glob(".out.onnx.*")):
        assert proc.poll() is None, f"optimize ended before writing: {proc.communicate()}"
        assert time.monotonic() < deadline, "no temporary output appeared"
        time.sleep(0.005)
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == code, (stdout, stderr)
    assert stderr == f"{message}\n", stderr
    assert "Traceback" not in stdout
    assert _digests(tmp_path) == before, "no output, no temporary file, the input untouched"
