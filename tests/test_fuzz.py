"""Property-based fuzzing of ``optimize``: random CNN graphs through every design and mode.

For each random graph (:mod:`cnn_graphs`: chains, residual Adds, Concat, Split, BN, activations,
odd and prime channel counts, kernels 1-5 (non-square too), strides, pads (asymmetric too),
``auto_pad``, dilations, groups, symbolic batch/height/width) the result must

- pass ``onnx.checker.check_model(full_check=True)`` and run in ONNX Runtime;
- keep the output names, the declared input/output types and the runtime output shapes;
- carry optimize's own verification (checker, information fields, dense-twin outputs);
- and, checked here independently of the verify pass: every inserted subgraph, cut out of
  the written file with its weights, equals one dense Conv with the
  ``designs.dense_equivalent`` kernel of those weights (rtol 1e-4, atol 1e-5, both outputs
  divided by the dense output's max |y| so that the tolerance means the same at every scale).

``test_hostile_mutations`` mutates such graphs into invalid or malformed models (issue 16): the
run exits 0 with a correct model or 2 with one line, never a traceback or a leftover file.

Profiles (``hypothesis.settings``): ``onnx-sk-ci`` (default; a few hundred examples in all,
derandomized so CI is reproducible) and ``long`` (thousands, random)::

    HYPOTHESIS_PROFILE=long .venv/bin/pytest tests/test_fuzz.py -q -p no:cacheprovider

Every failure found becomes a literal example in ``tests/test_fuzz_regressions.py``.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import tempfile
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from cnn_graphs import ACTIVATIONS, ConvCfg, Net, build, feed_shape
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st
from onnx import helper

import onnx_sk
from onnx_sk.cli import main as cli_main
from onnx_sk.errors import UserError
from onnx_sk.graph.build import Replacement
from onnx_sk.graph.checks import inserted_subgraph
from onnx_sk.graph.convs import read_spec
from onnx_sk.graph.shapes import infer_shapes, known_dims
from onnx_sk.maths.designs import DESIGNS, dense_equivalent, divisors, realisations
from onnx_sk.runtime.session import session

_COMMON = dict(
    deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
settings.register_profile("onnx-sk-ci", max_examples=60, derandomize=True, database=None, **_COMMON)
settings.register_profile("long", max_examples=2000, derandomize=False, print_blob=True, **_COMMON)
FUZZ = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "onnx-sk-ci"))
if os.environ.get("HYPOTHESIS_PROFILE") not in (None, "onnx-sk-ci", "long"):
    FUZZ = settings(FUZZ, **_COMMON)
#: per example, the widen test runs two optimizations' worth of work: fewer examples
FUZZ_WIDEN = settings(FUZZ, max_examples=max(10, FUZZ.max_examples * 2 // 3))

RTOL, ATOL = 1e-4, 1e-5
VERIFIER_SIZE = (64, 64)  # the spatial size verify feeds symbolic dims first
CHANNELS = st.sampled_from([1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 16, 17, 23, 24])
DESIGN_CHOICES = [None, *DESIGNS]


# --------------------------------------------------------------------------- strategies


@st.composite
def conv_cfgs(
    draw, c_in: int, size: tuple[int, int], preserve: bool = False, c_out: int | None = None
):
    """A conv for a [N, c_in, *size] input; ``preserve``: stride 1 and the same output size."""
    kh = draw(st.integers(1, 5))
    kw = draw(st.one_of(st.just(kh), st.integers(1, 5)))
    dil = draw(st.sampled_from([(1, 1), (1, 1), (2, 2), (1, 2), (2, 1)]))
    c_out = draw(CHANNELS) if c_out is None else c_out
    group = draw(st.one_of(st.just(1), st.sampled_from(divisors(math.gcd(c_in, c_out)))))
    bias = draw(st.booleans())
    spans = (dil[0] * (kh - 1), dil[1] * (kw - 1))
    if preserve:
        auto_pad = draw(st.sampled_from(["NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER"]))
        top, left = draw(st.integers(0, spans[0])), draw(st.integers(0, spans[1]))
        pads = (top, left, spans[0] - top, spans[1] - left)
        strides = (1, 1)
    else:
        auto_pad = draw(st.sampled_from(["NOTSET"] * 5 + ["SAME_UPPER", "SAME_LOWER", "VALID"]))
        pads = tuple(draw(st.integers(0, spans[i % 2] + 1)) for i in range(4))
        strides = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    if dil != (1, 1) and auto_pad.startswith("SAME"):  # ONNX Runtime refuses this combination
        auto_pad = "NOTSET"
    cfg = ConvCfg(c_out, (kh, kw), strides, pads, dil, group, bias, auto_pad)
    if min(cfg.out_size(size)) < 1:  # too small an input for this conv: keep the size
        cfg = replace(cfg, strides=(1, 1), dilations=(1, 1), auto_pad="SAME_UPPER")
    return cfg


def _partition(draw, total: int) -> tuple[int, ...]:
    parts = draw(st.integers(2, min(3, total)))
    cuts = sorted(draw(st.sets(st.integers(1, total - 1), min_size=parts - 1, max_size=parts - 1)))
    return tuple(b - a for a, b in zip([0, *cuts], [*cuts, total], strict=True))


@st.composite
def nets(draw, max_layers: int = 6) -> Net:
    c = c_in = draw(CHANNELS)
    batch = draw(st.sampled_from(["N", 1, 2]))
    shape = draw(st.sampled_from(["symbolic", "symbolic+given", "fixed"]))
    if shape == "symbolic":
        size, dims = VERIFIER_SIZE, (batch, "H", "W")
    else:
        size = (draw(st.integers(3, 20)), draw(st.integers(3, 20)))
        dims = (batch, "H", "W") if shape == "symbolic+given" else (batch, *size)
    start, layers = size, []
    for _ in range(draw(st.integers(1, max_layers))):
        kind = draw(
            st.sampled_from(["conv", "conv", "conv", "bn", "act", "residual", "concat", "split"])
        )
        if kind == "split" and c < 2:
            kind = "conv"
        if kind == "conv":
            cfg = draw(conv_cfgs(c, size))
            layers.append(("conv", cfg))
            c, size = cfg.c_out, cfg.out_size(size)
        elif kind == "bn":
            layers.append(("bn",))
        elif kind == "act":
            layers.append(("act", draw(st.sampled_from(ACTIVATIONS))))
        elif kind == "residual":
            layers.append(("residual", draw(conv_cfgs(c, size, preserve=True, c_out=c))))
        elif kind == "concat":
            a, b = draw(conv_cfgs(c, size, preserve=True)), draw(conv_cfgs(c, size, preserve=True))
            layers.append(("concat", a, b))
            c = a.c_out + b.c_out
        else:
            sizes = _partition(draw, c)
            cfgs = tuple(draw(conv_cfgs(s, size, preserve=True)) for s in sizes)
            layers.append(("split", sizes, cfgs))
            c = sum(cfg.c_out for cfg in cfgs)
    extra = draw(st.integers(-1, len(layers) - 1))
    return Net(c_in, dims, tuple(layers), extra, draw(st.integers(0, 2**16)), 17, start)


# --------------------------------------------------------------------------- checks


def input_shape_option(net: Net) -> list[str] | None:
    """``--input-shape`` for a symbolic net meant to run at a size other than the verifier's."""
    if all(isinstance(d, int) for d in net.dims[1:]) or net.size == VERIFIER_SIZE:
        return None
    return ["x:" + "x".join(map(str, feed_shape(net)))]


