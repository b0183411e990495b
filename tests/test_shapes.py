"""``--input-shape`` syntax: ``NAME:1x3x224x224``, ``NAME:1,3,224,224``, ``NAME:[1,3,224,224]``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import assert_clean_error, conv_model, run_cli
from onnx import TensorProto, helper, numpy_helper

from onnx_sk.errors import UserError
from onnx_sk.graph.shapes import contradicting_value_info, implied_channels, parse_input_shapes

FORMS = "expected NAME:1x3x224x224, NAME:1,3,224,224 or NAME:[1,3,224,224]"


@pytest.mark.parametrize(
    "item",
    [
        "input:1x3x224x224",
        "input:1X3X224X224",
        "input:1,3,224,224",
        "input:[1,3,224,224]",
        "input:[1, 3, 224, 224]",
        "input: 1 x 3 x 224 x 224",
    ],
)
def test_every_form_gives_the_same_dims(item):
    assert parse_input_shapes([item]) == {"input": (1, 3, 224, 224)}


def test_bare_dims_and_names_with_colons():
    assert parse_input_shapes(["[2,3]"]) == {"": (2, 3)}
    assert parse_input_shapes(["1,3"]) == {"": (1, 3)}
    assert parse_input_shapes(["a:b:1x4"]) == {"a:b": (1, 4)}


@pytest.mark.parametrize(
    "item",
    [
        "input:",
        "input:[]",
        "input:[1,3,224,224",
        "input:1,3,224,224]",
        "input:1x3,224,224",
        "input:1,,3",
        "input:1x3xx4",
        "input:(1,3,224,224)",
        "input:1.5x3",
        "input:[[1,3]]",
    ],
)
def test_malformed_is_one_clear_error(item):
    with pytest.raises(UserError) as err:
        parse_input_shapes([item])
    assert str(err.value) == f"--input-shape {item!r}: {FORMS}"


def test_non_positive_and_duplicate():
    with pytest.raises(UserError, match=r"every dim must be a positive integer"):
        parse_input_shapes(["x:[1,0,4]"])
    with pytest.raises(UserError, match=r"^--input-shape 'x:1,2': x is given twice$"):
        parse_input_shapes(["x:1x2", "x:1,2"])


def test_cli_accepts_the_comma_and_bracket_forms(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(conv_model(np.ones((4, 4, 3, 3))).SerializeToString())
    for form in ("x:1,4,16,16", "x:[1,4,16,16]"):
        proc = run_cli("analyze", model, "--json", "--input-shape", form)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["inputs"][0]["static_shape"] == [1, 4, 16, 16]
    assert_clean_error(
        run_cli("analyze", model, "--input-shape", "x:[1,4,16"),
        f"--input-shape 'x:[1,4,16': {FORMS}",
    )


@pytest.mark.parametrize(
    ("group", "second", "want"),
    [(1, None, {"x": 8}), (2, None, {"x": 16}), (1, 8, {"x": 8}), (1, 4, {})],
    ids=["conv", "grouped", "two agree", "two disagree"],
)
def test_a_symbolic_channel_dim_is_implied_by_the_convs_reading_it(group, second, want):
    """C = W.shape[1] · group when every Conv reading the input agrees; never a guess."""
    rng = np.random.default_rng(0)
    model = conv_model(
        rng.standard_normal((8, 8, 3, 3)), attrs={"group": group}, dims=("N", "C", "H", "W")
    )
    if second is not None:
        w2 = numpy_helper.from_array(np.ones((8, second, 1, 1), np.float32), "w2")
        model.graph.initializer.append(w2)
        model.graph.node.append(helper.make_node("Conv", ["x", "w2"], ["z"], name="c2"))
    assert implied_channels(model) == want


def test_only_value_info_contradicting_inference_is_listed():
    """Another fixed dim, rank or element type than inference derives: listed; a symbolic dim
    where inference has a number, or the same shape: kept."""
    model = conv_model(np.ones((8, 8, 3, 3)), attrs={"pads": [1, 1, 1, 1]}, dims=(1, 8, 4, 4))
    model.graph.node.append(helper.make_node("Relu", ["y"], ["r"]))
    model.graph.node.append(helper.make_node("Relu", ["r"], ["s"]))
    model.graph.node.append(helper.make_node("Relu", ["s"], ["t"]))
    model.graph.node.append(helper.make_node("Relu", ["t"], ["u"]))
    f = TensorProto.FLOAT
    model.graph.value_info.extend([
        helper.make_tensor_value_info("r", f, [1, 8, 4, 4]),
        helper.make_tensor_value_info("s", f, ["N", 8, "H", 4]),
        helper.make_tensor_value_info("t", f, [1, 8, 4, 5]),
        helper.make_tensor_value_info("u", TensorProto.INT64, [1, 8, 4, 4]),
    ])  # fmt: skip
    assert contradicting_value_info(model) == ["t", "u"]
    model.graph.value_info.append(helper.make_tensor_value_info("y", f, [1, 8, 4]))
    assert contradicting_value_info(model) == ["t", "u", "y"]
