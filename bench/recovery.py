"""The recovery benchmark of a trained model (issue 13): quality with and without distillation.

A task module (``bench/recovery_<task>.py``) gives a trained dense ONNX model, a source of
unlabelled inputs drawn like its training data, a labelled test set (``predict`` runs a model on it,
``score`` rates predictions against labels or against the original's predictions) and calls
``main(task)``. Every row is one ``onnx-sk optimize`` run through the CLI, with the same
``--objective`` for all rows (default ``params``: every eligible conv replaced, the first kept), so
the rows differ in weights, not in designs, except the ``--max-error`` rows, which keep the convs
whose fit is worse than the budget:

- original: the dense model;
- he, approx, approx+calibration: the rewrite alone (``--init he``, ``--init approx``,
  ``--init approx --calibration DATA``);
- max-error τ: ``--init approx --calibration DATA --max-error τ`` for each ``--taus``;
- recover from he / approx: ``--init he|approx --recover DATA --recover-minutes M``;
- with ``--curve``: recovery from ``--curve-init`` on 100 and 300 samples (and ``--samples``), and
  for M/5 and M/2 minutes (and M).

Each row: quality vs the labels, agreement with the original (``score`` against the original's
predictions), params, latency speedup vs the original at 1 thread (every distinct graph structure
timed in one interleaved ``onnx_sk.runtime.bench`` run; models that differ only in weights share
a timing) and the tool's wall seconds. Writes ``recovery_<task>.json`` and ``.md`` to
``--out-dir``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnx_sk.runtime.bench import BenchOptions, bench

REPO = Path(__file__).resolve().parent.parent
REC_KEYS = ("samples", "train_samples", "seconds", "holdout_loss_before", "holdout_loss_after")


@dataclass
class Task:
    name: str
    teacher: Path
    quality_name: str
    unlabelled: Callable[[int, int], dict[str, np.ndarray]]
    predict: Callable[[Path], Any]
    score: Callable[[Any, Any], float]
    labels: Any
    optimize_args: list[str] = field(default_factory=list)
    recover_args: list[str] = field(default_factory=list)


@dataclass
class Row:
    name: str
    args: list[str]
    model: Path
    seconds: float = 0.0
    report: dict = field(default_factory=dict)
    quality: float | None = None
    agreement: float | None = None
    speedup: float | None = None
    error: str | None = None


def structure_key(path: Path) -> str:
    """Nodes, attributes and tensor shapes, without weight values: equal keys time the same."""
    m = onnx.load(str(path))
    h = hashlib.sha256()
    for init in m.graph.initializer:
        h.update(f"{init.name}:{list(init.dims)}:{init.data_type};".encode())
    for node in m.graph.node:
        node = onnx.NodeProto.FromString(node.SerializeToString())
        h.update(node.SerializeToString())
    return h.hexdigest()


def optimize(task: Task, row: Row, objective: str, lut: Path | None) -> None:
    report = row.model.with_suffix(".json")
    cmd = [sys.executable, "-m", "onnx_sk", "optimize", str(task.teacher), str(row.model)]
    cmd += ["--objective", objective, "--report", str(report), "-q"]
    if lut is not None:
        cmd += ["--lut", str(lut)]
    cmd += task.optimize_args + row.args
    env = dict(os.environ, PYTHONPATH=str(REPO))
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    row.seconds = time.perf_counter() - start
    if proc.returncode != 0:
        row.error = (proc.stderr.strip().splitlines() or ["failed"])[-1]
        print(f"  {row.name}: FAILED: {row.error}", flush=True)
        return
    row.report = json.loads(report.read_text())
    print(f"  {row.name}: {row.seconds:.0f} s", flush=True)


def display(args: list[str], data: Path) -> str:
    return " ".join(a if a != str(data) else "DATA" for a in args)


def main(task: Task, argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=f"recovery benchmark: {task.name}")
    ap.add_argument("--samples", type=int, default=1000, help="unlabelled inputs (<= 1000)")
    ap.add_argument("--minutes", type=float, default=5.0, help="--recover-minutes")
    ap.add_argument("--objective", default="params", help="the same for every row")
    ap.add_argument("--taus", default="0.25,0.5,1.0", help="--max-error points ('' = none)")
    ap.add_argument("--rows", default="", help="only these rows (comma list of names)")
    ap.add_argument("--curve", action="store_true", help="also quality vs samples and minutes")
    ap.add_argument("--curve-init", default="approx", choices=("he", "approx"))
    ap.add_argument("--bench-seconds", type=float, default=20.0, help="interleaved timing")
    ap.add_argument("--teacher", type=Path, default=None, help="override the task's model")
    ap.add_argument("--out-dir", type=Path, default=REPO / "bench" / "results")
    ap.add_argument("--keep", type=Path, default=None, help="keep the models in this folder")
    args = ap.parse_args(argv)
    if args.teacher is not None:
        task.teacher = args.teacher
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        data = work / "unlabelled.npz"
        np.savez(data, **task.unlabelled(args.samples, 1))
        lut = work / "lut.json" if args.objective == "latency" else None
        m = str(args.minutes)
        rec = ["--recover", str(data), "--recover-minutes", m, *task.recover_args]
        specs: list[tuple[str, list[str]]] = [
            ("he", ["--init", "he"]),
            ("approx", ["--init", "approx"]),
            ("approx+calibration", ["--init", "approx", "--calibration", str(data)]),
        ]
        for tau in filter(None, args.taus.split(",")):
            cal = ["--calibration", str(data)]
            specs.append((f"max-error {tau}", ["--init", "approx", *cal, "--max-error", tau]))
        specs += [("recover from he", ["--init", "he", *rec])]
        specs += [("recover from approx", ["--init", "approx", *rec])]
        if args.curve:
            init = ["--init", args.curve_init]
            for n in (100, 300):
                if n < args.samples:
                    sub = work / f"unlabelled_{n}.npz"
                    np.savez(sub, **{k: v[:n] for k, v in np.load(data).items()})
                    r = ["--recover", str(sub), "--recover-minutes", m, *task.recover_args]
                    specs.append((f"recover {args.curve_init}, {n} samples", init + r))
            for frac in (0.2, 0.5):
                mm = f"{args.minutes * frac:g}"
                r = ["--recover", str(data), "--recover-minutes", mm, *task.recover_args]
                specs.append((f"recover {args.curve_init}, {mm} min", init + r))
        only = set(filter(None, args.rows.split(",")))
        rows = [
            Row(name, a, work / f"row{i}.onnx")
            for i, (name, a) in enumerate(specs)
            if not only or name in only
        ]
        print(f"{task.name}: {len(rows)} optimize runs", flush=True)
        for row in rows:
            optimize(task, row, args.objective, lut)
        done = [r for r in rows if r.error is None]

        teacher_preds = task.predict(task.teacher)
        original = Row("original", [], task.teacher)
        original.quality = task.score(teacher_preds, task.labels)
        original.agreement = 1.0
        for row in done:
            preds = task.predict(row.model)
            row.quality = task.score(preds, task.labels)
            row.agreement = task.score(preds, teacher_preds)

        keys: dict[str, Path] = {}
        for row in done:
            keys.setdefault(structure_key(row.model), row.model)
        paths = [task.teacher, *keys.values()]
        opts = BenchOptions(threads=(1,), seconds=args.bench_seconds)
        timing = bench([str(p) for p in paths], opts)["results"][0]["models"]
        speed = {str(p): t["speedup_vs_first"] for p, t in zip(paths, timing, strict=True)}
        original.speedup = 1.0
        for row in done:
            row.speedup = speed[str(keys[structure_key(row.model)])]
        original.report = {"params": None}

    doc = {
        "task": task.name,
        "teacher": str(
            task.teacher.relative_to(REPO) if task.teacher.is_relative_to(REPO) else task.teacher
        ),
        "quality": task.quality_name,
        "command": f"PYTHONPATH=. python bench/recovery_{task.name}.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared), ORT 1 thread",
        "samples": args.samples,
        "minutes": args.minutes,
        "objective": args.objective,
        "seconds": round(time.perf_counter() - start, 1),
        "rows": [_row_doc(original, data)] + [_row_doc(r, data) for r in rows],
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = args.out_dir / f"recovery_{task.name}"
    out.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(doc))
    print(markdown(doc))


def _row_doc(row: Row, data: Path) -> dict:
    rep = row.report
    rec = rep.get("recovery") or {}
    totals = rep.get("totals") or {}
    return {
        "name": row.name,
        "options": display(row.args, data),
        "quality": row.quality,
        "agreement": row.agreement,
        "speedup": row.speedup,
        "params_ratio": totals.get("params_ratio"),
        "replaced": totals.get("replaced"),
        "convs": totals.get("convs"),
        "recovery": {k: rec[k] for k in REC_KEYS if k in rec} or None,
        "seconds": round(row.seconds, 1),
        "error": row.error,
    }


def markdown(doc: dict) -> str:
    q = doc["quality"]
    lines = [
        f"# Recovery: {doc['task']} (`{doc['teacher']}`)",
        "",
        f"`{doc['command']}` — {doc['machine']}; {doc['samples']} unlabelled samples, "
        f"recovery budget {doc['minutes']:g} min, `--objective {doc['objective']}` for every row; "
        f"{doc['seconds']:.0f} s in all.",
        "",
        f"| row | options | {q} | agreement with original | replaced | params | speedup "
        "(1 thread) | tool s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:

        def f(v: float | None, fmt: str) -> str:
            return "—" if v is None else format(v, fmt)

        if r["error"]:
            lines.append(f"| {r['name']} | `{r['options']}` | failed: {r['error']} | | | | | |")
            continue
        lines.append(
            f"| {r['name']} | `{r['options']}` | {f(r['quality'], '.4f')} | "
            f"{f(r['agreement'], '.4f')} | {r['replaced'] or '—'}/{r['convs'] or '—'} | "
            f"{f(r['params_ratio'], '.3f')}× | {f(r['speedup'], '.2f')}× | {r['seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"
