"""Mode 2 (widen) on reference models, written and verified: s, widths, parameters, and the cost
of widening (wall time and peak RSS) against Mode 1 (reduce) on the same model, in one run.

For every model, ``onnx-sk optimize MODEL OUT --mode widen`` (he; and, for MobileNetV2, also
``--design none --width-scale 1.4``) and ``onnx-sk optimize MODEL OUT`` (reduce) each run in a
fresh child process that records its own peak RSS (``VmHWM`` at exit; Linux keeps ``ru_maxrss``
across fork+exec, so the parent's view would be wrong); every output is written and verified
(the default) and its report (``--report``) gives s, widths, counts and the verification.
Ratios are widen / reduce, measured back to back on the same (possibly shared) machine.

    .venv/bin/python bench/bench_widen.py models/resnet20_cifar.onnx models/big/resnet18.onnx ...

Writes ``bench/results/widen.json`` and ``widen.md`` (the README's table).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_large import CHILD  # noqa: E402  (the CLI in a child that records its peak RSS)


def run_optimize(model: Path, tmp: Path, tag: str, args: list[str]) -> dict:
    """One ``optimize`` in a child process: wall time, peak RSS, output size, its report."""
    out, report, hwm = tmp / f"{tag}.onnx", tmp / f"{tag}.json", tmp / f"{tag}.hwm"
    cmd = ["optimize", str(model), str(out), "--overwrite", "--report", str(report), *args]
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(hwm), *cmd], capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    rep = json.loads(report.read_text())
    size = out.stat().st_size
    out.unlink()
    return {
        "command": "onnx-sk " + " ".join(["optimize", model.name, "OUT", *args]),
        "wall_s": round(wall, 2),
        "peak_rss_mb": round(int(hwm.read_text()) / 1024, 1),
        "output_mb": round(size / 2**20, 1),
        "report": rep,
    }


def _widths(layers: list[dict]) -> str:
    seen = []
    for r in layers:
        pair = (r["c_out"], r["c_out_after"])
        if pair not in seen and r["c_out"] != r["c_out_after"]:
            seen.append(pair)
    seen.sort()
    return ", ".join(f"{a}→{b}" for a, b in seen[:6])


def _verified(v: dict | None) -> str:
    if not v:
        return "no"
    if v.get("convs_checked"):
        return (
            f"{v['convs_checked']} convs alone ({v['channels_checked']}/{v['channels']} ch), "
            "signature"
        )
    return "signature" if "max_abs_diff" not in v else f"twin (rel {v['max_rel_diff']:.1g})"


def row(name: str, label: str, widen: dict, reduce: dict) -> dict:
    rep = widen["report"]
    w, t = rep["widen"], rep["totals"]
    return {
        "model": name,
        "mode": label,
        "scale": w["scale"],
        "widths": _widths(w["layers"]),
        "conv_params": [t["conv_params_before"], t["conv_params_after"]],
        "params": [t["params_before"], t["params_after"]],
        "ratio": w["ratio"],
        "verified": _verified(rep.get("verification")),
        "widen": {k: v for k, v in widen.items() if k != "report"},
        "reduce": {k: v for k, v in reduce.items() if k != "report"},
        "time_ratio": widen["wall_s"] / reduce["wall_s"],
        "rss_ratio": widen["peak_rss_mb"] / reduce["peak_rss_mb"],
        "rss_over_output": widen["peak_rss_mb"] / widen["output_mb"],
    }


def main(paths: list[str]) -> None:
    rows = []
    head = (
        "| model | mode | s | widths (c_out before→after) | conv params before → after | "
        "all params before → after | verified | widen: time, peak RSS | reduce: time, peak RSS "
        "| widen / reduce |"
    )
    lines = [head, "|" + "---|" * 10]
    print(lines[0], lines[1], sep="\n", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        for path in map(Path, paths):
            modes = [("widen", ["--mode", "widen"])]
            if "mobilenet" in path.name:
                modes.append(
                    (
                        "widen --design none -s 1.4",
                        ["--mode", "widen", "--design", "none", "--width-scale", "1.4"],
                    )
                )
            for label, args in modes:
                reduce = run_optimize(path, tmp, "reduce", [])
                widen = run_optimize(path, tmp, "widen", args)
                r = row(path.stem, label, widen, reduce)
                rows.append(r)
                (c0, c1), (p0, p1) = r["conv_params"], r["params"]
                line = (
                    f"| {r['model']} | {label} | {r['scale']:.3f} | {r['widths']} | "
                    f"{c0 / 1e6:.3f}M → {c1 / 1e6:.3f}M ({r['ratio']:.4f}) | "
                    f"{p0 / 1e6:.2f}M → {p1 / 1e6:.2f}M | {r['verified']} | "
                    f"{widen['wall_s']:.1f} s, {widen['peak_rss_mb']:.0f} MB | "
                    f"{reduce['wall_s']:.1f} s, {reduce['peak_rss_mb']:.0f} MB | "
                    f"×{r['time_ratio']:.1f} time, ×{r['rss_ratio']:.1f} RSS |"
                )
                lines.append(line)
                print(line, flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "widen.json").write_text(json.dumps(rows, indent=2) + "\n")
    (RESULTS / "widen.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
