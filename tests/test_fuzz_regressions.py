"""Failures the long fuzz profile (``HYPOTHESIS_PROFILE=long``, tests/test_fuzz.py) found,
kept as plain tests: each example is the literal that hypothesis printed."""

from __future__ import annotations

from cnn_graphs import ConvCfg, Net
from test_fuzz import check_reduce


def test_narrow_conv_with_tiny_outputs_is_compared_at_unit_scale():
    """Run 1: a 2→1 4×4 conv whose He-initialised SK stages give outputs of at most 6.8e-3;
    the subgraph check used to call that a vacuous comparison. It now compares at unit scale."""
    net = Net(
        c_in=23,
        dims=("N", "H", "W"),
        layers=(
            ("conv", ConvCfg(c_out=2, kernel=(3, 3), bias=False)),
            ("conv", ConvCfg(c_out=1, kernel=(4, 4), strides=(1, 2), bias=False)),
        ),
        extra_output=0,
        seed=0,
        opset=17,
        size=(64, 64),
    )
    check_reduce(net, design=None, include_first=True, objective="params")