def io_signature(model: onnx.ModelProto) -> list:
    sig = []
    for vi in [*model.graph.input, *model.graph.output]:
        t = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in t.shape.dim]
        sig.append((vi.name, t.elem_type, dims if t.HasField("shape") else None))
    return sig


def run(model: onnx.ModelProto | str, feeds: dict) -> dict[str, np.ndarray]:
    sess = session(model, opt_level="disabled")
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds), strict=True))


def _replacement(original: onnx.ModelProto, written: onnx.ModelProto, row: dict, ratio: float):
    """A Replacement rebuilt from the report row and the written file (its weights, its nodes)."""
    conv = next(n for n in original.graph.node if (n.name or n.output[0]) == row["name"])
    inits = {i.name: i for i in original.graph.initializer}
    spec = read_spec(
        conv, tuple(inits[conv.input[1]].dims), len(conv.input) > 2 and bool(conv.input[2])
    )
    real = next(
        r for r in realisations(row["design"], spec, ratio)
        if r.group_dict == (row["groups"] or {}) and r.bottleneck == row["bottleneck"]
    )  # fmt: skip
    new = [n for n in written.graph.node if n.name.startswith(f"{row['name']}/sk/")]
    stage_nodes = [n for n in new if n.op_type == "Conv"]
    assert len(stage_nodes) == len(real.stages), row
    w_inits = {i.name: i for i in written.graph.initializer}
    weights = [onnx.numpy_helper.to_array(w_inits[n.input[1]]) for n in stage_nodes]
    for stage, w in zip(real.stages, weights, strict=True):
        assert w.shape == stage.weight_shape(spec.kernel_shape), (row, stage)
    rep = Replacement(
        name=row["name"], input=conv.input[0], output=conv.output[0], real=real, weights=weights,
        bias=None, new_nodes=[n.name for n in new],
    )  # fmt: skip
    return conv, rep


