"""Cost and quality of ``--init approx``: time per design and the per-layer error table.

For each design, ``optimize`` runs on the model with ``--init he`` and with ``--init approx``
(verification off, nothing written), alternately, ``--repeats`` times; the fitting time is the
median approx run minus the median He run. The per-layer relative weight errors (BN-scaled where
a BN follows) come from the approx report. Target (issue 6): approx on ResNet-50 ≤ 60 s.

    python bench/bench_init.py models/big/resnet50.onnx --out bench/results/init_approx_resnet50.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import onnx_sk
from onnx_sk.maths.designs import DESIGNS


def _run(model: str, design: str, init: str) -> tuple[float, dict]:
    t = time.perf_counter()
    _, report = onnx_sk.optimize(model, design=design, init=init, verify=False)
    return time.perf_counter() - t, report.to_dict()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--designs", nargs="*", default=list(DESIGNS))
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    results = []
    for design in args.designs:
        he_times, approx_times, report = [], [], None
        for _ in range(args.repeats):
            he_times.append(_run(args.model, design, "he")[0])
            t, report = _run(args.model, design, "approx")
            approx_times.append(t)
        assert report is not None
        layers = [
            {
                "name": r["name"],
                "design": r["design"],
                "groups": r["groups"],
                "bottleneck": r["bottleneck"],
                "init_error": r["init_error"],
            }
            for r in report["convs"]
            if r["design"]
        ]
        errors = [row["init_error"] for row in layers]
        he, ap_ = statistics.median(he_times), statistics.median(approx_times)
        row = {
            "design": design,
            "optimize_he_s": he,
            "optimize_approx_s": ap_,
            "fit_s": ap_ - he,
            "replaced": len(layers),
            "error_median": statistics.median(errors),
            "error_min": min(errors),
            "error_max": max(errors),
            "conv_params_ratio": report["totals"]["conv_params_ratio"],
            "layers": layers,
        }
        results.append(row)
        print(
            f"{design:>10}: optimize he {he:6.1f} s, approx {ap_:6.1f} s (fit {ap_ - he:6.1f} s); "
            f"{len(layers)} convs, relative weight error median {row['error_median']:.3f} "
            f"[{row['error_min']:.3f}, {row['error_max']:.3f}], conv params ×{row['conv_params_ratio']:.3f}",
            flush=True,
        )
    total = sum(r["optimize_approx_s"] for r in results)
    print(f"total optimize --init approx over {len(results)} designs: {total:.1f} s")
    if args.out:
        args.out.write_text(json.dumps({"model": args.model, "designs": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
