"""The channel report: the library entry point of ``onnx-sk analyze --channels``."""

from __future__ import annotations

import os
from typing import Any

import onnx

from onnx_sk.graph.load import load_model
from onnx_sk.graph.shape_arith import infer_folded
from onnx_sk.graph.shapes import parse_input_shapes
from onnx_sk.width.analysis import analyze_channels


def channel_report(
    model: str | os.PathLike | onnx.ModelProto, input_shape: list[str] | None = None
) -> dict[str, Any]:
    """The channel spaces of ``model`` as a JSON-able dict (``input_shape``: ``NAME:1x3x32x32``)."""
    loaded = load_model(model)
    shapes = infer_folded(loaded.model, parse_input_shapes(input_shape))
    doc = analyze_channels(loaded.model, shapes).to_dict()
    doc["model"] = str(loaded.path) if loaded.path else None
    return doc
