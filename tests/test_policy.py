"""The user's policy on which convs are kept: ``--exclude`` must name a conv."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import assert_clean_error, conv_model, run_cli

from onnx_sk.errors import UserError
from onnx_sk.pipeline import optimize


@pytest.fixture
def three_convs(tmp_path: Path, rng) -> Path:
    """x → stem → conv_a → conv_b → y (16 channels, 3×3)."""
    model = conv_model(rng.standard_normal((16, 16, 3, 3)), attrs={"pads": [1, 1, 1, 1]})
    g = model.graph
    g.node[0].name, g.node[0].input[0] = "conv_b", "a"
    for name, src, dst in (("conv_a", "s", "a"), ("stem", "x", "s")):
        w = onnx.numpy_helper.from_array(
            rng.standard_normal((16, 16, 3, 3)).astype(np.float32), f"w_{name}"
        )
        g.initializer.append(w)
        g.node.insert(
            0, onnx.helper.make_node("Conv", [src, w.name], [dst], name=name, pads=[1] * 4)
        )
    g.input[0].type.tensor_type.shape.dim[1].dim_value = 16
    onnx.checker.check_model(model, full_check=True)
    path = tmp_path / "three.onnx"
    onnx.save(model, path)
    return path


def test_exclude_typo_is_an_error_listing_close_names(three_convs, tmp_path):
    out = tmp_path / "o.onnx"
    proc = run_cli("optimize", three_convs, out, "--exclude", "conv-a")
    assert_clean_error(
        proc, "--exclude 'conv-a' matches no conv (node or output name); close: conv_a, conv_b"
    )
    assert not out.exists()
    with pytest.raises(
        UserError,
        match=r"^--exclude 'zzz' matches no conv \(node or output name\); 3 convs, none close$",
    ):
        optimize(three_convs, None, exclude=["zzz"])


def test_exclude_by_node_or_output_name_keeps_the_conv(three_convs):
    for name in ("conv_a", "a"):
        _, report = optimize(three_convs, None, exclude=[name])
        row = {r["name"]: r for r in report.convs}["conv_a"]
        assert row["design"] is None and row["reason"] == "excluded by --exclude"
