"""Choosing the SK design for one conv (T-ITS'21 Sec. V-A, "Mode 1: reduce").

For a conv (c_in, c_out, kernel) every admissible integer realisation of every allowed design
is scored by a counted objective (the registry ``COSTS``, filled by ``@counted``): ``params``
(the papers' choice: weights + bias) or ``macs`` (per output pixel, stride counted: stages
before the spatial stage run at the input resolution). Ties go to the objective's declared
tie-breakers (``then``: params and macs break each other's ties), then to fewer shuffles, fewer
stages, and the design order (the registry's). A realisation that is not
strictly cheaper than the dense conv by the objective is never chosen. Adding a counted objective
is one ``@counted`` function here; measured objectives (latency) are planned in
``onnx_sk.passes.objectives``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from onnx_sk.maths.designs import DEFAULT_BOTTLENECK_RATIO, DESIGNS, Realisation, realisations
from onnx_sk.maths.spec import ConvSpec


@dataclass(frozen=True)
class Cost:
    """A counted objective: the cost of a realisation, the cost of the dense conv it would replace
    (a design is chosen only if strictly cheaper), and the objectives that break ties, in order."""

    of: Callable[[Realisation], float]
    dense: Callable[[ConvSpec], float]
    then: tuple[str, ...] = ()


COSTS: dict[str, Cost] = {}


def counted(
    name: str, dense: Callable[[ConvSpec], float], then: tuple[str, ...] = ()
) -> Callable[[Callable[[Realisation], float]], Callable[[Realisation], float]]:
    """Register a counted objective: the decorated function is the realisation's cost."""

    def register(fn: Callable[[Realisation], float]) -> Callable[[Realisation], float]:
        if name in COSTS:
            raise ValueError(f"counted objective {name!r} registered twice")
        COSTS[name] = Cost(fn, dense, then)
        return fn

    return register


@counted("params", dense=lambda spec: spec.params, then=("macs",))
def _params(real: Realisation) -> float:
    return real.params


@counted("macs", dense=lambda spec: spec.weight_params, then=("params",))
def _macs(real: Realisation) -> float:
    return real.macs_per_output_pixel()


#: the objectives scored by counting here (every ``@counted`` above)
COUNTED_OBJECTIVES = tuple(COSTS)


def cost(real: Realisation, objective: str) -> float:
    return COSTS[objective].of(real)


def tie_break(real: Realisation, objective: str) -> tuple[float, ...]:
    """The costs that decide between realisations of equal cost (the objective's ``then``)."""
    return tuple(COSTS[name].of(real) for name in COSTS[objective].then)


def beats_dense(real: Realisation, objective: str) -> bool:
    """Whether ``real`` is strictly cheaper than the dense conv it would replace."""
    return cost(real, objective) < COSTS[objective].dense(real.spec)


def _key(real: Realisation, objective: str, order: list[str]) -> tuple[float | int, ...]:
    return (
        cost(real, objective),
        *tie_break(real, objective),
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
    if objective not in COSTS:
        raise ValueError(f"objective must be one of {COUNTED_OBJECTIVES} (latency is measured)")
    order = designs or list(DESIGNS)
    found = candidates(spec, order, ratio)
    if not found:
        return None, f"no admissible group numbers for {', '.join(order)}"
    best = min(found, key=lambda r: _key(r, objective, order))
    if not beats_dense(best, objective):
        return None, f"no SK design has fewer {objective} than the dense conv ({', '.join(order)})"
    return best, None
