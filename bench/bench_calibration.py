"""``--calibration`` memory: peak RSS of ``optimize --init approx --calibration FILE`` as the file
grows, and on a small file that declares gigabytes (zeros compress ~1000:1).

A conv model with its batch fixed at 1 (``x [1, 16, 64, 64]`` → three 3×3 convs) is built here;
``.npz`` files of N samples (compressed, random) and one ``bomb.npz`` (a few MB on disk, declaring
GiBs of zeros as ``[S, 16, 64, 64]`` samples) are written to a temporary folder; each run is a
fresh child process that records its own peak RSS (``VmHWM`` at exit). The file is streamed
(``onnx_sk.runtime.calibration``: the first 256 samples at most, a batch at a time), so the peak
should not grow with N or with what the file declares.

    .venv/bin/python bench/bench_calibration.py            # N = 16, 256, 1024; bomb of 2 GiB

Writes ``bench/results/calibration.json`` and ``calibration.md``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnx_sk.runtime.npz import gib

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_widen import CHILD, RESULTS  # noqa: E402

C, HW = 16, 64


def model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "x"
    for k in range(3):
        w = numpy_helper.from_array(rng.standard_normal((C, C, 3, 3)).astype(np.float32), f"w{k}")
        inits.append(w)
        nodes.append(helper.make_node("Conv", [x, w.name], [f"y{k}"], f"conv{k}", pads=[1] * 4))
        x = f"y{k}"
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, C, HW, HW])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, C, HW, HW])], inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def bomb(path: Path, samples: int) -> None:
    """A compressed .npz declaring ``samples`` zero samples, written a chunk at a time."""
    header = np.lib.format.header_data_from_array_1_0(np.zeros((0, C, HW, HW), np.float32))
    header["shape"] = (samples, C, HW, HW)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
        with zf.open("x.npy", "w", force_zip64=True) as fh:
            np.lib.format.write_array_header_1_0(fh, header)
            chunk = bytes(C * HW * HW * 4 * 64)
            for _ in range(samples // 64):
                fh.write(chunk)


def run(model_path: Path, npz: Path, tmp: Path) -> dict:
    hwm, out = tmp / "hwm", tmp / "out.onnx"
    cmd = ["optimize", str(model_path), str(out), "--overwrite", "--init", "approx"]
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(hwm), *cmd, "--calibration", str(npz)],
        capture_output=True, text=True,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    return {
        "wall_s": round(time.perf_counter() - start, 2),
        "peak_rss_mb": round(int(hwm.read_text()) / 1024, 1),
        "file_mb": round(npz.stat().st_size / 2**20, 1),
    }


def main() -> None:
    rows, rng = [], np.random.default_rng(0)
    lines = ["| calibration file | samples declared | bytes declared | on disk | peak RSS | time |"]
    lines.append("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        src = tmp / "m.onnx"
        onnx.save(model(), src)
        files = []
        for n in (16, 256, 1024):
            path = tmp / f"random_{n}.npz"
            x = rng.standard_normal((n, C, HW, HW)).astype(np.float32)
            np.savez_compressed(path, x=x)
            del x
            files.append((f"random, N = {n}", n, path))
        samples = 2 * 2**30 // (C * HW * HW * 4)
        bomb(tmp / "bomb.npz", samples)
        files.append(("zeros (bomb)", samples, tmp / "bomb.npz"))
        for label, n, path in files:
            r = run(src, path, tmp)
            declared = n * C * HW * HW * 4
            rows.append({"file": label, "samples": n, "declared_bytes": declared, **r})
            line = (
                f"| {label} | {n} | {gib(declared)} | {r['file_mb']} MB | "
                f"{r['peak_rss_mb']:.0f} MB | {r['wall_s']:.1f} s |"
            )
            lines.append(line)
            print(line, flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "calibration.json").write_text(json.dumps(rows, indent=2) + "\n")
    (RESULTS / "calibration.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
