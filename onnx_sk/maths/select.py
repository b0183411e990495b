"""Choosing the SK design for one conv (T-ITS'21 Sec. V-A, "Mode 1: reduce").

For a conv (c_in, c_out, kernel) every admissible integer realisation of every allowed design
is scored by the objective: ``params`` (the papers' choice) or ``macs`` (per output pixel, stride
counted: stages before the spatial stage run at the input resolution). Ties go to the other
metric, then to fewer shuffles, fewer stages, and the design order. A realisation that is not
strictly smaller than the dense conv by the objective is never chosen.
"""

from __future__ import annotations

from onnx_sk.maths.designs import DEFAULT_BOTTLENECK_RATIO, DESIGNS, Realisation, realisations
from onnx_sk.maths.spec import ConvSpec

#: objectives scored by counting here; "latency" is measured by ``onnx_sk.runtime.latency``
COUNTED_OBJECTIVES = ("params", "macs")
OBJECTIVES = (*COUNTED_OBJECTIVES, "latency")


def _dense_cost(spec: ConvSpec, objective: str) -> float:
    return spec.params if objective == "params" else spec.weight_params


def cost(real: Realisation, objective: str) -> float:
    return real.params if objective == "params" else real.macs_per_output_pixel()


def _key(real: Realisation, objective: str, order: list[str]) -> tuple[float, float, int, int, int]:
    other = "macs" if objective == "params" else "params"
    return (
        cost(real, objective),
        cost(real, other),
        real.shuffles,
        len(real.stages),
        order.index(real.design),
    )


def candidates(
    spec: ConvSpec, designs: list[str] | None = None, ratio: float = DEFAULT_BOTTLENECK_RATIO
) -> list[Realisation]:
    """Every admissible realisation of the allowed designs for this conv."""
    out: list[Realisation] = []
    for name in designs or list(DESIGNS):
        out.extend(realisations(name, spec, ratio))
    return out


def choose(
    spec: ConvSpec,
    designs: list[str] | None = None,
    objective: str = "params",
    ratio: float = DEFAULT_BOTTLENECK_RATIO,
) -> tuple[Realisation | None, str | None]:
    """The best realisation and None, or None and the reason nothing fits."""
    if objective not in COUNTED_OBJECTIVES:
        raise ValueError(f"objective must be one of {COUNTED_OBJECTIVES} (latency is measured)")
    order = designs or list(DESIGNS)
    found = candidates(spec, order, ratio)
    if not found:
        return None, f"no admissible group numbers for {', '.join(order)}"
    best = min(found, key=lambda r: _key(r, objective, order))
    if cost(best, objective) >= _dense_cost(spec, objective):
        return None, f"no SK design has fewer {objective} than the dense conv ({', '.join(order)})"
    return best, None
