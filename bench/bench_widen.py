"""Mode 2 (widen) on reference models: s, widths and parameters before/after (no timing).

Solves s exactly as ``onnx-sk optimize --mode widen`` does (he mode: Mode 1 re-run on the
widened model, group numbers re-chosen), without drawing the widened weights, so large models
are cheap. Writes bench/results/widen.json and prints a Markdown table.

    .venv/bin/python bench/bench_widen.py models/resnet20_cifar.onnx models/big/resnet18.onnx ...
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from onnx_sk.graph.load import load_model
from onnx_sk.options import OptimizeOptions
from onnx_sk.passes.widen import widen_solution


def _widths(layers: list[dict]) -> str:
    seen = []
    for r in layers:
        pair = (r["c_out"], r["c_out_after"])
        if pair not in seen and r["c_out"] != r["c_out_after"]:
            seen.append(pair)
    seen.sort()
    return ", ".join(f"{a}→{b}" for a, b in seen[:6])


def main(paths: list[str]) -> None:
    rows = []
    print(
        "| model | mode | s | widths (c_out before→after) | conv params before → after | all params before → after |"
    )
    print("|---|---|---|---|---|---|")
    for path in paths:
        model = load_model(path).model
        for label, opts in (
            ("widen", OptimizeOptions.from_flat(mode="widen")),
            (
                "widen --design none -s 1.4",
                OptimizeOptions.from_flat(mode="widen", design="none", width_scale=1.4),
            ),
        ):
            if "mobilenet" not in path and "none" in label:
                continue
            r = widen_solution(model, opts)
            rows.append(
                {"model": path, "mode": label, **{k: v for k, v in r.items() if k != "layers"}}
            )
            print(
                f"| {Path(path).stem} | {label} | {r['scale']:.3f} | {_widths(r['layers'])} | "
                f"{r['target'] / 1e6:.3f}M → {r['achieved'] / 1e6:.3f}M ({r['ratio']:.4f}) | "
                f"{r['params_before'] / 1e6:.2f}M → {r['params_after'] / 1e6:.2f}M |",
                flush=True,
            )
    out = Path(__file__).parent / "results" / "widen.json"
    out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
