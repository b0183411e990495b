"""onnx-sk: replace dense convolutions in ONNX CNNs with sparse-kernel (SK) designs.

The public Python API: each CLI command calls exactly one of these functions.
"""

from __future__ import annotations

__version__ = "0.1.0"

from onnx_sk.errors import DomainError, UserError, VerificationError
from onnx_sk.graph.analyze import analyze
from onnx_sk.options import OptimizeOptions
from onnx_sk.pipeline import optimize, optimize_model
from onnx_sk.report import Report
from onnx_sk.runtime.compare import compare
from onnx_sk.training.distill import distill
from onnx_sk.training.export import export_torch, to_torch

__all__ = [
    "DomainError",
    "OptimizeOptions",
    "Report",
    "UserError",
    "VerificationError",
    "__version__",
    "analyze",
    "compare",
    "distill",
    "export_torch",
    "optimize",
    "optimize_model",
    "to_torch",
]
