"""Mode 1 on the reference models: parameters and MACs before/after, per model (README table).

Exports missing models with models/make_torch_models.py (torch extra; into ``--export-dir``,
models/big by default), then runs `onnx_sk.optimize` with default settings (first conv kept,
--objective params, --init approx, verification on) at 1×3×224×224 and writes
bench/results/reduce_table.{md,json}: the structure verified (max rel diff against the dense
twin) and the fidelity against the original (cosine of the output on the seeded input).

    python bench/reduce_table.py [--models resnet18 resnet34 resnet50 vgg16 alexnet table1_224]
        [--export-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import onnx_sk

ROOT = Path(__file__).resolve().parents[1]
BIG = ROOT / "models" / "big"
RESULTS = ROOT / "bench" / "results"
EXPORT_ARGS = {"table1_224": ["table1", "--width", "64", "--blocks", "2", "--name", "table1_224"]}


def _ensure(name: str, export_dir: Path) -> Path:
    path = BIG / f"{name}.onnx"
    if not path.exists():
        path = export_dir / f"{name}.onnx"
    if not path.exists():
        args = EXPORT_ARGS.get(name, [name])
        cmd = [
            sys.executable,
            str(ROOT / "models" / "make_torch_models.py"),
            *args,
            "--out-dir",
            str(export_dir),
        ]
        subprocess.run(cmd, check=True)
    return path


def _row(name: str, export_dir: Path) -> dict:
    path = _ensure(name, export_dir)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        _, report = onnx_sk.optimize(
            path, Path(tmp) / "out.onnx", input_shape=["input:1x3x224x224"]
        )
        seconds = time.perf_counter() - t0
    t, v = report.totals, report.verification
    designs: dict[str, int] = {}
    for c in report.convs:
        if c["design"]:
            designs[c["design"]] = designs.get(c["design"], 0) + 1
    return {
        "model": name,
        "replaced": t["replaced"],
        "convs": t["convs"],
        "params_before": t["params_before"],
        "params_after": t["params_after"],
        "conv_macs_before": t["conv_macs_before"],
        "conv_macs_after": t["conv_macs_after"],
        "designs": designs,
        "max_rel_diff": v["max_rel_diff"],
        "init": report.options["init"],
        "fidelity_cosine": min(o["cosine"] for o in report.fidelity["outputs"]),
        "seconds": seconds,
    }


def _markdown(rows: list[dict]) -> str:
    lines = [
        "| model | convs replaced | params before → after (ratio) | conv MACs before → after (ratio) | designs | structure verified (max rel diff) | cosine vs original |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        p = r["params_after"] / r["params_before"]
        m = r["conv_macs_after"] / r["conv_macs_before"]
        designs = ", ".join(f"{k} ×{v}" for k, v in sorted(r["designs"].items()))
        lines.append(
            f"| {r['model']} | {r['replaced']}/{r['convs']} | {r['params_before'] / 1e6:.2f} M → "
            f"{r['params_after'] / 1e6:.2f} M ({p:.3f}) | {r['conv_macs_before'] / 1e9:.3f} G → "
            f"{r['conv_macs_after'] / 1e9:.3f} G ({m:.3f}) | {designs} | yes ({r['max_rel_diff']:.1e}) | "
            f"{r['fidelity_cosine']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--models",
        nargs="+",
        default=["resnet18", "resnet34", "resnet50", "vgg16", "alexnet", "table1_224"],
    )
    ap.add_argument("--export-dir", type=Path, default=BIG)
    args = ap.parse_args()
    rows = [_row(m, args.export_dir) for m in args.models]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "reduce_table.json").write_text(json.dumps(rows, indent=2) + "\n")
    md = _markdown(rows)
    (RESULTS / "reduce_table.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
