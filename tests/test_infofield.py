"""Information field: the papers' four designs keep the dense conv's field; the graph reader agrees."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx_sk.graph.fields import FieldPathError, field_between, unit_fields
from onnx_sk.maths.designs import (
    DESIGNS,
    DW,
    GC,
    PW,
    PWG,
    Stage,
    dense_equivalent,
    realisations,
    shuffle_permutation,
)
from onnx_sk.maths.infofield import Field, field_of_conv, field_of_stages, group_connectivity
from onnx_sk.maths.spec import ConvSpec

CHANNELS = [(8, 8), (16, 32), (32, 16), (12, 24), (24, 48)]
GEOMETRY = [
    ((3, 3), (1, 1), (1, 1)),
    ((3, 3), (2, 2), (1, 1)),
    ((3, 3), (1, 1), (2, 2)),
    ((5, 5), (2, 2), (1, 1)),
    ((3, 5), (2, 1), (1, 2)),
    ((1, 3), (1, 1), (1, 1)),
    ((7, 1), (1, 3), (2, 1)),
]


def _spec(c: int, f: int, k: tuple, s: tuple, d: tuple) -> ConvSpec:
    return ConvSpec(c, f, k, strides=s, dilations=d, pads=(0,) * (2 * len(k)))


# --- pure calculator -----------------------------------------------------------------------------


@pytest.mark.parametrize(("c", "f"), CHANNELS)
@pytest.mark.parametrize(("k", "s", "d"), GEOMETRY)
@pytest.mark.parametrize("ratio", [0.25, 0.5])
def test_every_realisation_of_the_four_designs_equals_the_dense_field(c, f, k, s, d, ratio):
    spec = _spec(c, f, k, s, d)
    dense = field_of_conv(spec)
    count = 0
    for name in DESIGNS:
        for real in realisations(name, spec, ratio):
            field = field_of_stages(real.stages, k, s, d)
            assert field.equals(dense), (name, real.groups, field)
            assert dense.covers(field) and field.covers(dense)
            assert field.size == dense.size == (*spec.effective_kernel, c)
            count += 1
    assert count >= 4


@pytest.mark.parametrize(("c", "f"), [(8, 8), (16, 32), (12, 24)])
def test_connectivity_is_the_support_of_the_dense_equivalent_kernel(c, f):
    """Brute-force twin: with generic weights, W_eq is non-zero exactly where the field says."""
    rng = np.random.default_rng(0)
    spec = _spec(c, f, (3, 3), (1, 1), (1, 1))
    for name in DESIGNS:
        for real in realisations(name, spec):
            weights = [rng.standard_normal(st.weight_shape((3, 3))) for st in real.stages]
            w_eq = dense_equivalent(real.stages, weights)
            field = field_of_stages(real.stages, (3, 3))
            np.testing.assert_array_equal(np.abs(w_eq).sum(axis=(2, 3)) > 0, field.connectivity)
    # and a design that is *not* full: GC(4) → PWG(2) without the shuffle
    stages = (Stage(GC, c, c, 4, True), Stage(PWG, c, f, 2, False))
    w = [rng.standard_normal(st.weight_shape((3, 3))) for st in stages]
    w_eq = dense_equivalent(stages, w)
    field = field_of_stages(stages, (3, 3))
    np.testing.assert_array_equal(np.abs(w_eq).sum(axis=(2, 3)) > 0, field.connectivity)
    assert not field.full_channels


def test_dw_alone_pwg_alone_pw_pw_and_unshuffled_gc_pwg_do_not_equal_the_dense_field():
    c = 16
    dense = field_of_conv(ConvSpec(c, c, (3, 3)))
    dw = field_of_stages([Stage(DW, c, c, c, True)], (3, 3))
    assert dw.size == (3, 3, 1) and not dw.equals(dense) and dense.covers(dw)
    pwg = field_of_stages([Stage(PWG, c, c, 4, False)], (3, 3))
    assert pwg.size == (1, 1, 4) and not pwg.equals(dense)
    pw_pw = field_of_stages([Stage(PW, c, c, 1, False), Stage(PW, c, c, 1, False)], (3, 3))
    assert pw_pw.size == (1, 1, c) and pw_pw.full_channels and not pw_pw.equals(dense)
    for m, n in [(2, 2), (4, 4), (8, 2), (2, 8)]:
        plain = (Stage(GC, c, c, m, True), Stage(PWG, c, c, n, False))
        field = field_of_stages(plain, (3, 3))
        assert not field.equals(dense) and field.channels < c, (m, n)
        shuffled = (Stage(GC, c, c, m, True, m), Stage(PWG, c, c, n, False))
        assert field_of_stages(shuffled, (3, 3)).equals(dense), (m, n)
    # M·N > C: even the shuffle cannot reach every input
    too_many = (Stage(GC, c, c, 8, True, 8), Stage(PWG, c, c, 4, False))
    assert field_of_stages(too_many, (3, 3)).channels == 8


def test_receptive_field_composes_strides_and_dilations():
    f = Field.conv(4, 4, (3, 3), (2, 2)).then(Field.conv(4, 4, (3, 3), (2, 2)))
    assert f.extent == (7, 7) and f.jump == (4, 4)  # 3 + (3−1)·2
    f = f.then(Field.conv(4, 4, (3, 3), (1, 1), (2, 2)))
    assert f.extent == (7 + 2 * 2 * 4,) * 2  # rf += (k−1)·d·jump
    dil = Field.conv(2, 2, (3,), (), (2,))
    assert dil.extent == (5,) and dil.offsets == ((0, 2, 4),)
    # two dilated convs leave holes; a dense 9-wide conv does not
    holes = dil.then(dil)
    assert holes.extent == (9,) and holes.offsets == ((0, 2, 4, 6, 8),)
    assert not holes.equals(Field.conv(2, 2, (9,))) and Field.conv(2, 2, (9,)).covers(holes)


def test_composition_is_associative_and_matches_then_conv():
    rng = np.random.default_rng(1)
    for _ in range(20):
        c = int(rng.choice([4, 8, 12]))
        gs = [int(rng.choice([g for g in (1, 2, 4) if c % g == 0])) for _ in range(3)]
        a, b, d = (Field.conv(c, c, (int(rng.integers(1, 4)),) * 2, (), (), g) for g in gs)
        assert a.then(b).then(d).equals(a.then(b.then(d)))
        assert a.then(b).equals(a.then_conv(c, b.extent, (), (), gs[1]))
    assert Field.identity(3).size == (1, 1, 1)
    np.testing.assert_array_equal(group_connectivity(4, 2, 2), [[1, 1, 0, 0], [0, 0, 1, 1]])
    with pytest.raises(ValueError):
        Field.conv(4, 4, (3, 3)).then(Field.conv(8, 8, (3, 3)))


# --- ONNX graphs ---------------------------------------------------------------------------------


def _out(name: str) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["n", "c", "h", "w"])


def _const(nodes: list, name: str, value: np.ndarray) -> str:
    nodes.append(
        helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value, name))
    )
    return name


def _shuffle_nodes(nodes, inits, x: str, out: str, c: int, g: int, style: str, hw: tuple):
    if style == "gather":
        idx = shuffle_permutation(c, g).astype(np.int64)
        inits.append(numpy_helper.from_array(idx, f"{out}_idx"))
        nodes.append(helper.make_node("Gather", [x, f"{out}_idx"], [out], axis=1))
        return
    if style == "shape_of":  # as build.py writes it: Reshape(x, [0, g, C/g, -1]) … Shape(x)
        a = _const(nodes, f"{out}_s1", np.array([0, g, c // g, -1], dtype=np.int64))
        nodes.append(helper.make_node("Shape", [x], [f"{out}_shape"]))
        nodes.append(helper.make_node("Reshape", [x, a], [f"{out}_r1"]))
        nodes.append(helper.make_node("Transpose", [f"{out}_r1"], [f"{out}_t"], perm=[0, 2, 1, 3]))
        nodes.append(helper.make_node("Reshape", [f"{out}_t", f"{out}_shape"], [out]))
        return
    if style == "static":
        s1, s2 = [1, g, c // g, *hw], [1, c, *hw]
    else:  # ONNX's 0 (copy) and -1 (infer) entries
        s1, s2 = [0, g, -1, *hw], [0, -1, *hw]
    a = _const(nodes, f"{out}_s1", np.array(s1, dtype=np.int64))
    inits.append(numpy_helper.from_array(np.array(s2, dtype=np.int64), f"{out}_s2"))
    nodes.append(helper.make_node("Reshape", [x, a], [f"{out}_r1"], allowzero=0))
    nodes.append(helper.make_node("Transpose", [f"{out}_r1"], [f"{out}_t"], perm=[0, 2, 1, 3, 4]))
    nodes.append(helper.make_node("Reshape", [f"{out}_t", f"{out}_s2"], [out]))


def _sk_model(stages, k=(3, 3), s=(1, 1), d=(1, 1), style="static", hw=8, zero=False, extras=()):
    """The stages as Conv nodes (+ shuffles) on a static [1, C, hw, hw] input."""
    rng = np.random.default_rng(0)
    nodes: list = []
    inits: list = []
    x = "x"
    size = (hw, hw)
    for i, st in enumerate(stages):
        kernel = k if st.spatial else (1, 1)
        strides = s if st.spatial else (1, 1)
        dil = d if st.spatial else (1, 1)
        w = rng.standard_normal(st.weight_shape(k)).astype(np.float32)
        if zero:
            w[:] = 0
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        ek = [(kk - 1) * dd + 1 for kk, dd in zip(kernel, dil, strict=True)]
        pads = [e // 2 for e in ek] * 2
        size = tuple(
            (n + 2 * (e // 2) - e) // st_ + 1 for n, e, st_ in zip(size, ek, strides, strict=True)
        )
        nodes.append(
            helper.make_node(
                "Conv", [x, f"w{i}"], [f"c{i}"], name=f"conv{i}", group=st.group,
                kernel_shape=list(kernel), strides=list(strides), dilations=list(dil), pads=pads,
            )
        )  # fmt: skip
        x = f"c{i}"
        for op in extras:
            inputs = [x]
            if op == "BatchNormalization":
                for j, v in enumerate((1.0, 0.0, 0.0, 1.0)):  # scale, bias, mean, var
                    value = np.full(st.c_out, v, np.float32)
                    inits.append(numpy_helper.from_array(value, f"{x}_bn{j}"))
                    inputs.append(f"{x}_bn{j}")
            nodes.append(helper.make_node(op, inputs, [f"{x}_{op}"]))
            x = f"{x}_{op}"
        if st.shuffle > 1:
            _shuffle_nodes(nodes, inits, x, f"sh{i}", st.c_out, st.shuffle, style, size)
            x = f"sh{i}"
    nodes.append(helper.make_node("Identity", [x], ["y"]))
    graph = helper.make_graph(
        nodes,
        "sk",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, stages[0].c_in, hw, hw])],
        [_out("y")],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


@pytest.mark.parametrize("style", ["static", "zero", "gather", "shape_of"])
@pytest.mark.parametrize(("c", "f"), [(8, 8), (16, 32), (12, 24)])
def test_graph_field_agrees_with_the_pure_calculation(style, c, f):
    spec = _spec(c, f, (3, 3), (1, 1), (1, 1))
    for name in DESIGNS:
        for real in realisations(name, spec):
            model = _sk_model(real.stages, style=style)
            field = field_between(model.graph, "x", "y")
            assert field.equals(field_of_stages(real.stages, (3, 3))), (name, real.groups)
            assert field.equals(field_of_conv(spec))
            # the graph is valid and computes the dense-equivalent conv
            assert _run(model, np.ones((1, c, 8, 8), np.float32)).shape == (1, f, 8, 8)


@pytest.mark.parametrize("style", ["static", "zero", "gather", "shape_of"])
def test_shuffle_subgraph_is_the_designs_permutation_in_onnxruntime(style):
    c, g = 12, 3
    model = _sk_model([Stage(PW, c, c, 1, False, g)], style=style, hw=4)
    graph = model.graph
    # cut the conv off: run the shuffle alone on channel labels
    x = np.broadcast_to(np.arange(c, dtype=np.float32)[None, :, None, None], (1, c, 4, 4)).copy()
    shuffle_only = helper.make_graph(
        [n for n in graph.node if n.op_type != "Conv"],
        "shuffle",
        [helper.make_tensor_value_info("c0", TensorProto.FLOAT, [1, c, 4, 4])],
        list(graph.output),
        list(graph.initializer)[1:],
    )
    m = helper.make_model(shuffle_only, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"c0": x})[0]
    np.testing.assert_array_equal(y[0, :, 0, 0], shuffle_permutation(c, g))
    field = field_between(shuffle_only, "c0", "y")
    np.testing.assert_array_equal(
        field.connectivity, np.eye(c, dtype=bool)[shuffle_permutation(c, g)]
    )


@pytest.mark.parametrize(("k", "s", "d"), GEOMETRY[:5])
def test_graph_field_reads_strides_dilations_and_passes_bn_relu(k, s, d):
    c = 8
    spec = _spec(c, c, k, s, d)
    real = next(r for r in realisations("gc-pwg", spec) if r.shuffles)
    for style in ("static", "zero", "gather", "shape_of"):
        model = _sk_model(real.stages, k, s, d, style, 16, extras=("BatchNormalization", "Relu"))
        assert field_between(model.graph, "x", "y").equals(field_of_conv(spec))
        _run(model, np.ones((1, c, 16, 16), np.float32))


def test_all_zero_weights_still_count_their_group_structure():
    c = 8
    stages = (Stage(GC, c, c, 4, True, 4), Stage(PWG, c, c, 2, False))
    model = _sk_model(stages, zero=True)
    assert field_between(model.graph, "x", "y").equals(field_of_stages(stages, (3, 3)))


def test_unsupported_op_on_the_path_is_named():
    c = 4
    w = numpy_helper.from_array(np.ones((c, c, 3, 3), np.float32), "w")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["a"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Softmax", ["a"], ["b"], name="soft", axis=1),
        helper.make_node("Conv", ["b", "w"], ["y"], name="conv2", pads=[1, 1, 1, 1]),
    ]
    vi = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, 8, 8])
    graph = helper.make_graph(nodes, "g", [vi], [_out("y")], [w])
    with pytest.raises(FieldPathError, match=r"'soft' \(Softmax\)"):
        field_between(graph, "x", "y")
    with pytest.raises(FieldPathError, match="no path"):
        field_between(graph, "y", "x")
    assert field_between(graph, "b", "y").size == (3, 3, c)


def test_a_transpose_that_moves_positions_is_not_a_permutation():
    c = 4
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], name="nhwc", perm=[0, 2, 3, 1]),
        helper.make_node("Transpose", ["t"], ["y"], name="back", perm=[0, 2, 1, 3]),
    ]
    vi = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, 5, 5])
    graph = helper.make_graph(nodes, "g", [vi], [_out("y")])
    with pytest.raises(FieldPathError, match="not a channel permutation|moves spatial"):
        field_between(graph, "x", "y")


def test_unit_fields_finds_shufflenet_units_and_unshuffled_chains():
    c = 16
    unit = (
        Stage(PWG, c, c, 4, False, 4),
        Stage(DW, c, c, c, True),
        Stage(PWG, c, c, 4, False),
    )
    model = _sk_model(unit, style="zero", extras=("BatchNormalization", "Relu"))
    units = unit_fields(model)
    assert len(units) == 1
    assert units[0]["nodes"] == ["conv0", "conv1", "conv2"]
    assert units[0]["size"] == [3, 3, c] and units[0]["full"] and units[0]["grouped"]
    plain = tuple(Stage(s.kind, s.c_in, s.c_out, s.group, s.spatial) for s in unit)
    units = unit_fields(_sk_model(plain))
    assert units[0]["size"] == [3, 3, 4] and not units[0]["full"]


def test_unit_fields_splits_at_branches():
    c = 8
    w = numpy_helper.from_array(np.ones((c, c // 2, 1, 1), np.float32), "w")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["a"], name="a", group=2),
        helper.make_node("Conv", ["a", "w"], ["b"], name="b", group=2),
        helper.make_node("Conv", ["a", "w"], ["c"], name="c", group=2),
        helper.make_node("Add", ["b", "c"], ["y"]),
    ]
    vi = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, 4, 4])
    graph = helper.make_graph(nodes, "g", [vi], [_out("y")], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    units = unit_fields(model)
    assert sorted(u["nodes"][0] for u in units) == ["a", "b", "c"]
    assert all(u["size"] == [1, 1, 4] and not u["full"] for u in units)


def test_grid_of_group_numbers_matches_the_mn_condition():
    """GC(M) → shuffle(M) → PWG(N) has the full field iff M·N ≤ C (ICLR'19 Sec. 3.3.2)."""
    c = 24
    divs = [m for m in range(2, c) if c % m == 0]
    for m, n in itertools.product(divs, divs):
        stages = (Stage(GC, c, c, m, True, m), Stage(PWG, c, c, n, False))
        assert field_of_stages(stages, (3, 3)).full_channels == (m * n <= c), (m, n)
