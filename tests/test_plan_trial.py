"""--precision auto: the int8 alternative of each conv, the network trial between the two plans,
and the precision revised stage by stage (edges of the graph count as fp32 neighbours)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from test_int8_context import _chain_model, _ranges
from test_precision import _cnn, cnn_case

import onnx_sk
from onnx_sk.graph.convs import find_convs
from onnx_sk.graph.neighbours import edge_units
from onnx_sk.graph.shapes import infer_shapes
from onnx_sk.passes.context import Decision
from onnx_sk.passes.int8_context import revise, stage_units
from onnx_sk.passes.precision import choose, choose_in_int8
from onnx_sk.runtime.latency import MIN_SPEEDUP, candidate_key, candidates
from onnx_sk.runtime.paired import PairedTimer

RATIO = 0.25


def test_edge_units_read_an_input_or_write_an_output():
    model = _chain_model()
    units = {"a": ["a"], "b": ["b"], "y": ["y"], "z": ["z"]}
    # A reads x; C writes y; D writes z; B neither (E, no unit, is a barrier before D)
    assert edge_units(model.graph, units) == {"a", "y", "z"}


def test_stage_units_split_a_conv_at_its_convs():
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 4, 1, 1)).astype(np.float32), "w")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["s0"], "k/sk/0_pw"),
        helper.make_node("Identity", ["s0"], ["sh"], "k/sk/shuffle"),
        helper.make_node("Conv", ["sh", "w"], ["k"], "k/sk/1_pw"),
        helper.make_node("Conv", ["k", "w"], ["d"], "dense"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 4, 4])],
        [helper.make_tensor_value_info("d", TensorProto.FLOAT, None)], [w],
    )  # fmt: skip
    units, conv_of = stage_units(graph, {"k": ["s0", "sh", "k"], "d": ["d"]})
    assert units == {"s0": ["s0", "sh"], "k": ["k"], "d": ["d"]}
    assert conv_of == {"s0": "k", "k": "k", "d": "d"}


def test_revise_tries_an_int8_unit_at_the_edge():
    """All int8: no conv neighbour differs, but the units at the graph's input and outputs
    border the float world: they are tried in fp32, and no unit inside is."""
    model = _chain_model()
    x = np.random.default_rng(1).standard_normal((1, 8, 16, 16)).astype(np.float32)
    units = {"a": ["a"], "b": ["b"], "y": ["y"], "z": ["z"]}
    timer = PairedTimer("CPUExecutionProvider", 1, {"x": x}, budget_s=0.05)
    names = {"a": "A", "b": "B", "y": "C", "z": "D"}
    int8, trials = revise(model, units, set(units), _ranges(model, units, x), timer, names)
    tried = [t["conv"] for t in trials]
    assert tried and tried[0] in ("A", "C", "D")  # an edge, not B
    assert "D" in tried  # D borders only the output: tried for the edge alone
    assert trials[0]["to"] == "fp32"


def _sites(model: onnx.ModelProto):
    return find_convs(model, infer_shapes(model))


def _entries(spec, fp32_speedups: dict[str, float], int8_speedups: dict[str, float], dense8):
    """An fp32 and an int8 LUT entry of ``spec`` with the given candidate speedups."""
    by_key = {candidate_key(r): r for r in candidates(spec, RATIO)}

    def entry(speedups: dict[str, float]) -> dict:
        cands = {}
        for key, s in speedups.items():
            r = by_key[key]
            cands[key] = {
                "design": r.design, "groups": r.group_dict, "bottleneck": r.bottleneck,
                "shuffle": r.shuffle_impl if r.shuffles else None, "macs_ratio": 0.1,
                "ms": 1.0 / s, "speedup": s,
            }  # fmt: skip
        return {"provider": "CPUExecutionProvider", "threads": 1, "dense_ms": 1.0,
                "rounds": 7, "candidates": cands}  # fmt: skip

    int8 = {**entry(int8_speedups), "precision": "int8"}
    int8["dense_int8"] = {"ms": 1.0 / dense8, "speedup": dense8}
    return entry(fp32_speedups), int8


def _keys(spec) -> tuple[str, str]:
    """A grouped and an ungrouped candidate of ``spec``."""
    reals = candidates(spec, RATIO)
    grouped = next(r for r in reals if any(g > 1 for g in r.group_dict.values()))
    plain = next(r for r in reals if r.design in ("pw-dw-pw", "dw-pw"))
    return candidate_key(grouped), candidate_key(plain)


def test_alternative_is_the_fastest_int8_option():
    sites = _sites(_cnn(np.random.default_rng(0)))
    site = sites[2]  # 32 → 32, 3×3
    grouped, plain = _keys(site.spec)
    fp32, int8 = _entries(site.spec, {grouped: 8.0, plain: 6.0}, {grouped: 3.0, plain: 5.0}, 2.0)
    d = Decision(site, None)
    choose(d, fp32, int8, "auto", None, RATIO)
    choose_in_int8(d, fp32, int8, None, RATIO, None)
    assert not d.int8 and d.real is not None and candidate_key(d.real) == grouped  # fp32
    assert d.alt is not None and d.alt.int8
    assert d.alt.real is not None and d.alt.real.design == int8["candidates"][plain]["design"]
    # an SK option within MIN_SPEEDUP of the dense int8 conv: the dense int8 conv
    fp32, int8 = _entries(site.spec, {grouped: 8.0}, {plain: 2.0 * MIN_SPEEDUP * 0.99}, 2.0)
    d = Decision(site, None)
    choose_in_int8(d, fp32, int8, None, RATIO, None)
    assert d.alt is not None and d.alt.real is None and d.alt.int8
    assert d.alt.reason is not None  # kept dense, and says why
    # the policy keeps it: dense, in int8 or not
    d = Decision(site, None, "excluded by --exclude")
    choose_in_int8(d, fp32, int8, None, RATIO, "excluded by --exclude")
    assert d.alt is not None and d.alt.real is None and d.alt.reason == "excluded by --exclude"


def test_first_conv_has_no_alternative():
    sites = _sites(_cnn(np.random.default_rng(0)))
    first = sites[0]
    assert first.first
    grouped, plain = _keys(sites[2].spec)
    fp32, int8 = _entries(sites[2].spec, {grouped: 8.0}, {plain: 5.0}, 2.0)
    d = Decision(first, None, "first conv: kept by default (--include-first replaces it)")
    choose_in_int8(d, fp32, int8, None, RATIO, d.reason)
    assert d.alt is None


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """The small CNN, calibration samples, and a latency table measured for it on this machine."""
    case = cnn_case(tmp_path_factory.mktemp("plan_trial"), 8)
    lut = case["dir"] / "lut.json"
    onnx_sk.optimize(
        case["model"], case["dir"] / "first.onnx", objective="latency", precision="auto",
        calibration=case["cal"], lut=lut,
    )  # fmt: skip
    return {"src": case["model"], "cal": case["cal"], "lut": json.loads(lut.read_text())}


def test_plan_trial_settles_two_different_plans(measured, tmp_path):
    """A table whose fp32 and int8 favourites differ for the 32→32 conv: the two networks are
    timed, the report says so, and the conv is written as the plan the trial kept."""
    doc = json.loads(json.dumps(measured["lut"]))
    spec = _sites(_cnn(np.random.default_rng(0)))[2].spec
    grouped, plain = _keys(spec)
    key = next(k for k in doc["entries"] if "c32-f32-k3x3" in k and not k.endswith("-int8"))
    fp32, int8 = _entries(spec, {grouped: 50.0}, {grouped: 2.0, plain: 40.0}, 1.5)
    doc["entries"][key] = fp32
    doc["entries"][key + "-int8"] = int8
    lut = tmp_path / "lut.json"
    lut.write_text(json.dumps(doc))
    _, report = onnx_sk.optimize(
        measured["src"], tmp_path / "out.onnx", objective="latency", precision="auto",
        calibration=measured["cal"], lut=lut,
    )  # fmt: skip
    plan = report.precision["plan"]
    assert plan["convs_differing"] >= 1 and plan["speedup"] > 0
    assert plan["taken"] == (plan["speedup"] >= 1.02)
    assert all(t["to"] in ("int8", "fp32") for t in plan["repairs"])
    row = next(r for r in report.convs if r["name"] == "conv2")
    want = int8["candidates"][plain] if plan["taken"] else fp32["candidates"][grouped]
    assert (row["design"], row["groups"] or {}) == (want["design"], want["groups"])
