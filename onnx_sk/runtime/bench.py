"""ONNX Runtime timing of whole models: interleaved runs, latency statistics, memory, profile.

For each (provider, threads) configuration every model gets its own session (explicit provider
and thread count, the chosen graph optimisation level). Its memory is measured apart, in a fresh
Python process per model that imports onnxruntime, then creates the session and runs it once
while its peak resident memory is watched (:func:`onnx_sk.runtime.machine.peak_rss_delta`): in this
process freed memory would be reused and hide the cost. Then ``warmup`` runs per model, then timed runs interleaved across the models (A B A B …) so that a noisy machine
slows every model alike: round ``r`` times each model once, in order.

Statistics per model (milliseconds of ``session.run`` wall time, ``time.perf_counter``): p50,
p90, p99 (numpy's linear percentiles), min, mean, max; throughput = batch · 1000 / mean (items
per second); ``speedup_vs_first`` = the median over rounds of t_first[r] / t_model[r] (pair by
pair), and ``speedup_p50_vs_first`` = p50_first / p50_model.

``profile``: after the timed runs a separate session per model runs with ONNX Runtime's profiler
on (one warm-up run, then ``profile_runs``); the first run of every node is dropped and the median
of the rest taken, per node and summed per op type and per *kind*: a conv's kind from its original node
(dense, pointwise, depthwise, grouped), ``shuffle`` for onnx-sk's shuffle nodes (names
containing ``/sk/shuffle/``), ``layout`` for ORT's NCHWc reorders, else the op type. Each
profiled node names its ``origin``: the model node it came from (see :func:`node_origins`).

Params (every floating-point constant) and MACs (convs + Gemm/MatMul) are analyze's counts at
the benchmarked input shape.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx

from onnx_sk.errors import UserError
from onnx_sk.graph.analyze import analyze_model
from onnx_sk.graph.convs import find_convs
from onnx_sk.graph.load import load_model
from onnx_sk.graph.shapes import infer_shapes
from onnx_sk.runtime.feeds import random_inputs, real_inputs
from onnx_sk.runtime.machine import environment, peak_rss_delta
from onnx_sk.runtime.profile import node_origins, parse_profile
from onnx_sk.runtime.progress import Progress
from onnx_sk.runtime.session import OPT_LEVELS, check_providers, session, with_cpu_fallback

if TYPE_CHECKING:
    import onnxruntime

log = logging.getLogger(__name__)

DEFAULT_RUNS = 50
PROFILE_RUNS = 10


@dataclass(frozen=True)
class BenchOptions:
    """What ``onnx-sk bench`` measures and how (``validate`` turns bad values into UserError)."""

    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    threads: tuple[int, ...] = (1,)
    batch: int | None = None
    input_shapes: dict = field(default_factory=dict)
    warmup: int = 5
    runs: int | None = None
    seconds: float | None = None
    opt_level: str = "all"
    profile: bool = False
    profile_runs: int = PROFILE_RUNS
    seed: int = 0

    def validate(self) -> None:
        if not self.providers:
            raise UserError("--provider: name at least one execution provider")
        check_providers(list(self.providers))
        if not self.threads or any(t < 1 for t in self.threads):
            raise UserError(f"--threads {self.threads}: expected positive integers like 1,2")
        if self.batch is not None and self.batch < 1:
            raise UserError(f"--batch {self.batch}: expected a positive integer")
        if self.warmup < 0:
            raise UserError(f"--warmup {self.warmup}: expected 0 or more")
        if self.runs is not None and self.seconds is not None:
            raise UserError("give --runs or --seconds, not both")
        if self.runs is not None and self.runs < 1:
            raise UserError(f"--runs {self.runs}: expected a positive integer")
        if self.seconds is not None and not self.seconds > 0:
            raise UserError(f"--seconds {self.seconds}: expected a positive number")
        if self.opt_level not in OPT_LEVELS:
            raise UserError(
                f"--opt-level {self.opt_level!r}: expected one of {', '.join(OPT_LEVELS)}"
            )

    @property
    def settings(self) -> dict:
        return {
            "providers": list(self.providers),
            "threads": list(self.threads),
            "batch": self.batch,
            "input_shapes": {k: list(v) for k, v in self.input_shapes.items()},
            "warmup": self.warmup,
            "runs": self.runs if self.seconds is None else None,
            "seconds": self.seconds,
            "opt_level": self.opt_level,
            "profile": self.profile,
            "seed": self.seed,
        }


@dataclass
class BenchModel:
    """A model ready to time: where it is, its feeds, and its static counts."""

    name: str
    path: Path
    feeds: dict[str, np.ndarray]
    file_bytes: int
    params: int
    macs: int | None
    conv_kinds: dict[str, str]
    batch: int
    origins: dict[str, str] = field(default_factory=dict)

    def row(self) -> dict:
        return {
            "name": self.name,
            "path": str(self.path),
            "file_bytes": self.file_bytes,
            "params": self.params,
            "macs": self.macs,
            "batch": self.batch,
            "inputs": {k: list(v.shape) for k, v in self.feeds.items()},
        }


def _feed_shapes(
    model: onnx.ModelProto, given: dict[str, tuple[int, ...]], batch: int | None, label: str
) -> dict[str, tuple[int, ...]]:
    inputs = real_inputs(model)
    shapes = {}
    for vi in inputs:
        shape = given.get(vi.name) or (given.get("") if len(inputs) == 1 else None)
        if shape is None:
            dims = vi.type.tensor_type.shape.dim
            shape = tuple(
                d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in dims
            )
            if batch is not None and shape:
                shape = (batch, *shape[1:])
            if -1 in shape[:1]:
                shape = (1, *shape[1:])
            if -1 in shape:
                raise UserError(
                    f"{label}: input {vi.name!r} has a symbolic dim {list(shape)}: give "
                    f"--input-shape {vi.name}:DIMS"
                )
        elif batch is not None:
            shape = (batch, *shape[1:])
        shapes[vi.name] = tuple(shape)
    return shapes


def _file_bytes(path: Path, external: list[str]) -> int:
    return path.stat().st_size + sum((path.parent / f).stat().st_size for f in external)


def load_bench_model(
    path: str | Path, options: BenchOptions, name: str | None = None
) -> BenchModel:
    """Load ``path``, fix its input shapes (``--input-shape``, ``--batch``) and count it."""
    loaded = load_model(path)
    label = str(path)
    shapes = _feed_shapes(loaded.model, options.input_shapes, options.batch, label)
    feeds = random_inputs(loaded.model, np.random.default_rng(options.seed), shapes)
    report = analyze_model(loaded, shapes)
    static = infer_shapes(loaded.model, shapes)
    kinds = {s.name: s.spec.kind for s in find_convs(loaded.model, static) if s.spec is not None}
    origins = node_origins(loaded.model.graph)
    assert loaded.path is not None
    return BenchModel(
        name=name or loaded.path.stem,
        path=loaded.path,
        feeds=feeds,
        file_bytes=_file_bytes(loaded.path, loaded.external_files),
        params=report["totals"]["all_params"],
        macs=report["totals"]["total_macs"],
        conv_kinds=kinds,
        batch=next(iter(shapes.values()))[0] if shapes else 1,
        origins=origins,
    )


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def open_session(
    model: BenchModel,
    provider: str,
    threads: int,
    opt_level: str,
    profile_prefix: str | None = None,
) -> onnxruntime.InferenceSession:
    """A session for ``model``; a provider that cannot run it is a UserError, never a fallback."""
    try:
        sess = session(model.path, with_cpu_fallback(provider), threads, opt_level, profile_prefix)
        sess.run(None, model.feeds)
    except UserError:
        raise
    except Exception as exc:
        raise UserError(
            f"{model.path}: {provider} cannot run this model: {_first_line(exc)}"
        ) from None
    return sess


def latency_stats(seconds: Sequence[float], batch: int = 1) -> dict:
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    mean = float(ms.mean())
    return {
        "p50": float(np.percentile(ms, 50)),
        "p90": float(np.percentile(ms, 90)),
        "p99": float(np.percentile(ms, 99)),
        "min": float(ms.min()),
        "mean": mean,
        "max": float(ms.max()),
        "throughput_per_s": batch * 1e3 / mean if mean > 0 else None,
    }


def _time_once(sess: onnxruntime.InferenceSession, feeds: dict[str, np.ndarray]) -> float:
    start = time.perf_counter()
    sess.run(None, feeds)
    return time.perf_counter() - start


def _interleave(
    sessions: list[onnxruntime.InferenceSession],
    models: list[BenchModel],
    options: BenchOptions,
    tick: Callable[[float], None],
) -> list[list[float]]:
    """Warm-up, then rounds A B A B …; returns the seconds per model, round by round."""
    for _ in range(options.warmup):
        for sess, m in zip(sessions, models, strict=True):
            sess.run(None, m.feeds)
    times: list[list[float]] = [[] for _ in models]
    start, rounds = time.perf_counter(), 0
    target = options.runs or DEFAULT_RUNS
    while True:
        for i, (sess, m) in enumerate(zip(sessions, models, strict=True)):
            times[i].append(_time_once(sess, m.feeds))
        rounds += 1
        elapsed = time.perf_counter() - start
        if options.seconds is not None:
            tick(min(1.0, elapsed / options.seconds))
            if elapsed >= options.seconds and rounds >= 3:
                return times
        else:
            tick(rounds / target)
            if rounds >= target:
                return times


def _speedups(times: list[list[float]]) -> list[tuple[float, float]]:
    first = np.asarray(times[0])
    out = []
    for t in times:
        paired = float(np.median(first / np.asarray(t)))
        out.append((paired, float(np.median(first) / np.median(t))))
    return out


def profile_model(model: BenchModel, provider: str, threads: int, options: BenchOptions) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        sess = open_session(model, provider, threads, options.opt_level, str(Path(tmp) / "prof"))
        for _ in range(options.profile_runs):
            sess.run(None, model.feeds)
        out = sess.end_profiling()
        return parse_profile(out, model.conv_kinds, model.origins)


MEMORY_METHOD = "fresh process: {method} around session creation + first run"


def memory_probe(
    model: BenchModel, provider: str, threads: int, opt_level: str
) -> tuple[int | None, str]:
    """Peak extra memory of creating ``model``'s session and running it once, in a fresh process."""
    with tempfile.TemporaryDirectory() as tmp:
        feeds = Path(tmp) / "feeds.npz"
        # positional (arr_0, arr_1, …) with the names beside them: as keywords, an input named
        # like one of savez's own (allow_pickle) would be taken for it
        np.savez(feeds, *model.feeds.values())
        names = json.dumps(list(model.feeds))
        code = "import sys; from onnx_sk.runtime.bench import _memory_probe_main; _memory_probe_main(sys.argv[1:])"
        args = [str(model.path), provider, str(threads), opt_level, str(feeds), names]
        proc = subprocess.run(
            [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600
        )
    if proc.returncode != 0:
        log.warning("memory probe of %s failed: %s", model.path, proc.stderr.strip()[-300:])
        return None, "unavailable (the probe process failed)"
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    return doc["bytes"], MEMORY_METHOD.format(method=doc["method"])


def _memory_probe_main(argv: list[str]) -> None:
    path, provider, threads, opt_level, feeds_path, names = argv
    import onnxruntime  # noqa: F401  (imported before the baseline is read)

    with np.load(feeds_path) as arrays:
        feeds = {name: arrays[f"arr_{i}"] for i, name in enumerate(json.loads(names))}

    def block() -> None:
        sess = session(path, with_cpu_fallback(provider), int(threads), opt_level)
        sess.run(None, feeds)

    _, extra, method = peak_rss_delta(block)
    print(json.dumps({"bytes": extra, "method": method}))


def _config(
    models: list[BenchModel],
    provider: str,
    threads: int,
    options: BenchOptions,
    tick: Callable[[float], None],
) -> dict:
    sessions, memory, method = [], [], ""
    for m in models:
        extra, method = memory_probe(m, provider, threads, options.opt_level)
        memory.append(extra)
        sessions.append(open_session(m, provider, threads, options.opt_level))
    times = _interleave(sessions, models, options, tick)
    del sessions
    speed = _speedups(times)
    rows = []
    for i, m in enumerate(models):
        stats = latency_stats(times[i], m.batch)
        rows.append(
            {
                "name": m.name,
                "runs": len(times[i]),
                "latency_ms": {k: v for k, v in stats.items() if k != "throughput_per_s"},
                "throughput_per_s": stats["throughput_per_s"],
                "speedup_vs_first": speed[i][0],
                "speedup_p50_vs_first": speed[i][1],
                "memory_bytes": memory[i],
                "profile": profile_model(m, provider, threads, options)
                if options.profile
                else None,
            }
        )
    return {"provider": provider, "threads": threads, "memory_method": method, "models": rows}


def bench(
    paths: Sequence[str | Path],
    options: BenchOptions | None = None,
    progress: Progress | None = None,
    names: Sequence[str] | None = None,
) -> dict:
    """Benchmark ``paths`` (the first is the baseline) under every provider × thread count.

    Returns the JSON document of ``onnx-sk bench --json``: ``environment``, ``settings``,
    ``models`` (static facts) and ``results`` (one entry per provider × threads).
    """
    options = options or BenchOptions()
    options.validate()
    if not paths:
        raise UserError("bench: give at least one model")
    models = [
        load_bench_model(p, options, names[i] if names else None) for i, p in enumerate(paths)
    ]
    configs = [(p, t) for p in options.providers for t in options.threads]
    results = []
    for k, (provider, threads) in enumerate(configs):
        what = f"{provider} × {threads} thread{'s' if threads > 1 else ''}"

        def tick(frac: float, k: int = k, what: str = what) -> None:
            if progress is not None:
                progress((k + min(frac, 1.0)) / len(configs), what)

        results.append(_config(models, provider, threads, options, tick))
    return {
        "environment": environment(),
        "settings": options.settings,
        "models": [m.row() for m in models],
        "results": results,
    }