def check_subgraphs(original: onnx.ModelProto, written: onnx.ModelProto, report, ratio=0.25) -> int:
    """Each inserted subgraph alone equals one dense Conv with its dense-equivalent kernel."""
    rng = np.random.default_rng(0)
    opsets = list(written.opset_import)
    shapes = infer_shapes(original)  # the model's own shapes: a static H, W is baked in shuffles
    checked = 0
    for row in report.convs:
        if not row["design"]:
            continue
        conv, rep = _replacement(original, written, row, ratio)
        # a shuffle reshaped to constant targets (the model's H, W static) runs at that size only
        targets = {i.name: i for i in written.graph.initializer}
        baked = any(
            n.op_type == "Reshape"
            and n.name in rep.new_nodes
            and n.input[1] in targets
            and -1 not in onnx.numpy_helper.to_array(targets[n.input[1]])
            for n in written.graph.node
        )
        in_shape = shapes.get(conv.input[0]) if baked else None
        rep.in_spatial = known_dims(in_shape[2:]) if in_shape and len(in_shape) == 4 else None
        assert rep.in_spatial or not baked, row
        sub = inserted_subgraph(written, rep)
        sk = helper.make_model(sub, opset_imports=opsets, ir_version=written.ir_version)
        w_eq = dense_equivalent(rep.real.stages, rep.weights).astype(np.float32)
        dense_inputs = [rep.input, "w_eq", *conv.input[2:3]]
        inits = [onnx.numpy_helper.from_array(w_eq, "w_eq")]
        inits += [i for i in original.graph.initializer if i.name in conv.input[2:3]]
        node = helper.make_node("Conv", dense_inputs, [rep.output])
        node.attribute.extend(conv.attribute)
        dense_graph = helper.make_graph([node], "dense", list(sub.input), list(sub.output), inits)
        dense = helper.make_model(dense_graph, opset_imports=opsets, ir_version=written.ir_version)
        spec = rep.real.spec
        size = list(rep.in_spatial or ()) or [
            spec.dilations[i] * (spec.kernel_shape[i] - 1) + 1 + 2 * spec.strides[i]
            for i in range(2)
        ]
        feeds = {rep.input: rng.standard_normal((2, spec.c_in, *size)).astype(np.float32)}
        got, want = run(sk, feeds)[rep.output], run(dense, feeds)[rep.output]
        assert got.shape == want.shape
        scale = float(np.max(np.abs(want)))  # compared at unit output scale: He weights of a
        if scale == 0 and rep.in_spatial:  # the model's size: every window may see only padding
            np.testing.assert_array_equal(got, want)
            checked += 1
            continue
        assert scale > 0, "a vacuous comparison"  # narrow conv can give outputs of ~1e-3
        np.testing.assert_allclose(
            got / scale, want / scale, rtol=RTOL, atol=ATOL, err_msg=f"conv {row['name']}"
        )
        checked += 1
    return checked


def _event(text: str) -> None:
    """Outcome statistics (``--hypothesis-show-statistics``); no-op in the regression tests."""
    if currently_in_test_context():
        event(text)


def _clean_folder(folder: Path, expected: set[str]) -> None:
    left = {p.name for p in folder.iterdir()}
    assert left == expected, f"unexpected files: {sorted(left - expected)}"


