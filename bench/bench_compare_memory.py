"""Peak memory of ``onnx-sk compare --samples N`` against N: bounded since samples are streamed.

A model with symbolic H/W (Mul by a per-channel constant, so the run is cheap and the memory is
the samples') is compared with itself at 1x3x224x224 for each N, each in a fresh process; the
peak RSS (``ru_maxrss``) and its ratio to the smallest N are printed. Before streaming, every
sample and both models' outputs were kept (2000 samples: 2 x 1.2 GB of outputs plus 1.2 GB of
inputs); now the peak should not grow with N.

    python bench/bench_compare_memory.py --samples 20 200 2000
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
from onnx import TensorProto, helper, numpy_helper

CHILD = """
import resource, sys
from onnx_sk.runtime.compare import compare
compare(sys.argv[1], sys.argv[1], samples=int(sys.argv[2]))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _model(path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "s"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.ones((3, 1, 1), np.float32), "s")],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, nargs="+", default=[20, 200, 2000])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "m.onnx"
        _model(model)
        rows = []
        for n in args.samples:
            out = subprocess.run(
                [sys.executable, "-c", CHILD, str(model), str(n)],
                capture_output=True, text=True, check=True, cwd=tmp,
            )  # fmt: skip
            rows.append({"samples": n, "peak_rss_mib": int(out.stdout.split()[-1]) / 1024})
    base = rows[0]["peak_rss_mib"]
    for r in rows:
        r["ratio_to_first"] = r["peak_rss_mib"] / base
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
