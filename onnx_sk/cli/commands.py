"""Imports every command module so that each registers itself on the app."""

from onnx_sk.cli import (
    analyze,  # noqa: F401
    bench,  # noqa: F401
    compare,  # noqa: F401
    efficiency,  # noqa: F401
    export_torch,  # noqa: F401
    optimize,  # noqa: F401
    profile_lut,  # noqa: F401
    search,  # noqa: F401
)