def check_reduce(net: Net, design: str | None, include_first: bool, objective: str) -> None:
    model = build(net)
    feeds = {
        "x": np.random.default_rng(net.seed).standard_normal(feed_shape(net)).astype(np.float32)
    }
    want = run(model, feeds)
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        onnx.save(model, src)
        before = src.read_bytes()
        _, report = onnx_sk.optimize(
            src, out, design=design, include_first=include_first, objective=objective,
            input_shape=input_shape_option(net),
        )  # fmt: skip
        assert src.read_bytes() == before
        _clean_folder(Path(tmp), {"in.onnx", "out.onnx"})
        onnx.checker.check_model(str(out), full_check=True)
        written = onnx.load(out)
    assert io_signature(written) == io_signature(model)
    got = run(written, feeds)
    assert list(got) == list(want)
    assert [g.shape for g in got.values()] == [w.shape for w in want.values()]
    _event(f"reduce: replaced {min(report.replaced, 3)}{'+' if report.replaced >= 3 else ''} convs")
    if report.replaced:
        v = report.verification
        assert v["checker"] and v["fields_checked"] == report.replaced, v
        assert check_subgraphs(model, written, report) == report.replaced
    else:
        for name in want:
            np.testing.assert_array_equal(got[name], want[name])


def check_widen(net: Net, design: str | None, widen_init: str, width_scale: float | None) -> None:
    model = build(net)
    feeds = {
        "x": np.random.default_rng(net.seed).standard_normal(feed_shape(net)).astype(np.float32)
    }
    want = run(model, feeds)
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        onnx.save(model, src)
        try:
            _, report = onnx_sk.optimize(
                src, out, mode="widen", design=design, include_first=True, widen_init=widen_init,
                width_scale=width_scale, input_shape=input_shape_option(net),
            )  # fmt: skip
        except UserError as exc:
            assert str(exc).startswith("nothing could be widened: every channel space is frozen"), (
                exc
            )
            _event("widen: nothing to widen")
            _clean_folder(Path(tmp), {"in.onnx"})
            return
        _clean_folder(Path(tmp), {"in.onnx", "out.onnx"})
        onnx.checker.check_model(str(out), full_check=True)
        written = onnx.load(out)
    assert io_signature(written) == io_signature(model)
    got = run(written, feeds)
    assert list(got) == list(want)
    assert [g.shape for g in got.values()] == [w.shape for w in want.values()]
    assert report.verification is not None and report.verification["checker"]
    _event(f"widen: replaced {min(report.replaced, 3)}{'+' if report.replaced >= 3 else ''} convs")


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("design", DESIGN_CHOICES, ids=lambda d: d or "auto")
@FUZZ
@given(
    net=nets(),
    include_first=st.sampled_from([True, True, False]),
    objective=st.sampled_from(["params", "macs"]),
)
def test_reduce_random_graphs(design, net, include_first, objective):
    check_reduce(net, design, include_first, objective)


@FUZZ_WIDEN
@given(
    net=nets(max_layers=4),
    design=st.sampled_from([*DESIGN_CHOICES, "none"]),
    widen_init=st.sampled_from(["he", "preserve"]),
    width_scale=st.sampled_from([None, None, 1.5]),
)
def test_widen_random_graphs(net, design, widen_init, width_scale):
    if design == "none" and width_scale is None:
        width_scale = 1.25
    check_widen(net, design, widen_init, width_scale)


def test_graph_builder_covers_the_layer_kinds():
    """The strategy's building blocks, once each, by hand: the builder itself is sound."""
    a = ConvCfg(7, (3, 3), pads=(1, 1, 1, 1))
    net = Net(
        5, ("N", "H", "W"),
        (
            ("conv", ConvCfg(6, (3, 2), (2, 1), (1, 0, 0, 1), (1, 2))), ("bn",), ("act", "Relu"),
            ("residual", ConvCfg(6, (3, 3), pads=(0, 2, 2, 0))), ("concat", a, ConvCfg(4, (1, 1))),
            ("split", (5, 6), (ConvCfg(5, (3, 3), auto_pad="SAME_LOWER"), ConvCfg(2, (5, 5), pads=(2, 2, 2, 2)))),
        ),
        extra_output=2,
    )  # fmt: skip
    model = build(net)
    ops = [n.op_type for n in model.graph.node]
    for op in ("Conv", "BatchNormalization", "Relu", "Add", "Concat", "Split"):
        assert op in ops
    outs = run(model, {"x": np.zeros(feed_shape(net), np.float32)})
    assert [o.shape for o in outs.values()] == [(1, 6, 32, 63), (1, 7, 32, 63)]


