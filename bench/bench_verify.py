"""Cost of the per-subgraph verification (issue 16.6) relative to the whole-model check.

The per-subgraph check runs only where the whole-model comparison fails (float32 rounding growth
through deep or chaotic chains); to time it on an ordinary model the whole-model comparison is
made to fail here (a stand-in for that case; the rewrite itself is unchanged). Runs alternate
(whole, per subgraph, whole, …) and the ratio of the medians of the whole ``optimize`` run is
reported, with the check that decided.

    python bench/bench_verify.py models/big/resnet50.onnx --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import onnx_sk
from onnx_sk.passes import verify as verify_pass
from onnx_sk.runtime.verify import ToleranceError, check_outputs


def _forced_failure(*args, **kwargs):
    raise ToleranceError("whole-model comparison made to fail by bench_verify.py")


def _run(model: Path, out: Path, per_subgraph: bool) -> tuple[float, str]:
    verify_pass.check_outputs = _forced_failure if per_subgraph else check_outputs
    start = time.perf_counter()
    _, report = onnx_sk.optimize(model, out, include_first=True)
    seconds = time.perf_counter() - start
    verify_pass.check_outputs = check_outputs
    assert report.verification is not None
    return seconds, report.verification["decided_by"].split(":")[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    whole, sub, decided = [], [], set()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.onnx"
        for _ in range(args.repeats):
            for per_subgraph, times in ((False, whole), (True, sub)):
                seconds, by = _run(args.model, out, per_subgraph)
                times.append(seconds)
                decided.add(by)
    med = statistics.median
    print(json.dumps({
        "model": str(args.model), "repeats": args.repeats, "decided_by": sorted(decided),
        "optimize_whole_model_s": med(whole), "optimize_per_subgraph_s": med(sub),
        "per_subgraph_over_whole_model": med(sub) / med(whole),
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
