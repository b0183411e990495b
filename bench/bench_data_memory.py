"""Memory of distill's DATA: peak RSS of loading a folder of images, an iterable and a
compressed ``.npz`` whose decoded samples exceed ``SAMPLE_BUDGET_BYTES`` (256 MiB), then reading
every sample once in batches of 32, as training does.

Each form runs in a fresh child process that reports its peak RSS (``VmHWM``) after its imports,
after loading and after one pass over the samples; the decoded size is N × 3 × 224 × 224 × 4 bytes. Images: N PNGs of 224×224 random pixels,
kept decoded up to the budget, the rest decoded again; the iterable and the compressed npz:
held in memory up to the budget, the rest in a memory-mapped temporary file.

    PYTHONPATH=. .venv/bin/python bench/bench_data_memory.py [--samples 400 800 1600]

Writes ``bench/results/data_memory.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

RESULTS = Path(__file__).resolve().parent / "results"

CHILD = r"""
import sys, json


def hwm():  # peak RSS of this process (exec resets it, unlike ru_maxrss), MiB
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

import numpy as np, onnx
from onnx_sk.training.data import load_samples
from onnx_sk.options import DataOptions
kind, path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, 3, 224, 224])
y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)
g = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
m = onnx.helper.make_model(g)
base = hwm()
if kind == "iterable":
    rng = np.random.default_rng(0)
    data = ({"x": rng.random((3, 224, 224), dtype=np.float32)} for _ in range(n))
else:
    data = path
s = load_samples(data, m, 0.2, opts=DataOptions())
loaded = hwm()
total = 0.0
for b in range(0, len(s), 32):
    total += float(s.take(np.arange(b, min(b + 32, len(s))))["x"].sum())
done = hwm()
print(json.dumps({"kind": kind, "samples": len(s), "base_mib": round(base, 1),
                  "peak_after_load_mib": round(loaded, 1), "peak_after_pass_mib": round(done, 1)}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, nargs="+", default=[400, 800, 1600])
    counts = ap.parse_args().samples
    rows: list[dict] = []
    for n in counts:
        rows += _run(n)
    doc = {
        "command": "PYTHONPATH=. python bench/bench_data_memory.py --samples "
        + " ".join(map(str, counts)),
        "budget_mib": 256,
        "rows": rows,
        "onnx": onnx.__version__,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "data_memory.json").write_text(json.dumps(doc, indent=1) + "\n")


def _run(n: int) -> list[dict]:
    from PIL import Image

    decoded = n * 3 * 224 * 224 * 4 / 2**20
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "imgs"
        folder.mkdir()
        rng = np.random.default_rng(0)
        for i in range(n):
            px = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
            Image.fromarray(px).save(folder / f"{i:05d}.png")
        npz = Path(tmp) / "c.npz"
        np.savez_compressed(npz, x=rng.random((n, 3, 224, 224), dtype=np.float32))
        for kind, path in (("images", folder), ("iterable", ""), ("compressed_npz", npz)):
            proc = subprocess.run(
                [sys.executable, "-c", CHILD, kind, str(path), str(n)],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            row = json.loads(proc.stdout)
            row["decoded_mib"] = round(decoded, 1)
            rows.append(row)
            print(row)
    return rows


if __name__ == "__main__":
    main()