# --------------------------------------------------------------------------- hostile models
#
# Mutations of valid random graphs, as a careless tool or an attacker would write them. The
# property (issue 16): ``onnx-sk optimize`` exits 0 with a correct model, or exits 2 with one
# line ``error: ...``; never a traceback, never a wrong model, never a leftover file. The CLI
# runs in-process (``onnx_sk.cli.main``): an exception escaping it is the traceback a user
# would see.


def _conv_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type == "Conv"]


def _set_attr(node: onnx.NodeProto, attr: onnx.AttributeProto) -> None:
    keep = [a for a in node.attribute if a.name != attr.name]
    del node.attribute[:]
    node.attribute.extend([*keep, attr])


def _pick(items, rng):
    """A random element of a protobuf repeated field (None when it is empty)."""
    return items[int(rng.integers(len(items)))] if len(items) else None


def _m_duplicate_initializer(m, rng):
    init = _pick(m.graph.initializer, rng)
    if init is None:
        return
    twin = onnx.TensorProto()
    twin.CopyFrom(init)
    try:
        values = onnx.numpy_helper.to_array(init)
    except Exception:  # an earlier mutation broke it: duplicate it as it is
        values = np.zeros(0, np.int8)
    if values.dtype.kind == "f":
        twin.CopyFrom(onnx.numpy_helper.from_array(values * -2, init.name))
    m.graph.initializer.insert(int(rng.integers(len(m.graph.initializer) + 1)), twin)


def _m_duplicate_output(m, rng):
    a, b = _pick(m.graph.node, rng), _pick(m.graph.node, rng)
    if a is not None and b is not None and a.output and b.output:
        a.output[0] = b.output[0]


def _m_output_is_initializer(m, rng):
    node, init = _pick(m.graph.node, rng), _pick(m.graph.initializer, rng)
    if node is not None and init is not None and node.output:
        node.output[0] = init.name


def _m_reorder(m, rng):
    nodes = list(m.graph.node)
    order = rng.permutation(len(nodes))
    del m.graph.node[:]
    m.graph.node.extend(nodes[i] for i in order)


def _m_swap_neighbours(m, rng):
    if len(m.graph.node) < 2:
        return
    i = int(rng.integers(len(m.graph.node) - 1))
    nodes = list(m.graph.node)
    nodes[i], nodes[i + 1] = nodes[i + 1], nodes[i]
    del m.graph.node[:]
    m.graph.node.extend(nodes)


def _m_tensor_length(m, rng):
    init = _pick(m.graph.initializer, rng)
    if init is None:
        return
    raw = init.raw_data
    values = np.frombuffer(raw, np.float32) if init.data_type == 1 and len(raw) % 4 == 0 else None
    how = rng.integers(4)
    if how == 0:
        init.raw_data = init.raw_data[: int(rng.integers(len(init.raw_data) + 1))] + b"\1"
    elif how == 1:
        init.raw_data = init.raw_data + bytes(int(rng.integers(1, 9)))
    elif how == 2 and values is not None:
        init.ClearField("raw_data")
        init.float_data.extend(values[: max(0, values.size - 1 - int(rng.integers(3)))].tolist())
    else:
        init.ClearField("raw_data")  # dims without data


def _m_data_type(m, rng):
    init = _pick(m.graph.initializer, rng)
    if init is None:
        return
    init.data_type = int(rng.choice([0, 2, 3, 7, 10, 11, 16, 99]))


def _m_dims(m, rng):
    """New dims on an initializer: the same element count reshaped, or one dim changed."""
    init = _pick(m.graph.initializer, rng)
    if init is None:
        return
    dims = list(init.dims)
    if len(dims) >= 2 and rng.integers(2):
        dims = [int(d) for d in rng.permutation(dims)]
    elif dims:
        k = int(rng.integers(len(dims)))
        dims[k] = int(rng.choice([0, 1, dims[k] + 1, -1]))
    del init.dims[:]
    init.dims.extend(dims)


def _m_conv_attribute(m, rng):
    convs = _conv_nodes(m)
    if not convs:
        return
    node = _pick(convs, rng)
    name = str(rng.choice(["group", "kernel_shape", "strides", "pads", "dilations", "foo"]))
    bad = {
        "group": [0, -1, 2, 3, 7, 1000],
        "kernel_shape": [[5, 5], [1], [3, 3, 3], [0, 3], [2, 1]],
        "strides": [[0, 1], [-1, 1], [1], [1, 1, 1]],
        "pads": [[-1, 0, 0, 0], [1, 1], [0] * 6],
        "dilations": [[0, 1], [2], [-2, 1]],
        "foo": [1],
    }[name]
    value = bad[int(rng.integers(len(bad)))]
    if rng.integers(5) == 0:  # the wrong attribute type
        value = [float(v) for v in value] if isinstance(value, list) else float(value)
    _set_attr(node, helper.make_attribute(name, value))


