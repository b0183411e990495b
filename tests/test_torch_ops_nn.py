"""export-torch layer rules against ONNX Runtime: Resize / Upsample, ConvTranspose, pooling, LSTM,
GRU (opsets 9-20, attribute variants, several input shapes through one model)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

from torch_ops_cases import check, model_of, node, randn  # noqa: E402

from onnx_sk.runtime.session import session  # noqa: E402
from onnx_sk.training.module import OnnxModule  # noqa: E402

I64 = np.int64
F32 = np.float32
X = {"x": randn(2, 3, 5, 7)}
MORE = [{"x": randn(1, 2, 4, 4)}, {"x": randn(1, 1, 1, 3)}]

COORDS = ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"]
NEAREST = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]


@pytest.mark.parametrize("coord", [*COORDS, "tf_half_pixel_for_nn"])
@pytest.mark.parametrize("nearest", NEAREST)
@pytest.mark.parametrize("scales", [[1, 1, 2, 2], [1, 1, 0.5, 1.7], [1, 1, 3, 0.6]])
def test_resize_nearest(coord, nearest, scales):
    attrs = {"mode": "nearest", "coordinate_transformation_mode": coord, "nearest_mode": nearest}
    consts = {"roi": np.zeros(0, F32), "scales": np.array(scales, F32)}
    check([node("Resize", ["x", "roi", "scales"], **attrs)], X, consts, opset=11, shapes=MORE)


@pytest.mark.parametrize("coord", COORDS)
@pytest.mark.parametrize("mode", ["linear", "cubic"])
@pytest.mark.parametrize("scales", [[1, 1, 2, 2], [1, 1, 0.5, 1.7], [1, 1, 2.5, 0.6]])
def test_resize_linear_and_cubic(coord, mode, scales):
    attrs = {"mode": mode, "coordinate_transformation_mode": coord}
    consts = {"roi": np.zeros(0, F32), "scales": np.array(scales, F32)}
    check([node("Resize", ["x", "roi", "scales"], **attrs)], X, consts, opset=13, shapes=MORE)


@pytest.mark.parametrize(
    "attrs",
    [
        {"mode": "cubic", "cubic_coeff_a": -0.5},
        {"mode": "cubic", "exclude_outside": 1},
        {"mode": "linear", "coordinate_transformation_mode": "half_pixel_symmetric"},
        {"mode": "nearest", "coordinate_transformation_mode": "half_pixel_symmetric"},
    ],
)
def test_resize_cubic_variants_and_half_pixel_symmetric(attrs):
    consts = {"scales": np.array([1, 1, 1.5, 0.7], F32)}
    check([node("Resize", ["x", "", "scales"], **attrs)], X, consts, opset=19, shapes=MORE)


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
@pytest.mark.parametrize("sizes", [[2, 3, 10, 14], [2, 3, 3, 9]])
def test_resize_to_sizes(mode, sizes):
    consts = {"sizes": np.array(sizes, I64)}
    check([node("Resize", ["x", "", "", "sizes"], mode=mode)], X, consts, opset=13)


@pytest.mark.parametrize("policy", ["stretch", "not_larger", "not_smaller"])
def test_resize_axes_and_keep_aspect_ratio(policy):
    consts = {"sizes": np.array([9, 9], I64)}
    attrs = {"mode": "linear", "axes": [2, 3], "keep_aspect_ratio_policy": policy}
    check([node("Resize", ["x", "", "", "sizes"], **attrs)], X, consts, opset=18)
    consts = {"scales": np.array([2.0, 0.5], F32)}
    check(
        [node("Resize", ["x", "", "scales"], mode="nearest", axes=[-1, 1])],
        X,
        consts,
        opset=18,
        shapes=MORE,
    )


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_tf_crop_and_resize(mode):
    attrs = {
        "mode": mode,
        "coordinate_transformation_mode": "tf_crop_and_resize",
        "extrapolation_value": -2.0,
    }
    roi = np.array([0, 0, -0.2, 0.1, 1, 1, 0.8, 1.3], F32)
    consts = {"roi": roi, "sizes": np.array([2, 3, 6, 4], I64)}
    check([node("Resize", ["x", "roi", "", "sizes"], **attrs)], X, consts, opset=13)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize(
    ("ins", "consts"),
    [
        (["x", "", "", "sizes"], {"sizes": np.array([2, 3, 3, 9], I64)}),
        (["x", "", "scales"], {"scales": np.array([1, 1, 0.5, 1.5], F32)}),
    ],
)
def test_resize_tf_crop_and_resize_without_roi_crops_nothing(mode, ins, consts):
    """An absent roi is the whole image, [0, 1] on every axis, as in ONNX Runtime (the rule indexed
    the absent roi and failed)."""
    attrs = {"mode": mode, "coordinate_transformation_mode": "tf_crop_and_resize"}
    check([node("Resize", ins, **attrs)], X, consts, opset=13)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_10_and_upsample(mode):
    scales = {"scales": np.array([1, 1, 2, 3], F32)}
    check([node("Resize", ["x", "scales"], mode=mode)], X, scales, opset=10, shapes=MORE)
    check([node("Upsample", ["x", "scales"], mode=mode)], X, scales, opset=9, shapes=MORE)
    check([node("Upsample", ["x"], mode=mode, scales=[1.0, 1.0, 2.0, 1.5])], X, opset=7)


CONV_T = [
    ((3, 4, 3, 3), {"strides": [2, 2]}),
    ((3, 4, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1]}),
    ((3, 2, 3, 2), {"strides": [2, 3], "pads": [0, 1, 2, 0], "group": 3}),
    ((3, 4, 3, 3), {"strides": [2, 2], "dilations": [2, 1]}),
    ((3, 4, 2, 2), {"strides": [2, 2], "output_shape": [11, 15]}),
    ((3, 4, 3, 3), {"strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    ((3, 4, 3, 3), {"strides": [2, 2], "auto_pad": "SAME_LOWER"}),
    ((3, 4, 4, 4), {"strides": [2, 2], "pads": [1, 1, 1, 1]}),
]


@pytest.mark.parametrize(("shape", "attrs"), CONV_T)
@pytest.mark.parametrize("bias", [True, False])
def test_conv_transpose(shape, attrs, bias):
    consts = {"w": randn(*shape)}
    if bias:
        consts["b"] = randn(shape[1] * attrs.get("group", 1))
    more = [] if "output_shape" in attrs else [{"x": randn(1, 3, 4, 2)}]
    ins = ["x", "w", "b"] if bias else ["x", "w"]
    check([node("ConvTranspose", ins, **attrs)], {"x": randn(2, 3, 5, 7)}, consts, shapes=more)


def test_conv_transpose_1d_and_3d():
    check(
        [node("ConvTranspose", ["x", "w"], strides=[3])],
        {"x": randn(2, 3, 6)},
        {"w": randn(3, 2, 4)},
    )
    check(
        [node("ConvTranspose", ["x", "w", "b"], strides=[1, 2, 2])],
        {"x": randn(1, 2, 3, 4, 4)},
        {"w": randn(2, 3, 2, 3, 3), "b": randn(3)},
    )


POOLS = [
    ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    ("MaxPool", {"kernel_shape": [2, 2], "strides": [2, 1], "pads": [0, 1, 1, 0]}),
    ("MaxPool", {"kernel_shape": [3, 2], "dilations": [2, 1], "pads": [1, 0, 1, 1]}),
    ("MaxPool", {"kernel_shape": [5, 5], "strides": [1, 1], "pads": [2, 2, 2, 2]}),
    ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    ("AveragePool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1}),
    (
        "AveragePool",
        {
            "kernel_shape": [3, 2],
            "pads": [1, 0, 0, 1],
            "strides": [2, 2],
            "ceil_mode": 1,
            "count_include_pad": 1,
        },
    ),
    ("AveragePool", {"kernel_shape": [2, 3], "pads": [0, 1, 1, 1], "strides": [2, 3]}),
    ("LpPool", {"kernel_shape": [2, 2], "strides": [2, 2], "p": 2}),
]


@pytest.mark.parametrize(("op", "attrs"), POOLS)
def test_pools(op, attrs):
    check(
        [node(op, ["x"], **attrs)],
        {"x": randn(2, 3, 7, 8)},
        opset=19,
        shapes=[{"x": randn(1, 2, 6, 5)}],
    )


def test_pools_1d_and_global():
    check([node("MaxPool", ["x"], kernel_shape=[3], strides=[2])], {"x": randn(2, 3, 9)})
    check([node("AveragePool", ["x"], kernel_shape=[2], strides=[2])], {"x": randn(2, 3, 9)})
    check([node("GlobalMaxPool", ["x"])], X, shapes=MORE)
    check([node("GlobalAveragePool", ["x"])], X, shapes=MORE)


def _rnn(
    op: str,
    gates: int,
    direction: str,
    hidden: int,
    size: int,
    *,
    bias=True,
    states=0,
    peep=False,
    lens=False,
    layout=0,
    **attrs,
):
    dirs = 2 if direction == "bidirectional" else 1
    if "acts" in attrs:
        attrs["activations"] = attrs.pop("acts") * dirs
    consts = {"W": randn(dirs, gates * hidden, size), "R": randn(dirs, gates * hidden, hidden)}
    ins = ["x", "W", "R", "B" if bias else ""]
    if bias:
        consts["B"] = randn(dirs, 2 * gates * hidden)
    batch = 3
    ins.append("lens" if lens else "")
    if lens:
        consts["lens"] = np.array([5, 2, 4], np.int32)
    for k in range(states):
        name = ["h0", "c0"][k]
        shape = (batch, dirs, hidden) if layout else (dirs, batch, hidden)
        consts[name] = randn(*shape)
        ins.append(name)
    if peep:
        ins += [""] * (2 - states) + ["P"]
        consts["P"] = randn(dirs, 3 * hidden)
    while ins[-1] == "":
        ins.pop()
    outs = ["Y", "Y_h", "Y_c"][: 3 if op == "LSTM" else 2]
    n = node(op, ins, outs, direction=direction, hidden_size=hidden, layout=layout, **attrs)
    x = randn(batch, 5, size) if layout else randn(5, batch, size)
    more = [] if lens or states else [{"x": randn(7, 3, size) if layout else randn(7, 2, size)}]
    check([n], {"x": x}, consts, opset=14, outputs=outs, shapes=more, tol=1e-4)


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"bias": False},
        {"states": 2},
        {"peep": True, "states": 2},
        {"clip": 0.5},
        {"input_forget": 1},
        {"acts": ["Sigmoid", "Tanh", "Tanh"]},
        {"acts": ["Sigmoid", "Tanh", "Relu"], "states": 2},
        {"lens": True, "states": 2},
    ],
)
def test_lstm(direction, kw):
    _rnn("LSTM", 4, direction, 4, 3, **kw)


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"linear_before_reset": 1},
        {"bias": False, "linear_before_reset": 1},
        {"states": 1},
        {"lens": True, "states": 1, "linear_before_reset": 1},
        {"clip": 0.3},
        {"acts": ["Sigmoid", "Tanh"], "linear_before_reset": 1},
        {"acts": ["Sigmoid", "Relu"], "linear_before_reset": 1},
    ],
)
def test_gru(direction, kw):
    _rnn("GRU", 3, direction, 5, 4, **kw)


@pytest.mark.parametrize(("op", "gates", "outs"), [("LSTM", 4, 3), ("GRU", 3, 2)])
def test_batch_first_layout_equals_the_transposed_time_first_run(op, gates, outs):
    """layout 1 (opset 14): ONNX Runtime's CPU kernels refuse it, so the reference is the same
    weights at layout 0 in ONNX Runtime with X, the states and the outputs transposed."""
    hidden, size, dirs = 4, 3, 2
    consts = {
        "W": randn(dirs, gates * hidden, size),
        "R": randn(dirs, gates * hidden, hidden),
        "B": randn(dirs, 2 * gates * hidden),
    }
    states = {k: randn(dirs, 3, hidden) for k in ["h0", "c0"][: outs - 1]}
    names = ["Y", "Y_h", "Y_c"][:outs]
    ins = ["x", "W", "R", "B", "", *states]
    x = randn(5, 3, size)
    time_first = model_of(
        [node(op, ins, names, direction="bidirectional", hidden_size=hidden)],
        {"x": x},
        {**consts, **states},
        names,
        opset=14,
    )
    want = session(time_first).run(None, {"x": x})
    batch_first = model_of(
        [node(op, ins, names, direction="bidirectional", hidden_size=hidden, layout=1)],
        {"x": x.transpose(1, 0, 2)},
        {**consts, **{k: v.transpose(1, 0, 2) for k, v in states.items()}},
        names,
        opset=14,
    )
    with torch.no_grad():
        got = OnnxModule(batch_first)(torch.from_numpy(x.transpose(1, 0, 2).copy()))
    np.testing.assert_allclose(got[0].numpy(), want[0].transpose(2, 0, 1, 3), rtol=1e-5, atol=1e-5)
    for g, w in zip(got[1:], want[1:], strict=True):
        np.testing.assert_allclose(g.numpy(), w.transpose(1, 0, 2), rtol=1e-5, atol=1e-5)
