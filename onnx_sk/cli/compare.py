"""``onnx-sk compare A B``: output differences of two models on the same inputs."""

from __future__ import annotations

from pathlib import Path

import typer

from onnx_sk.cli.output import check_json_out, console, emit_json, table
from onnx_sk.graph.shapes import parse_input_shapes
from onnx_sk.runtime.compare import (
    OutputSlice,
    compare,
    parse_class_axes,
    parse_slices,
    to_dict,
)


def compare_cmd(
    a: str = typer.Argument(..., help="Reference ONNX model."),
    b: str = typer.Argument(..., help="ONNX model to compare with A."),
    inputs: str = typer.Option(None, help=".npz of input tensors (keys = input names)."),
    samples: int = typer.Option(
        8, help="Without --inputs: this many seeded random inputs (run one at a time)."
    ),
    seed: int = typer.Option(0, help="Seed of the random inputs."),
    input_shape: list[str] = typer.Option(None, help="NAME:1x3x224x224 for the random inputs."),
    class_axis: list[str] = typer.Option(
        None,
        "--class-axis",
        help="[OUTPUT:]AXIS: report top-1 agreement over this axis (default: 2-D [N, C] "
        "outputs only; repeatable).",
    ),
    slice_: list[str] = typer.Option(
        None,
        "--slice",
        help="OUTPUT:AXIS:START:STOP: compare only this part of an output, e.g. the class "
        "scores boxes:1:4: of a YOLO head (repeatable).",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print JSON to stdout."),
    json_file: str = typer.Option(
        None, "--json-out", help="Also write the JSON document to FILE (- = stdout)."
    ),
) -> None:
    """Max/mean absolute difference, cosine similarity and top-1 agreement of each output.

    Example: onnx-sk compare resnet18.onnx resnet18_sk.onnx --samples 32 --class-axis 1
    """
    check_json_out(json_file, "--json-out")
    rows = compare(
        a, b, inputs, samples, seed, parse_input_shapes(input_shape),
        parse_class_axes(class_axis), parse_slices(slice_),
    )  # fmt: skip
    if emit_json(to_dict(rows), json_out, json_file, "--json-out"):
        return
    t = table(
        f"{Path(a).name} vs {Path(b).name}",
        ["output", "shape", "max |diff|", "mean |diff|", "cosine", "top-1 agreement"],
    )
    for r in rows:
        top1 = "" if r.top1_agreement is None else f"{r.top1_agreement:.3f}"
        if r.equal_fraction is not None:  # an integer output: how many elements are equal
            top1 = f"{r.equal_fraction:.3f} equal"
        where = ""
        if r.slice is not None:
            s = OutputSlice(**r.slice)
            where = f" (axis {s.axis} [{s.bounds}])"
        t.add_row(
            r.name + where,
            "×".join(map(str, r.shape)),
            f"{r.max_abs_diff:.3g}",
            f"{r.mean_abs_diff:.3g}",
            f"{r.cosine:.6f}",
            top1,
        )
    console.print(t)
