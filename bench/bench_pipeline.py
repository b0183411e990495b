"""Cost of `analyze` and `optimize` relative to plain onnx on the same model, measured in one run.

Targets (issues 2 and 4):
- analyze ≤ 2× (onnx.load + onnx.checker.check_model(full_check=True));
- optimize (``--init he``, verification and the fidelity check included) ≤ 4× (onnx.load + full
  checker + onnx.save), with peak memory ≤ 3× the model's size (peak RSS of a child process
  running optimize alone). He init keeps this the cost of the tool itself; the default
  ``--init approx`` adds the fitting, measured per design by ``bench/bench_init.py``.

Runs alternate (baseline, tool, baseline, tool, …) and the ratio of medians is reported.

    python bench/bench_pipeline.py models/big/resnet50.onnx --repeats 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import onnx

import onnx_sk


def _baseline_analyze(path: Path) -> None:
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)


def _baseline_optimize(path: Path, out: Path) -> None:
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, out)


def _optimize_he(path: Path, out: Path) -> None:
    onnx_sk.optimize(path, out, init="he")


def _timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def _peak_rss_of_optimize(path: Path, out: Path) -> tuple[int, int]:
    """(peak RSS, RSS after the imports) of a fresh process running optimize alone.

    VmHWM, not ru_maxrss: Linux keeps ru_maxrss across fork+exec, so a child would inherit the
    parent's peak.
    """
    code = (
        "import onnxruntime, onnx_sk\n"
        "def vm(key):\n"
        "    line = next(l for l in open('/proc/self/status') if l.startswith(key))\n"
        "    return int(line.split()[1]) * 1024\n"
        "base = vm('VmRSS')\n"
        f"onnx_sk.optimize({str(path)!r}, {str(out)!r}, init='he')\n"
        "print(vm('VmHWM'), base)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    peak, base = proc.stdout.split()
    return int(peak), int(base)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    size = args.model.stat().st_size
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.onnx"
        base_a, tool_a, base_o, tool_o = [], [], [], []
        for _ in range(args.repeats):
            base_a.append(_timed(_baseline_analyze, args.model))
            tool_a.append(_timed(onnx_sk.analyze, args.model))
            base_o.append(_timed(_baseline_optimize, args.model, out))
            tool_o.append(_timed(_optimize_he, args.model, out))
        rss, base = _peak_rss_of_optimize(args.model, out)
    med = statistics.median
    result = {
        "model": str(args.model),
        "model_bytes": size,
        "repeats": args.repeats,
        "baseline_load_check_s": med(base_a),
        "analyze_s": med(tool_a),
        "analyze_ratio": med(tool_a) / med(base_a),
        "baseline_load_check_save_s": med(base_o),
        "optimize_s": med(tool_o),
        "optimize_ratio": med(tool_o) / med(base_o),
        "optimize_peak_rss_bytes": rss,
        "optimize_peak_rss_over_model_size": rss / size,
        "rss_after_imports_bytes": base,
        "optimize_peak_rss_above_imports_over_model_size": (rss - base) / size,
        "targets": {
            "analyze_ratio": 2.0,
            "optimize_ratio": 4.0,
            "optimize_peak_rss_over_model_size": 3.0,
        },
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
