"""The tool's own speed (issue 14.3): ``optimize`` on ResNet-50 with ``--max-error 0.5``, with
``--calibration`` (16 seeded random samples) and with ``--objective latency``, timed before and
after the fit cache, the worker processes and the cheaper data-aware refinement.

"before" is the package as of ``--before-rev`` (exported with ``git archive`` to a temporary
folder and run with ``PYTHONPATH`` pointing there); "after 1 worker" is this tree with
``ONNX_SK_WORKERS=1`` (the cache and the cheaper refinement alone); "after" is this tree with
the default workers (the cores of ``os.sched_getaffinity``). The variants of each case run
interleaved, in a rotated order per repeat, each a fresh ``python -m onnx_sk optimize`` child
process: wall time and the child's CPU time (user + sys). Each output is compared with the
"before" output of the same case: the same nodes (so the same designs), and the largest
difference of an initializer, relative to its largest magnitude.

    .venv/bin/python bench/bench_tool_speed.py --before-rev 4fe46b2

Writes ``bench/results/tool_speed.md`` (and ``.json``). On a shared machine the times swing with
the other load: compare the ratios of one run, never figures across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
CASES = {
    "max-error": ["--max-error", "0.5"],
    "calibration": ["--calibration", "{cal}"],
    "latency": ["--objective", "latency"],
}


def export(rev: str, folder: Path) -> Path:
    """The package as of ``rev``, extracted into ``folder``."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "onnx_sk"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def calibration_file(model: Path, path: Path, samples: int) -> Path:
    name = onnx.load(str(model), load_external_data=False).graph.input[0].name
    x = np.random.default_rng(0).standard_normal((samples, 3, 224, 224)).astype(np.float32)
    np.savez(path, **{name: x})
    return path


def run(tree: Path, workers: str | None, args: list[str], out: Path) -> dict:
    """One ``optimize`` child with ``tree`` first on its path: it runs in ``out``'s folder, as
    ``python -m`` puts the working folder before ``PYTHONPATH``."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    env.pop("ONNX_SK_WORKERS", None)
    if workers is not None:
        env["ONNX_SK_WORKERS"] = workers
    check = "import onnx_sk, sys; sys.stdout.write(onnx_sk.__file__)"
    where = subprocess.run(
        [sys.executable, "-c", check], env=env, cwd=out.parent, capture_output=True, text=True
    ).stdout
    if not where.startswith(str(tree)):
        raise SystemExit(f"the child imports {where}, not the tree {tree}")
    cmd = [sys.executable, "-m", "onnx_sk", "optimize", *args[:1], str(out), *args[1:]]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=out.parent)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "last_line": proc.stdout.strip().splitlines()[-1]}


def compare(a: Path, b: Path) -> dict:
    """Same nodes (op, name, inputs, outputs), and the largest relative initializer difference."""
    ma, mb = onnx.load(str(a)), onnx.load(str(b))
    nodes = [(n.op_type, n.name, tuple(n.input), tuple(n.output)) for n in ma.graph.node]
    same_nodes = nodes == [
        (n.op_type, n.name, tuple(n.input), tuple(n.output)) for n in mb.graph.node
    ]
    ia = {t.name: numpy_helper.to_array(t) for t in ma.graph.initializer}
    ib = {t.name: numpy_helper.to_array(t) for t in mb.graph.initializer}
    worst = 0.0
    if set(ia) == set(ib):
        for name, x in ia.items():
            y = ib[name]
            if x.shape != y.shape:
                worst = float("inf")
                break
            if x.size and np.issubdtype(x.dtype, np.floating):
                scale = float(np.abs(x).max()) or 1.0
                worst = max(worst, float(np.abs(x.astype(np.float64) - y).max()) / scale)
            elif not np.array_equal(x, y):
                worst = float("inf")
    else:
        worst = float("inf")
    return {
        "same_nodes": same_nodes,
        "max_rel_weight_diff": worst,
        "identical_bytes": a.read_bytes() == b.read_bytes(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models/big/resnet50.onnx")
    parser.add_argument("--before-rev", required=True)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--out", type=Path, default=RESULTS / "tool_speed.md")
    a = parser.parse_args()
    a.model = a.model.resolve()
    with tempfile.TemporaryDirectory(prefix="tool_speed_") as tmp:
        tmpdir = Path(tmp)
        (tmpdir / "before").mkdir()
        before_tree = export(a.before_rev, (tmpdir / "before").resolve())
        cal = calibration_file(a.model, tmpdir / "cal.npz", a.samples)
        variants = {
            "before": (before_tree, None),
            "after 1 worker": (ROOT, "1"),
            "after": (ROOT, None),
        }
        rows: dict[str, dict] = {}
        for case in a.cases.split(","):
            args = [str(a.model), *(x.format(cal=cal) for x in CASES[case])]
            timings: dict[str, list[dict]] = {v: [] for v in variants}
            names = list(variants)
            for rep in range(a.repeats):
                order = names[rep % len(names) :] + names[: rep % len(names)]
                for v in order:
                    tree, workers = variants[v]
                    out = tmpdir / f"{case}-{v.replace(' ', '_')}.onnx"
                    timings[v].append(run(tree, workers, args, out))
                    print(case, v, f"{timings[v][-1]['wall_s']:.1f} s", flush=True)
            checks = {
                v: compare(
                    tmpdir / f"{case}-before.onnx", tmpdir / f"{case}-{v.replace(' ', '_')}.onnx"
                )
                for v in names[1:]
            }
            rows[case] = {
                "command": "onnx-sk optimize MODEL OUT "
                + " ".join(CASES[case]).format(cal="CAL.npz"),
                "runs": timings,
                "checks": checks,
            }
    write(a, rows)


def _median(runs: list[dict], key: str) -> float:
    return float(np.median([r[key] for r in runs]))


def write(a: argparse.Namespace, rows: dict[str, dict]) -> None:
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    cores = len(os.sched_getaffinity(0))
    lines = [
        f"# Tool speed: `{a.model.name}`, before = `{a.before_rev}`",
        "",
        f"`python bench/bench_tool_speed.py --before-rev {a.before_rev} --repeats {a.repeats}` "
        f"({cores} cores; `CAL.npz`: {a.samples} seeded random 1×3×224×224 samples; "
        f"load average at the end {os.getloadavg()[0]:.1f}: the machine was shared). "
        "Median wall seconds (CPU seconds of the child in brackets); ratio = before / after.",
        "",
        "| case | command | before | after, 1 worker | after | ratio | same nodes | max rel. weight diff |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for case, row in rows.items():
        r = row["runs"]
        cells = [f"{_median(r[v], 'wall_s'):.1f} ({_median(r[v], 'cpu_s'):.1f})" for v in r]
        ratio = _median(r["before"], "wall_s") / _median(r["after"], "wall_s")
        check = row["checks"]["after"]
        lines.append(
            f"| {case} | `{row['command']}` | {' | '.join(cells)} | {ratio:.2f}× | "
            f"{'yes' if check['same_nodes'] else 'NO'} | {check['max_rel_weight_diff']:.2g}"
            f"{' (identical bytes)' if check['identical_bytes'] else ''} |"
        )
    a.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
