"""Choosing a design per conv by a counted objective (maths/select.py)."""

from __future__ import annotations

import itertools

import pytest

from onnx_sk.maths import select
from onnx_sk.maths.designs import DESIGNS
from onnx_sk.maths.spec import ConvSpec

SPECS = [
    ConvSpec(c, f, (3, 3), strides=(s, s), has_bias=b)
    for c, f, s, b in itertools.product((4, 12, 16, 30, 64), (8, 16, 24, 64), (1, 2), (False, True))
]


@pytest.mark.parametrize("objective", select.COUNTED_OBJECTIVES)
def test_choice_is_the_cheapest_admissible_realisation(objective):
    for spec in SPECS:
        real, why = select.choose(spec, objective=objective)
        every = select.candidates(spec)
        cheaper = [r for r in every if select.beats_dense(r, objective)]
        if real is None:
            assert not cheaper and why
            continue
        assert select.beats_dense(real, objective)
        assert select.cost(real, objective) == min(select.cost(r, objective) for r in every)


def test_a_new_counted_objective_changes_no_other_objective(monkeypatch):
    """Registering an objective (here: fewest stages) leaves params and macs choices alone."""
    before = {o: [select.choose(s, objective=o)[0] for s in SPECS] for o in ("params", "macs")}
    monkeypatch.setitem(select.COSTS, "stages", select.Cost(lambda r: len(r.stages), lambda s: 1))
    after = {o: [select.choose(s, objective=o)[0] for s in SPECS] for o in ("params", "macs")}
    assert after == before


def test_forced_designs_and_unknown_objectives():
    spec = ConvSpec(16, 16, (3, 3))
    for name in DESIGNS:
        real, _ = select.choose(spec, [name])
        assert real is not None and real.design == name
    with pytest.raises(ValueError, match="objective must be one of"):
        select.choose(spec, objective="latency")
