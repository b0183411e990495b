"""The latency objective's micro-models between NCHWc neighbours (runtime.micro): the neighbours
are there, compute what they should, stay fp32 in the int8 form, and their time is taken out."""

from __future__ import annotations

import numpy as np
import pytest

from onnx_sk.maths.designs import realisations
from onnx_sk.maths.spec import ConvSpec
from onnx_sk.runtime.latency import _in_context
from onnx_sk.runtime.micro import CONTEXT_PREFIX, MIN_PRE_CHANNELS, micro_model
from onnx_sk.runtime.quantize import INT8_CONV_OPS, optimized_ops, qdq_micro
from onnx_sk.runtime.session import session

SPEC = ConvSpec(16, 32, (3, 3), pads=(1, 1, 1, 1), has_bias=True)
IN = (1, 16, 12, 12)


def _run(model, x):
    return session(model).run(None, {"x": x})[0]


def _values(model) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


@pytest.mark.parametrize("real", [None, "pwg-dw-pwg"])
def test_context_is_the_conv_between_two_pointwise_convs(real):
    """y = post(relu(conv(relu(pre(x))))), computed here in numpy from the model's weights; the
    conv (dense or SK) is the micro-model alone, on relu(pre(x))."""
    r = next(iter(realisations(real, SPEC, 0.25))) if real else None
    ctx = micro_model(SPEC, IN, r, seed=3, context=True)
    alone = micro_model(SPEC, IN, r, seed=3)
    names = [n.name for n in ctx.graph.node]
    assert names[:2] == ["ctx/pre", "ctx/pre_relu"] and names[-2:] == ["ctx/relu", "ctx/post"]
    assert not any(n.name.startswith(CONTEXT_PREFIX) for n in alone.graph.node)
    w = _values(ctx)
    x = np.random.default_rng(0).standard_normal(IN).astype(np.float32)
    pre = np.maximum(np.einsum("oi,nihw->nohw", w["ctx/pre_w"][:, :, 0, 0], x), 0)
    mid = np.maximum(_run(alone, pre.astype(np.float32)), 0)
    want = np.einsum("oi,nihw->nohw", w["ctx/post_w"][:, :, 0, 0], mid)
    got = _run(ctx, x)
    assert got.shape == (1, 32, 12, 12)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_a_conv_on_few_channels_has_no_pre():
    """A conv with fewer than MIN_PRE_CHANNELS inputs reads the image: no neighbour before it."""
    spec = ConvSpec(3, 16, (7, 7), strides=(2, 2), pads=(3, 3, 3, 3))
    assert spec.c_in < MIN_PRE_CHANNELS
    m = micro_model(spec, (1, 3, 32, 32), None, context=True)
    assert [n.name for n in m.graph.node] == ["conv", "ctx/relu", "ctx/post"]


def test_int8_form_quantizes_the_conv_not_its_neighbours():
    """The int8 micro-model in context: ORT runs the conv's stages as int8 convs and the two
    neighbours as fp32 convs."""
    r = next(iter(realisations("dw-pw", SPEC, 0.25)))
    ctx = micro_model(SPEC, IN, r, context=True)
    x = np.random.default_rng(0).standard_normal(IN).astype(np.float32)
    ops = optimized_ops(qdq_micro(ctx, x))
    int8 = sum(ops[k] for k in INT8_CONV_OPS)
    fp32 = sum(n for k, n in ops.items() if k in ("Conv", "FusedConv") or k.endswith("NchwcConv"))
    assert int8 == 2  # the dw and the pw stage
    assert fp32 == 2  # ctx/pre and ctx/post
    q = {n.input[0] for n in qdq_micro(ctx, x).graph.node if n.op_type == "QuantizeLinear"}
    assert "x" not in q  # the graph input feeds the fp32 neighbour, not a Q


def test_time_in_context_subtracts_the_neighbours():
    """Per round: t(context, candidate) − t(context, dense) + t(dense alone), never below a
    small fraction of the dense conv's time."""
    dense = np.array([1.0, 1.2, 0.8])
    dense_ctx = np.array([1.5, 1.7, 1.3])
    cand_ctx = np.array([0.9, 1.0, 0.7])
    np.testing.assert_allclose(_in_context(cand_ctx, dense_ctx, dense), [0.4, 0.5, 0.2])
    np.testing.assert_allclose(_in_context(dense_ctx, dense_ctx, dense), dense)
    assert np.all(_in_context(np.zeros(3), dense_ctx, dense) > 0)
