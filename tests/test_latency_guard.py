"""--objective latency (fp32): the plan's network timed against the params objective's
(passes.latency_guard); the params designs are taken when their network is faster."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from helpers import run_cli
from onnx import TensorProto, helper, numpy_helper

import onnx_sk
from onnx_sk.passes.latency_guard import ACCEPT


def _two_convs(path) -> None:
    """x [1, 64, 40, 40] → 3×3 conv 64→64 → Relu → 3×3 conv 64→64: the convs are the network's
    time, so a plan of heavy designs runs measurably slower than one of light designs."""
    rng = np.random.default_rng(0)
    inits, nodes, x = [], [], "x"
    for i in range(2):
        w = rng.standard_normal((64, 64, 3, 3)).astype(np.float32) * np.sqrt(2 / 576)
        inits.append(numpy_helper.from_array(w.astype(np.float32), f"w{i}"))
        nodes.append(helper.make_node("Conv", [x, f"w{i}"], [f"c{i}"], f"conv{i}", pads=[1] * 4))
        x = f"c{i}"
        if i == 0:
            nodes.append(helper.make_node("Relu", [x], ["r0"], "relu0"))
            x = "r0"
    graph = helper.make_graph(
        nodes, "two", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64, 40, 40])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, None)], inits,
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """The model, and a latency table measured for it on this machine."""
    tmp = tmp_path_factory.mktemp("latency_guard")
    src = tmp / "two.onnx"
    _two_convs(src)
    lut = tmp / "lut.json"
    _, report = onnx_sk.optimize(
        src, tmp / "measured.onnx", objective="latency", include_first=True, lut=lut
    )
    return {"src": src, "lut": json.loads(lut.read_text()), "report": report}


def _designs(report) -> list[tuple]:
    return [(r["design"], r["groups"] or {}) for r in report.convs]


def test_the_report_matches_the_designs_written(case):
    """On the table as measured: if the plans differ they were timed, and what the report says
    was kept is what was written."""
    check = case["report"].latency_check
    _, params = onnx_sk.optimize(case["src"], case["src"].with_name("p.onnx"), include_first=True)
    if check is None:  # the same plan: nothing to time
        assert _designs(case["report"]) == _designs(params)
        return
    assert check["taken"] == (check["params_speedup"] >= ACCEPT)
    if check["taken"]:
        assert _designs(case["report"]) == _designs(params)


def _heavy_table(case, lut) -> list[tuple]:
    """The measured table with each conv shape's candidate of the most MACs made by far the
    fastest, written to ``lut``; those candidates' (design, groups)."""
    doc = json.loads(json.dumps(case["lut"]))
    heavy = []
    for entry in doc["entries"].values():
        _, cand = max(entry["candidates"].items(), key=lambda kv: kv[1]["macs_ratio"])
        cand["speedup"], cand["ms"] = 1000.0, entry["dense_ms"] / 1000.0
        heavy.append((cand["design"], cand["groups"]))
    lut.write_text(json.dumps(doc))
    return heavy


def test_a_plan_of_heavy_designs_loses_to_the_params_plan(case, tmp_path):
    """A table that calls each conv's candidate with the most MACs by far the fastest: the
    latency plan takes those; its network is slower than the params plan's, and the check
    writes the params designs instead."""
    lut = tmp_path / "lut.json"
    heavy = _heavy_table(case, lut)
    _, params = onnx_sk.optimize(case["src"], tmp_path / "p.onnx", include_first=True)
    _, report = onnx_sk.optimize(
        case["src"], tmp_path / "out.onnx", objective="latency", include_first=True, lut=lut
    )
    check = report.latency_check
    assert check is not None and check["convs_differing"] == 2
    assert check["taken"] and check["params_speedup"] >= ACCEPT
    assert _designs(report) == _designs(params)
    assert all(row not in heavy for row in _designs(report))


@pytest.mark.parametrize(
    "extra",
    [{"precision": "auto"}, {"lut_from_target": True}, {"max_error": 0.9}, {"design": "dw-pw"}],
)
def test_no_check_where_it_does_not_apply(case, tmp_path, extra):
    """Not with the int8 trial, a foreign table, an error budget, or one forced design (the
    plans cannot differ)."""
    lut = tmp_path / "lut.json"
    lut.write_text(json.dumps(case["lut"]))
    _, report = onnx_sk.optimize(
        case["src"], tmp_path / "out.onnx", objective="latency", include_first=True, lut=lut,
        **extra,
    )  # fmt: skip
    assert report.latency_check is None
    assert "latency_check" not in report.to_dict()


def test_the_command_line_says_what_the_check_did(case, tmp_path):
    lut = tmp_path / "lut.json"
    _heavy_table(case, lut)  # the check takes the params designs
    out = tmp_path / "out.onnx"
    r = run_cli(
        "optimize", str(case["src"]), str(out), "--objective", "latency", "--include-first",
        "--lut", str(lut), "--no-verify",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if x.startswith("latency check:"))
    assert "(2 convs differ)" in line and "(its designs taken)" in line
