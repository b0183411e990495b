"""Widen (he) without the widened dense model: the plan equals planning on the dense widened
model, the SK stages are written directly, and every replaced conv is verified alone against
the dense equivalent of its stages (sampled output channels when large), a check that fails on
a wrong rewrite. The maths behind it: ``dense_rows`` and the boolean product of fields."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import assert_clean_error, conv_model, run_cli
from onnx import numpy_helper
from test_widen_mode import densenet_like, yolo_like
from test_width import G

from onnx_sk.errors import VerificationError
from onnx_sk.graph.build import Replacement, apply_replacements
from onnx_sk.graph.convs import find_convs
from onnx_sk.graph.shapes import infer_shapes
from onnx_sk.maths.designs import DESIGNS, dense_equivalent, dense_rows, realisations
from onnx_sk.maths.infofield import _bool_product, group_connectivity
from onnx_sk.maths.spec import ConvSpec
from onnx_sk.options import OptimizeOptions
from onnx_sk.passes import objectives
from onnx_sk.pipeline import optimize
from onnx_sk.runtime import conv_check
from onnx_sk.runtime.conv_check import check_convs, probe_spatial, sample_rows
from onnx_sk.width.analysis import analyze_channels
from onnx_sk.width.rewrite import run_widen


@pytest.mark.parametrize(("c", "f"), [(8, 8), (16, 32), (12, 24), (24, 48)])
def test_dense_rows_are_the_rows_of_the_dense_equivalent(c, f):
    """Brute-force twin: every design and realisation, random rows, generic weights."""
    rng = np.random.default_rng(0)
    for kernel in ((3, 3), (1, 3)):
        spec = ConvSpec(c, f, kernel)
        for name in DESIGNS:
            for real in realisations(name, spec):
                w = [rng.standard_normal(st.weight_shape(kernel)) for st in real.stages]
                rows = np.sort(rng.choice(f, min(f, 5), replace=False))
                np.testing.assert_allclose(
                    dense_rows(real.stages, w, rows),
                    dense_equivalent(real.stages, w)[rows],
                    rtol=1e-12,
                    atol=1e-12,
                )


def test_bool_product_equals_the_matrix_product():
    rng = np.random.default_rng(1)
    for _ in range(40):
        n, m, k = rng.integers(1, 30, 3)
        a, b = rng.random((n, m)) < rng.random(), rng.random((m, k)) < rng.random()
        want = (a.astype(int) @ b.astype(int)) > 0
        np.testing.assert_array_equal(_bool_product(a, b), want)
    a = group_connectivity(24, 36, 6)
    b = group_connectivity(12, 24, 4)[rng.permutation(24)]
    np.testing.assert_array_equal(_bool_product(a, b), (a.astype(int) @ b.astype(int)) > 0)
    assert _bool_product(np.zeros((0, 4), bool), np.ones((4, 3), bool)).shape == (0, 3)


@pytest.mark.parametrize("build", [densenet_like, yolo_like])
def test_plan_equals_planning_the_dense_widened_model(build, tmp_path):
    """The he plan (made on widened specs, no dense kernel drawn) is what Mode 1 decides on the
    widened dense model (the old way), conv by conv: design, groups, bottleneck, widths."""
    model = build()
    result, rep = optimize(model, tmp_path / "w.onnx", mode="widen", seed=3)
    a = analyze_channels(model, infer_shapes(model, {}))
    dense = run_widen(model, a, a.widths(rep.widen["scale"]), False, np.random.default_rng(0))
    old = objectives.plan(find_convs(dense, infer_shapes(dense, {})), OptimizeOptions.from_flat())
    want = [
        (d.site.name, d.real and d.real.design, d.real and d.real.group_dict,
         d.real and d.real.bottleneck, d.site.spec and d.site.spec.params, d.reason)
        for d in old
    ]  # fmt: skip
    got = [
        (r["name"], r["design"], r["groups"], r["bottleneck"], r["params_before"], r["reason"])
        for r in rep.convs
    ]
    assert got == want
    replaced = sum(1 for d in old if d.real)
    assert replaced > 0 and rep.verification["convs_checked"] == replaced
    assert not any(r["init_error"] for r in rep.convs)  # no kernel was fitted


def _replaced(c: int = 8, f: int = 8, hw: int = 6):
    """A fixed-batch conv model rewritten as gc-pwg M=2 N=2 (with a shuffle), and its Replacement."""
    rng = np.random.default_rng(0)
    model = conv_model(
        rng.standard_normal((f, c, 3, 3)), rng.standard_normal(f),
        attrs={"pads": [1, 1, 1, 1]}, dims=(1, c, hw, hw),
    )  # fmt: skip
    site = find_convs(model, infer_shapes(model, {}))[0]
    assert site.spec is not None
    real = next(r for r in realisations("gc-pwg", site.spec) if r.group_dict == {"M": 2, "N": 2})
    weights = [
        rng.standard_normal(st.weight_shape((3, 3))).astype(np.float32) for st in real.stages
    ]
    r = Replacement(site.name, "x", "y", real, weights)
    apply_replacements(model.graph, [r])
    return model, r


def test_conv_check_passes_a_correct_rewrite_on_every_channel():
    model, r = _replaced()
    got = check_convs(model, [r], {"y": (6, 6)}, seed=0)
    assert (got.convs, got.channels, got.channels_total) == (1, 8, 8)
    assert got.max_rel_diff < 1e-5


def _node(model, op: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.op_type == op)


def test_conv_check_fails_a_wrong_shuffle():
    model, r = _replaced(c=12, f=12)
    split = _node(model, "Reshape").input[1]
    init = next(i for i in model.graph.initializer if i.name == split)
    init.CopyFrom(numpy_helper.from_array(np.array([0, 6, 2, -1], np.int64), split))  # g=6, not 2
    with pytest.raises(
        VerificationError, match=r"conv 'conv': the inserted gc-pwg subgraph differs"
    ):
        check_convs(model, [r], {"y": (6, 6)}, seed=0)


def test_conv_check_fails_moved_pads_and_a_wrong_group():
    model, r = _replaced()
    spatial = next(n for n in model.graph.node if n.op_type == "Conv")
    for a in spatial.attribute:
        if a.name == "pads":
            a.ints[:] = [2, 0, 0, 2]  # same output size, shifted window
    with pytest.raises(VerificationError, match="differs from its dense equivalent"):
        check_convs(model, [r], {"y": (6, 6)}, seed=0)
    model, r = _replaced()
    pwg = [n for n in model.graph.node if n.op_type == "Conv"][-1]
    for a in pwg.attribute:
        if a.name == "group":
            a.i = 4
    with pytest.raises(VerificationError, match="does not run alone in ONNX Runtime"):
        check_convs(model, [r], {"y": (6, 6)}, seed=0)


def test_large_convs_are_sampled_and_symbolic_sizes_get_a_probe_size(monkeypatch):
    model, r = _replaced(c=16, f=16)
    rng = np.random.default_rng(0)
    assert list(sample_rows(r, (6, 6), rng)) == list(range(16))  # small: every channel
    monkeypatch.setattr(conv_check, "ROW_MACS", 1)
    monkeypatch.setattr(conv_check, "MIN_ROWS", 5)
    rows = sample_rows(r, (6, 6), rng)
    assert len(rows) == 5 and len(set(rows)) == 5 and list(rows) == sorted(rows)
    got = check_convs(model, [r], {"y": None}, seed=0)
    assert (got.channels, got.channels_total) == (5, 16)
    assert probe_spatial(r, None) == (conv_check.FALLBACK_SPATIAL,) * 2
    assert probe_spatial(r, (5, 7)) == (5, 7)


def test_widen_he_is_verified_conv_by_conv_and_says_so(tmp_path):
    src = tmp_path / "m.onnx"
    onnx.save(densenet_like(), src)
    proc = run_cli("optimize", src, tmp_path / "w.onnx", "--mode", "widen")
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    assert "inserted subgraphs matches its dense equivalent alone" in text
    assert "outputs keep the original's names, dtypes and shapes" in text


def test_widen_he_refuses_init_approx(tmp_path):
    src = tmp_path / "m.onnx"
    onnx.save(densenet_like(), src)
    proc = run_cli("optimize", src, tmp_path / "w.onnx", "--mode", "widen", "--init", "approx")
    assert_clean_error(
        proc,
        "--init approx needs --widen-init preserve in --mode widen (he mode draws every widened "
        "conv's weights fresh: there is no kernel to fit)",
    )
    assert not (tmp_path / "w.onnx").exists()


def test_the_budget_counts_an_excluded_conv_of_a_shared_shape_as_kept(tmp_path):
    """Two convs of one widened shape, one excluded: the solver's count keys its cache by the
    policy too, so the budget is met on the model as written (a tiny model: within 5%)."""
    g = G(8)
    t = g.op("Relu", [g.conv("x", 8, 16)])
    a = g.conv(t, 16, 16)
    b = g.conv(g.op("Relu", [a]), 16, 16)
    model = g.model([g.conv(g.op("Relu", [b]), 16, 4)])  # a and b widen alike
    excluded = next(n.name for n in model.graph.node if n.output[0] == b)
    _, rep = optimize(model, tmp_path / "w.onnx", mode="widen", exclude=[excluded])
    rows = {r["name"]: r for r in rep.convs}
    assert rows[excluded]["reason"] == "excluded by --exclude"
    assert abs(rep.widen["ratio"] - 1) < 0.05, rep.widen  # was ×4.17: b counted as replaced


@pytest.mark.parametrize("widen_init", ["he", "preserve"])
def test_widening_in_place_leaves_the_callers_model_and_file_unchanged(widen_init, tmp_path):
    model = yolo_like()
    before = model.SerializeToString()
    optimize(model, None, mode="widen", widen_init=widen_init)
    assert model.SerializeToString() == before
    src = tmp_path / "m.onnx"
    onnx.save(model, src)
    on_disk = src.read_bytes()
    _, rep = optimize(src, tmp_path / "w.onnx", mode="widen", widen_init=widen_init)
    assert src.read_bytes() == on_disk and rep.verification


def test_widen_he_replacing_nothing_reports_the_signature_check(tmp_path):
    """Only 1×1 convs: nothing is replaced, the widened model is still verified and said so."""
    g = G(8)
    t = g.op("Relu", [g.conv("x", 8, 16, k=1)])
    model = g.model([g.conv(g.op("Relu", [g.conv(t, 16, 16, k=1)]), 16, 4, k=1)])
    src = tmp_path / "m.onnx"
    onnx.save(model, src)
    proc = run_cli("optimize", src, tmp_path / "w.onnx", "--mode", "widen")
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    assert "verified: full checker ok, output names, dtypes and shapes unchanged at" in text


def test_conv_check_names_a_subgraph_that_does_not_match_its_design():
    model, r = _replaced()
    assert r.real.spec is not None
    three = realisations("pw-dw-pw", r.real.spec)[0]  # 3 stages; 2 Conv nodes were written
    wrong = Replacement(r.name, r.input, r.output, three, r.weights, new_nodes=r.new_nodes)
    with pytest.raises(VerificationError) as err:
        check_convs(model, [wrong], {"y": (6, 6)}, seed=0)
    assert str(err.value) == (
        "the inserted subgraph cannot be checked alone: conv 'conv': 2 Conv nodes written for "
        "3 stages"
    )


def test_preserve_says_it_matched_the_reduced_model(tmp_path):
    src = tmp_path / "m.onnx"
    onnx.save(yolo_like(), src)
    proc = run_cli(
        "optimize", src, tmp_path / "w.onnx", "--mode", "widen", "--widen-init", "preserve"
    )
    assert proc.returncode == 0, proc.stderr
    assert "outputs match the reduced model's at" in " ".join(proc.stdout.split())
