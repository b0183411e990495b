"""Imports every command module so that each registers itself on the app."""

from onnx_sk.cli import analyze  # noqa: F401
from onnx_sk.cli import bench  # noqa: F401
from onnx_sk.cli import compare  # noqa: F401
from onnx_sk.cli import efficiency  # noqa: F401
from onnx_sk.cli import export_torch  # noqa: F401
from onnx_sk.cli import optimize  # noqa: F401
from onnx_sk.cli import profile_lut  # noqa: F401
from onnx_sk.cli import search  # noqa: F401
