"""``profile-lut``: measure every eligible conv shape of a model into a latency table.

Run it on the edge device, carry the table back, and optimize with
``--objective latency --lut FILE --lut-from-target`` (the NetAdapt workflow): nothing is then
measured on the build machine, and a missing entry is an error.
"""

from __future__ import annotations

import os
from pathlib import Path

from onnx_sk.errors import UserError
from onnx_sk.graph.convs import find_convs
from onnx_sk.graph.load import load_model
from onnx_sk.graph.qdq import why_not_int8
from onnx_sk.graph.shapes import per_sample_inputs
from onnx_sk.maths.designs import DEFAULT_BOTTLENECK_RATIO
from onnx_sk.runtime.latency import fill, in_shape_of, shape_key
from onnx_sk.runtime.lut import load_lut
from onnx_sk.runtime.observed import conv_shapes
from onnx_sk.runtime.progress import Progress
from onnx_sk.runtime.session import check_providers


def profile_lut(
    model: str | os.PathLike[str],
    out: str | os.PathLike[str],
    providers: tuple[str, ...] = ("CPUExecutionProvider",),
    threads: tuple[int, ...] = (1,),
    input_shapes: dict | None = None,
    ratio: float | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    precision: str = "fp32",
) -> dict:
    """Measure every eligible conv shape of ``model`` into the LUT ``out`` (merged if it exists).

    ``precision`` ``int8`` or ``auto`` (what ``optimize --precision`` will read): every shape is
    also timed in int8 QDQ form, and the convs no SK design replaces but int8 could (1×1,
    depthwise, the first conv) are timed dense in fp32 and int8. A symbolic batch is measured at
    1 (as optimize measures). Returns a summary: the LUT path, the machine, and per provider ×
    threads how many shapes were measured now and how many were already in the table.
    """
    ratio = DEFAULT_BOTTLENECK_RATIO if ratio is None else ratio
    if not 0 < ratio <= 1:
        raise UserError(f"--bottleneck-ratio {ratio}: expected 0 < R <= 1")
    if not threads or any(t < 1 for t in threads):
        raise UserError(f"--threads {threads}: expected positive integers like 1,2")
    check_providers(list(providers))
    out = Path(out)
    if not out.parent.exists():
        raise UserError(f"output folder {out.parent} does not exist")
    if precision not in ("fp32", "int8", "auto"):
        raise UserError(f"--precision {precision!r}: expected one of fp32, int8, auto")
    loaded = load_model(model)
    counted, _ = per_sample_inputs(loaded.model, input_shapes or {})
    every = find_convs(loaded.model, conv_shapes(loaded.model, counted))
    sites = [s for s in every if s.reason is None]
    if not sites:
        raise UserError(f"{model}: no conv that an SK design could replace: nothing to measure")
    precisions: tuple[str, ...] = ("fp32",) if precision == "fp32" else ("fp32", "int8")
    if precision != "fp32":  # the kept convs choose between dense fp32 and int8
        sites += [
            s for s in every if s.reason is not None and why_not_int8(s) is None and in_shape_of(s)
        ]
    unknown = [s.name for s in sites if in_shape_of(s) is None]
    if unknown:
        raise UserError(
            f"{model}: the input size of conv {unknown[0]!r} is unknown: give --input-shape NAME:DIMS"
        )
    lut = load_lut(out)
    shapes_total = len({shape_key(s.spec, in_shape_of(s), ratio) for s in sites})  # type: ignore[arg-type]
    configs = [(p, t) for p in providers for t in threads]
    rows = []
    for k, (provider, t) in enumerate(configs):

        def tick(frac: float, what: str, k: int = k) -> None:
            if progress is not None:
                progress((k + frac) / len(configs), what)

        measured = fill(lut, sites, provider, t, ratio, seed, tick, precisions)
        lut.save(out)
        rows.append(
            {"provider": provider, "threads": t, "shapes": shapes_total, "measured": measured}
        )
    return {"lut": str(out), **lut.machine, "configs": rows}
