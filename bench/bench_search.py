"""Time Algorithm 1 (``onnx_sk.maths.search.search``) for C in (8, 16, 32, 64) and L in 3..6.

Run: ``PYTHONPATH=. .venv/bin/python bench/bench_search.py [--bottleneck] [--regex start]``.
Prints one row per (C, L): seconds (best of ``--repeat``), designs, survivors, removal counts.
"""

from __future__ import annotations

import argparse
import platform
import time

from onnx_sk.maths.search import REASONS, search


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--lengths", type=int, nargs="+", default=[3, 4, 5, 6])
    parser.add_argument("--bottleneck", action="store_true")
    parser.add_argument("--regex", default="start", choices=["start", "full", "any"])
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    print(
        f"# {platform.python_implementation()} {platform.python_version()}, {platform.machine()}, "
        f"bottleneck={args.bottleneck}, regex={args.regex}, best of {args.repeat}"
    )
    header = ["C", "L", "seconds", "designs", "survived", *REASONS]
    print(" | ".join(f"{h:>11}" for h in header))
    for c in args.channels:
        for length in args.lengths:
            best = float("inf")
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                result = search(c, length, regex=args.regex, bottleneck=args.bottleneck)
                best = min(best, time.perf_counter() - t0)
            row = [
                c,
                length,
                f"{best:.3f}",
                result.total,
                len(result.survivors),
                *(result.removed[r] for r in REASONS),
            ]
            print(" | ".join(f"{v!s:>11}" for v in row), flush=True)


if __name__ == "__main__":
    main()
