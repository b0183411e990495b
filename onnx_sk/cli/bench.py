"""``onnx-sk bench MODEL [MODEL …]``: interleaved ONNX Runtime timing, speedup vs the first model."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from onnx_sk.cli.output import FoldingTable, check_json_out, console, emit_json, fmt_count
from onnx_sk.cli.params import choice_help
from onnx_sk.cli.plot import check_plot_path, plot_bench
from onnx_sk.errors import UserError
from onnx_sk.graph.shapes import parse_input_shapes
from onnx_sk.runtime.bench import BenchOptions, bench
from onnx_sk.runtime.session import OPT_LEVELS


def parse_threads(text: str) -> tuple[int, ...]:
    try:
        threads = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise UserError(f"--threads {text!r}: expected positive integers like 1,2") from None
    if not threads or any(t < 1 for t in threads):
        raise UserError(f"--threads {text!r}: expected positive integers like 1,2")
    return threads


def progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(), console=Console(stderr=True), transient=True,
    )  # fmt: skip


def _mib(value: int | None) -> str:
    return "?" if value is None else f"{value / 2**20:.1f} MiB"


def print_bench(doc: dict) -> None:
    env, s = doc["environment"], doc["settings"]
    console.print(
        f"onnx-sk {env['onnx_sk']} · onnxruntime {env['onnxruntime']} · onnx {env['onnx']} · "
        f"CPU {env['cpu_identity']} ({env['cpu_count']} logical) · opt level {s['opt_level']} · "
        f"warm-up {s['warmup']} · "
        + (f"{s['seconds']} s" if s["seconds"] else f"{s['runs'] or 50} runs")
        + " interleaved"
    )
    statics = {m["name"]: m for m in doc["models"]}
    for res in doc["results"]:
        t = FoldingTable(
            f"{res['provider']} × {res['threads']} thread(s)",
            ["model", "p50 ms", "p90", "p99", "min", "mean", "items/s", "speedup", "memory",
             "file", "params", "MACs"],
            optional=["p99", "min", "mean", "file", "MACs", "params", "items/s", "p90"],
            caption=f"memory: {res['memory_method']}",
        )  # fmt: skip
        for m in res["models"]:
            lat, st = m["latency_ms"], statics[m["name"]]
            t.add_row(
                m["name"], f"{lat['p50']:.3f}", f"{lat['p90']:.3f}", f"{lat['p99']:.3f}",
                f"{lat['min']:.3f}", f"{lat['mean']:.3f}", f"{m['throughput_per_s']:.1f}",
                f"{m['speedup_vs_first']:.2f}×", _mib(m["memory_bytes"]), _mib(st["file_bytes"]),
                fmt_count(st["params"]), fmt_count(st["macs"]),
            )  # fmt: skip
        console.print(t)
        for m in res["models"]:
            if m["profile"]:
                _print_profile(m)


def _print_profile(m: dict) -> None:
    prof = m["profile"]
    t = FoldingTable(
        f"{m['name']}: profile",
        ["kind", "ms", "share", "nodes"],
        caption=f"{prof['total_ms']:.3f} ms of kernels per run (ORT's profiler)",
    )
    for r in prof["kinds"]:
        t.add_row(r["kind"], f"{r['ms']:.3f}", f"{100 * r['share']:.1f}%", str(r["nodes"]))
    console.print(t)


def bench_cmd(
    models: list[Path] = typer.Argument(..., help="ONNX models; the first is the baseline."),
    provider: list[str] = typer.Option(
        None, "--provider", help="Execution provider (repeatable; default CPUExecutionProvider)."
    ),
    threads: str = typer.Option("1", help="Intra-op thread counts, comma-separated: 1,2."),
    batch: int = typer.Option(None, help="Batch size (replaces dim 0 of every input)."),
    input_shape: list[str] = typer.Option(
        None, "--input-shape", help="NAME:1x3x224x224 (repeatable)."
    ),
    warmup: int = typer.Option(5, help="Untimed runs per model first."),
    runs: int = typer.Option(None, help="Timed runs per model (default 50)."),
    seconds: float = typer.Option(
        None, help="Time each configuration for this long instead of --runs."
    ),
    opt_level: str = typer.Option(
        "all",
        help="ONNX Runtime graph optimisation: all, extended, basic, disabled.",
        **choice_help(tuple(OPT_LEVELS)[::-1]),
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the JSON document to stdout."),
    json_file: str = typer.Option(
        None, "--json-out", help="Also write the JSON document to FILE (- = stdout)."
    ),
    plot: Path = typer.Option(
        None, help="Plot latencies (and the profile) to this .png, .svg or .pdf file."
    ),
    profile: bool = typer.Option(
        False, "--profile", help="Per op type / node times from ORT's profiler."
    ),
) -> None:
    """Time models in ONNX Runtime, interleaved (A B A B …), and compare them with the first.

    Example: onnx-sk bench resnet18.onnx resnet18_sk.onnx --threads 1,2 --seconds 5
    """
    check_json_out(json_file, "--json-out")
    if plot is not None:
        check_plot_path(plot)
    options = BenchOptions(
        providers=tuple(provider or ("CPUExecutionProvider",)),
        threads=parse_threads(threads),
        batch=batch,
        input_shapes=parse_input_shapes(input_shape),
        warmup=warmup,
        runs=runs,
        seconds=seconds,
        opt_level=opt_level,
        profile=profile,
    )
    options.validate()
    with progress_bar() as bar:
        task = bar.add_task("bench", total=1.0)
        doc = bench(
            models, options, lambda f, what: bar.update(task, completed=f, description=what)
        )
    if plot is not None:
        plot_bench(doc, plot)
    if not emit_json(doc, json_out, json_file, "--json-out"):
        print_bench(doc)