def _m_conv_arity(m, rng):
    convs = _conv_nodes(m)
    if not convs:
        return
    node = _pick(convs, rng)
    if rng.integers(2):
        del node.input[1:]
    else:
        del node.output[:]


def _m_undefined_input(m, rng):
    node = _pick(m.graph.node, rng)
    if node is not None and node.input:
        node.input[int(rng.integers(len(node.input)))] = "nowhere"


def _m_ir3(m, rng):
    """Valid: what opset-9 exporters wrote (IR 3, every initializer also a graph input)."""
    m.ir_version = 3
    for init in m.graph.initializer:
        m.graph.input.append(
            helper.make_tensor_value_info(init.name, init.data_type, list(init.dims))
        )


def _m_overridable(m, rng):
    """Valid: a weight also listed as a graph input (IR >= 4: an overridable default)."""
    init = _pick(m.graph.initializer, rng)
    if init is None:
        return
    m.graph.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))


MUTATIONS = {
    f.__name__[3:]: f
    for f in (
        _m_duplicate_initializer, _m_duplicate_output, _m_output_is_initializer, _m_reorder,
        _m_swap_neighbours, _m_tensor_length, _m_data_type, _m_dims, _m_conv_attribute,
        _m_conv_arity, _m_undefined_input, _m_ir3, _m_overridable,
    )
}  # fmt: skip
#: hostile examples: 5 per example of the other tests (most are refused at load, in milliseconds)
FUZZ_HOSTILE = settings(FUZZ, max_examples=FUZZ.max_examples * 5)


def _run_main(argv: list[str]) -> tuple[int, str]:
    """``onnx-sk ARGV`` in-process: (exit code, what it wrote to stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli_main([str(a) for a in argv])
    return code, err.getvalue()


def check_hostile(net: Net, mutations: list[str], pick: int) -> None:
    model = build(net)
    rng = np.random.default_rng(pick)
    for name in mutations:
        MUTATIONS[name](model, rng)
    with tempfile.TemporaryDirectory() as tmp:
        src, out, rep = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx", Path(tmp) / "r.json"
        src.write_bytes(model.SerializeToString())
        before = src.read_bytes()
        code, err = _run_main(
            ["optimize", src, out, "--include-first", "--report", rep]
            + [f"--input-shape=x:{'x'.join(map(str, feed_shape(net)))}"]
        )
        assert src.read_bytes() == before, "the input was modified"
        left = {p.name for p in Path(tmp).iterdir()}
        if code != 0:
            lines = err.strip().splitlines()
            assert code == 2, (code, err)
            assert len(lines) == 1 and lines[0].startswith("error: "), err
            assert left == {"in.onnx"}, f"left behind: {sorted(left)}"
            _event(f"hostile: refused ({'+'.join(mutations)})")
            return
        assert left == {"in.onnx", "out.onnx", "r.json"}, f"files: {sorted(left)}"
        _event(f"hostile: optimized ({'+'.join(mutations)})")
        written = onnx.load(out)
        doc = json.loads(rep.read_text())
    # exit 0: the input was valid after all, so the result must be a correct rewrite of it
    onnx.checker.check_model(model, full_check=True)
    onnx.checker.check_model(written, full_check=True)
    feeds = {
        "x": np.random.default_rng(net.seed).standard_normal(feed_shape(net)).astype(np.float32)
    }
    want, got = run(model, feeds), run(written, feeds)  # no feed for any weight
    assert list(got) == list(want)
    assert [g.shape for g in got.values()] == [w.shape for w in want.values()]
    replaced = doc["totals"]["replaced"]
    if replaced:
        assert doc["verification"]["fields_checked"] == replaced
        assert check_subgraphs(model, written, SimpleNamespace(convs=doc["convs"])) == replaced


@FUZZ_HOSTILE
@given(
    net=nets(max_layers=3),
    mutations=st.lists(st.sampled_from(sorted(MUTATIONS)), min_size=1, max_size=2),
    pick=st.integers(0, 2**32 - 1),
)
def test_hostile_mutations(net, mutations, pick):
    check_hostile(net, mutations, pick)
