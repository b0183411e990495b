"""Deploy without retraining: the ``--max-error τ`` trade-off curve, measured in one run.

For each error budget τ: ``optimize --init approx --max-error τ`` (weight-space error, BN-scaled
where a BN follows), then params and conv MACs from the report, ONNX Runtime latency (batch 1,
1 thread, ORT_ENABLE_ALL, median of runs interleaved across all models) and the output agreement
with the original model on seeded random inputs (``onnx_sk.runtime.compare``: cosine similarity, top-1
agreement, max |diff|).

    python bench/max_error_curve.py models/big/resnet18.onnx --out bench/results/max_error_resnet18.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

import onnx_sk
from onnx_sk.runtime.compare import compare
from onnx_sk.runtime.feeds import random_inputs
from onnx_sk.runtime.session import session


def latencies(paths: dict[str, Path], rounds: int) -> dict[str, float]:
    sessions = {k: session(p, threads=1, opt_level="all") for k, p in paths.items()}
    feeds = random_inputs(
        onnx.load(next(iter(paths.values())), load_external_data=False), np.random.default_rng(0)
    )
    times: dict[str, list[float]] = {k: [] for k in paths}
    for _ in range(3):
        for s in sessions.values():
            s.run(None, feeds)
    for _ in range(rounds):
        for k, s in sessions.items():
            t = time.perf_counter()
            s.run(None, feeds)
            times[k].append((time.perf_counter() - t) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--taus", type=float, nargs="*", default=[0.5, 0.8, 0.9, 0.93, 0.95, 1.0])
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    paths = {"dense": args.model}
    rows = []
    for tau in args.taus:
        out = tmp / f"tau_{tau}.onnx"
        t = time.perf_counter()
        _, report = onnx_sk.optimize(args.model, out, init="approx", max_error=tau, verify=False)
        elapsed = time.perf_counter() - t
        tot = report.totals
        paths[f"tau={tau:g}"] = out
        rows.append({
            "tau": tau, "replaced": tot["replaced"], "convs": tot["convs"], "params_ratio": tot["params_ratio"],
            "conv_macs_ratio": tot["conv_macs_ratio"], "optimize_s": elapsed,
            "designs": sorted({r["design"] for r in report.convs if r["design"]}),
        })  # fmt: skip
        print(
            f"τ={tau:g}: replaced {tot['replaced']}/{tot['convs']} in {elapsed:.0f} s", flush=True
        )
    lat = latencies(paths, args.rounds)
    for row in rows:
        key = f"tau={row['tau']:g}"
        (cmp_,) = compare(args.model, paths[key], samples=args.samples)
        row.update(latency_ms=lat[key], speedup=lat["dense"] / lat[key], cosine=cmp_.cosine,
                   top1_agreement=cmp_.top1_agreement, max_abs_diff=cmp_.max_abs_diff)  # fmt: skip
    print(f"\ndense latency {lat['dense']:.2f} ms (1 thread, ORT_ENABLE_ALL)\n")
    print(
        "| τ | convs replaced | params | conv MACs | latency (speedup) | cosine | top-1 agreement |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        macs = "n/a" if r["conv_macs_ratio"] is None else f"×{r['conv_macs_ratio']:.3f}"
        print(f"| {r['tau']:g} | {r['replaced']}/{r['convs']} | ×{r['params_ratio']:.3f} | {macs} | "
              f"{r['latency_ms']:.2f} ms ({r['speedup']:.2f}×) | {r['cosine']:.4f} | {r['top1_agreement']:.3f} |")  # fmt: skip
    if args.out:
        args.out.write_text(
            json.dumps(
                {"model": str(args.model), "dense_latency_ms": lat["dense"], "rows": rows}, indent=2
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
