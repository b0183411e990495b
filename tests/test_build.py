"""Every design, built into a graph, equals one dense Conv with its dense-equivalent kernel.

ONNX Runtime with graph optimisations disabled runs both; inputs use batch/height/width values
other than any seen at build time (the graph has symbolic dims and no baked shapes).
"""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest
from helpers import conv_model

from onnx_sk.graph.build import replace_conv
from onnx_sk.maths.designs import DESIGNS, dense_equivalent, realisations
from onnx_sk.maths.spec import ConvSpec
from onnx_sk.runtime.session import session

RTOL, ATOL = 1e-4, 1e-5

GEOMETRIES = [
    # c_in, c_out, kernel, strides, pads, dilations, auto_pad
    (8, 8, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), None),
    (12, 24, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), None),
    (7, 13, (3, 3), (1, 1), (0, 1, 2, 0), (1, 1), None),  # odd/prime channels, asymmetric pads
    (16, 8, (1, 3), (1, 2), (0, 1, 0, 1), (1, 1), None),  # non-square kernel
    (6, 12, (5, 3), (2, 1), (2, 1, 2, 1), (2, 1), None),  # dilation, non-square
    (16, 16, (3, 3), (2, 2), (), (1, 1), "SAME_UPPER"),
    (10, 20, (3, 3), (1, 1), (), (2, 2), "VALID"),
]


def _sk_model(spec: ConvSpec, real, weights, bias, attrs, shuffle="reshape") -> onnx.ModelProto:
    dense = np.zeros((spec.c_out, spec.c_in, *spec.kernel_shape), np.float32)
    model = conv_model(dense, bias, attrs=attrs)
    replace_conv(model.graph, "y", real, weights, shuffle)
    onnx.checker.check_model(model, full_check=True)
    return model


def _attrs(kernel, strides, pads, dilations, auto_pad) -> dict:
    a = {"kernel_shape": list(kernel), "strides": list(strides), "dilations": list(dilations)}
    if auto_pad:
        a["auto_pad"] = auto_pad
    else:
        a["pads"] = list(pads)
    return a


def _scaled(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return (rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)


def _cases():
    for geometry, name in itertools.product(GEOMETRIES, DESIGNS):
        c_in, c_out, kernel, strides, pads, dil, auto_pad = geometry
        spec = ConvSpec(c_in, c_out, kernel, strides, pads, dil, 1, auto_pad or "NOTSET", True)
        reals = realisations(name, spec)
        # the most grouped realisation (most shuffles and structure) and the plainest one
        picks = {id(r): r for r in (reals[0], reals[-1], max(reals, key=lambda r: r.shuffles))}
        for real in picks.values():
            yield pytest.param(geometry, real, id=f"{name}-{c_in}x{c_out}-{kernel}-{real.groups}")


@pytest.mark.parametrize("geometry,real", list(_cases()))
def test_design_matches_dense_equivalent(geometry, real, rng):
    c_in, c_out, kernel, strides, pads, dil, auto_pad = geometry
    attrs = _attrs(kernel, strides, pads, dil, auto_pad)
    # unit-variance activations (std 1/sqrt(fan_in)), so atol 1e-5 is ~100 float32 ulps of O(1)
    weights = [_scaled(rng, s.weight_shape(kernel)) for s in real.stages]
    bias = rng.standard_normal(c_out).astype(np.float32)
    w_eq = dense_equivalent(real.stages, weights).astype(np.float32)
    sk = session(_sk_model(real.spec, real, weights, bias, attrs))
    dense = session(conv_model(w_eq, bias, attrs=attrs))
    for batch, h, w in [(1, 9, 11), (3, 16, 7), (2, 23, 23)]:
        x = rng.standard_normal((batch, c_in, h, w)).astype(np.float32)
        got = sk.run(None, {"x": x})[0]
        want = dense.run(None, {"x": x})[0]
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_shuffle_uses_no_baked_spatial_shape(rng):
    spec = ConvSpec(8, 8, (3, 3), pads=(1, 1, 1, 1))
    real = next(r for r in realisations("gc-pwg", spec) if r.shuffles)
    weights = [rng.standard_normal(s.weight_shape((3, 3))).astype(np.float32) for s in real.stages]
    model = _sk_model(spec, real, weights, None, _attrs((3, 3), (1, 1), (1, 1, 1, 1), (1, 1), None))
    reshapes = [n for n in model.graph.node if n.op_type == "Reshape"]
    consts = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    assert len(reshapes) == 2
    baked = [consts[n.input[1]].tolist() for n in reshapes if n.input[1] in consts]
    assert baked == [[0, real.group_dict["M"], 8 // real.group_dict["M"], -1]]
