"""Run ONNX models in ONNX Runtime and save their outputs: the half of tests/test_arm.py that runs
on aarch64 (under ``qemu-aarch64`` with the sysroot of prepare_sysroot.py).

Usage: ``python3.11 run_models.py MANIFEST.json OUT_DIR``. The manifest lists
``{"name", "model", "inputs"}`` (an ONNX file and an .npz of its feeds); for each model this writes
``OUT_DIR/<name>.npz`` (the outputs by name) or ``OUT_DIR/<name>.err`` (the error), and
``OUT_DIR/<name>.optimized.onnx`` (the graph ORT ran, after its optimisations and the kernel
assignment, to see which kernels the CPU got). One process runs every model: starting Python and
ONNX Runtime under emulation is the slow part.

Imports numpy and onnxruntime only: the sysroot has nothing else (no onnx, no onnx_sk).
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

import numpy as np
import onnxruntime as ort


def run_one(model: str, inputs: str, optimized: Path) -> dict[str, np.ndarray]:
    """The outputs of ``model`` on the feeds in ``inputs``: CPU provider, ORT_ENABLE_ALL (as
    deployed), one thread."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    so.optimized_model_filepath = str(optimized)
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    with np.load(inputs) as z:
        feeds = {k: z[k] for k in z.files}
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds), strict=True))


def main(manifest: str, out_dir: str) -> int:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cases = json.loads(Path(manifest).read_text())
    for case in cases:
        name = case["name"]
        try:
            outputs = run_one(case["model"], case["inputs"], out / f"{name}.optimized.onnx")
        except Exception:  # recorded per model, so one failure does not hide the others
            (out / f"{name}.err").write_text(traceback.format_exc())
            continue
        np.savez(out / f"{name}.npz", **outputs)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
