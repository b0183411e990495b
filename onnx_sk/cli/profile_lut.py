"""``onnx-sk profile-lut MODEL --out lut.json``: measure a model's conv shapes into a latency table."""

from __future__ import annotations

from pathlib import Path

import typer

from onnx_sk.cli.bench import parse_threads, progress_bar
from onnx_sk.cli.output import console
from onnx_sk.graph.shapes import parse_input_shapes
from onnx_sk.runtime.profile_lut import profile_lut


def profile_lut_cmd(
    model: Path = typer.Argument(..., help="ONNX model whose dense convs to measure."),
    out: Path = typer.Option(
        ..., "--out", help="Latency table (JSON); merged into when it exists."
    ),
    provider: list[str] = typer.Option(None, "--provider", help="Execution provider (repeatable)."),
    threads: str = typer.Option("1", help="Intra-op thread counts, comma-separated: 1,2."),
    input_shape: list[str] = typer.Option(
        None, "--input-shape", help="NAME:1x3x224x224 (repeatable)."
    ),
    bottleneck_ratio: float = typer.Option(0.25, help="Bottleneck K/F of the bottleneck designs."),
    precision: str = typer.Option(
        "fp32",
        help="fp32; int8 or auto: also time each shape in int8 QDQ form, and the convs no SK "
        "design replaces (1×1, depthwise, first) dense in fp32 and int8, for optimize "
        "--precision int8|auto --lut-from-target.",
    ),
) -> None:
    """Time every eligible conv shape's dense conv and SK candidates on this machine: run it on
    the edge device, then optimize --objective latency --lut FILE --lut-from-target.

    Example: onnx-sk profile-lut resnet18.onnx --out lut.json --threads 1,4
    """
    with progress_bar() as bar:
        task = bar.add_task("profile-lut", total=1.0)
        summary = profile_lut(
            model, out, tuple(provider or ("CPUExecutionProvider",)), parse_threads(threads),
            parse_input_shapes(input_shape), bottleneck_ratio, precision=precision,
            progress=lambda f, what: bar.update(task, completed=f, description=what[:60]),
        )  # fmt: skip
    for row in summary["configs"]:
        console.print(
            f"{row['provider']} × {row['threads']} thread(s): {row['shapes']} conv shapes, "
            f"{row['measured']} measured now, {row['shapes'] - row['measured']} already in the table"
        )
    console.print(
        f"wrote {summary['lut']} (onnxruntime {summary['onnxruntime']}, {summary['cpu']})"
    )
