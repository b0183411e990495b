"""Verification that can hold: inputs in the model's domain, NaN/Inf compared by place, and a
per-subgraph comparison where float32 rounding growth makes the whole-model tolerance
meaningless — and still able to catch a wrong rewrite."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import run_cli
from onnx import TensorProto, helper, numpy_helper

from onnx_sk.errors import VerificationError
from onnx_sk.graph.build import apply_replacements
from onnx_sk.graph.checks import structure
from onnx_sk.passes import reduce as reduce_pass
from onnx_sk.pipeline import optimize

SUBGRAPH = "per subgraph: each of the 100 inserted subgraphs matches its dense-equivalent conv"


def _model(nodes, inits, c_in: int, c_out: int, out: str) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c_in, 16, 16])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, c_out, 16, 16])], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


def _conv(i: int, src: str, dst: str, w: np.ndarray) -> tuple[onnx.NodeProto, onnx.TensorProto]:
    node = helper.make_node("Conv", [src, f"w{i}"], [dst], name=f"conv{i}", pads=[1] * 4)
    return node, numpy_helper.from_array(w.astype(np.float32), f"w{i}")


def _two_convs_then(op: str, rng, before: str | None = None) -> onnx.ModelProto:
    """[before(x) →] Conv 3→16 → Conv 16→16 → op → y."""
    nodes, inits, src = [], [], "x"
    if before:
        nodes.append(helper.make_node(before, ["x"], ["x1"]))
        src = "x1"
    for i, (c_in, dst) in enumerate(((3, "c0"), (16, "c1"))):
        node, w = _conv(i, src, dst, rng.standard_normal((16, c_in, 3, 3)))
        nodes.append(node)
        inits.append(w)
        src = dst
    nodes.append(helper.make_node(op, ["c1"], ["y"]))
    return _model(nodes, inits, 3, 16, "y")


def _tanh_chain(rng, layers: int = 100, c: int = 16) -> onnx.ModelProto:
    nodes, inits, src = [], [], "x"
    for i in range(layers):
        node, w = _conv(i, src, f"c{i}", rng.standard_normal((c, c, 3, 3)) * 1.5 / np.sqrt(9 * c))
        nodes += [node, helper.make_node("Tanh", [f"c{i}"], [f"a{i}"], name=f"tanh{i}")]
        inits.append(w)
        src = f"a{i}"
    return _model(nodes, inits, c, c, src)


def test_nan_outputs_are_compared_by_place(rng):
    """Conv → Conv → Sqrt: about half the outputs are NaN on any input; the NaNs sit at the same
    places in the result and the twin, and the finite values agree."""
    _, report = optimize(_two_convs_then("Sqrt", rng), None, include_first=True, init="he")
    v = report.verification
    assert report.replaced == 2 and v["decided_by"] == "whole model"
    assert v["inputs"] == "standard normal" and np.isfinite(v["max_rel_diff"])


def test_log_of_the_input_gets_non_negative_input(rng):
    model = _two_convs_then("Relu", rng, before="Log")
    _, report = optimize(model, None, include_first=True, init="he")
    v = report.verification
    assert v["inputs"] == "non-negative |standard normal|" and v["decided_by"] == "whole model"
    assert v["max_rel_diff"] < 1e-3


def test_deep_tanh_chain_is_decided_per_subgraph(rng, tmp_path):
    """100 Conv+Tanh layers: float32 rounding compounds past the 1e-3 whole-model tolerance; each
    inserted subgraph matches its dense-equivalent conv, and the report says that decided."""
    out = tmp_path / "o.onnx"
    _, report = optimize(_tanh_chain(rng), out, include_first=True, init="he")
    decided = report.verification["decided_by"]
    assert decided.startswith(
        f"{SUBGRAPH} (whole model: output 'a99' differs from the dense-equivalent model by "
    ), decided
    assert decided.endswith("; float32 rounding grows through the model)")
    assert report.verification["max_rel_diff"] <= 1e-3
    onnx.checker.check_model(str(out), full_check=True)
    src = tmp_path / "chain.onnx"
    onnx.save(_tanh_chain(np.random.default_rng(1234)), src)
    proc = run_cli("optimize", src, tmp_path / "cli.onnx", "--include-first", "--init", "he")
    assert proc.returncode == 0, proc.stderr
    assert f"\ndecided {SUBGRAPH} (whole model: output 'a99' differs" in proc.stdout
    assert "each inserted subgraph matches its dense-equivalent conv at x " in proc.stdout


def _perturbing(monkeypatch, how: str) -> None:
    """Make the rewrite wrong: one SK stage weight off by 5% (``kernel``), or the rewrite also
    changes a node it does not own (``graph``)."""

    def wrong(graph: onnx.GraphProto, replacements) -> None:
        apply_replacements(graph, replacements)
        if how == "kernel":
            names = set(replacements[0].new_nodes)
            reads = {t for n in graph.node if n.name in names for t in n.input}
            init = next(i for i in graph.initializer if i.name in reads and i.dims)
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 1.05, init.name))
        else:
            next(n for n in graph.node if n.op_type == "Tanh").op_type = "Sigmoid"

    monkeypatch.setattr(reduce_pass, "apply_replacements", wrong)


def test_a_wrong_kernel_still_fails_per_subgraph(rng, monkeypatch, tmp_path):
    _perturbing(monkeypatch, "kernel")
    out = tmp_path / "o.onnx"
    with pytest.raises(VerificationError) as err:
        optimize(_tanh_chain(rng), out, include_first=True, init="he")
    assert re.fullmatch(
        r"output 'a99' differs from the dense-equivalent model by \S+ \(output scale \S+\); "
        r"per subgraph: conv 'conv0': the inserted \S+ subgraph differs from its "
        r"dense-equivalent conv by \S+ \(output scale \S+\)",
        str(err.value),
    ), str(err.value)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_a_wrong_kernel_fails_the_whole_model_check(rng, monkeypatch):
    _perturbing(monkeypatch, "kernel")
    with pytest.raises(VerificationError, match=r"^output 'y' differs from the dense-equivalent "
                       r"model by \S+ \(output scale \S+\)"):  # fmt: skip
        optimize(_two_convs_then("Relu", rng), None, include_first=True, init="he")


@pytest.mark.parametrize("source", ["proto", "file"])
def test_no_per_subgraph_verdict_when_the_rest_of_the_graph_changed(
    rng, monkeypatch, tmp_path, source
):
    """The fingerprint of the original is taken from the proto, or re-read from the input file
    only when the per-subgraph check is needed."""
    _perturbing(monkeypatch, "graph")
    model: onnx.ModelProto | Path = _tanh_chain(rng)
    if source == "file":
        onnx.save(model, tmp_path / "chain.onnx")
        model = tmp_path / "chain.onnx"
    with pytest.raises(VerificationError) as err:
        optimize(model, None, include_first=True, init="he")
    assert re.fullmatch(
        r"output 'a99' differs from the dense-equivalent model by \S+ \(output scale \S+\)",
        str(err.value),
    ), str(err.value)


def test_structure_sees_a_changed_node_and_constant(rng):
    model = _tanh_chain(rng, layers=3)
    keep = structure(model.graph, lambda n: False)
    assert structure(model.graph, lambda n: False) == keep
    model.graph.node[1].op_type = "Relu"
    assert structure(model.graph, lambda n: False) != keep
    model.graph.node[1].op_type = "Tanh"
    w = model.graph.initializer[2]
    w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w) + 1e-3, w.name))
    assert structure(model.graph, lambda n: False) != keep
