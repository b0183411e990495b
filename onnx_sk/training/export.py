"""``onnx-sk export-torch``: an ONNX model as a trainable ``torch.nn.Module``; torch imported lazily.

The conversion itself is :class:`onnx_sk.training.module.OnnxModule` (see there for the op list and
what becomes a parameter). ``export_torch`` writes the module with ``torch.save``; load it with
``torch.load(path, weights_only=False)`` where onnx-sk and torch are installed.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import onnx

from onnx_sk.errors import UserError
from onnx_sk.graph.load import load_model
from onnx_sk.graph.output_path import check_writable
from onnx_sk.graph.save import OutputFile


def _torch():
    try:
        import torch
    except ImportError:
        raise UserError("export-torch needs PyTorch: pip install 'onnx-sk[torch]'") from None
    return torch


def to_torch(model: str | os.PathLike | onnx.ModelProto):
    """A trainable ``torch.nn.Module`` computing ``model`` (in eval mode, like ONNX Runtime)."""
    _torch()
    from onnx_sk.training.module import OnnxModule

    return OnnxModule(load_model(model).model).eval()


def export_torch(model: str | os.PathLike | onnx.ModelProto, output: str | os.PathLike) -> Path:
    """Write ``to_torch(model)`` with ``torch.save`` (load with ``torch.load(path, weights_only=False)``
    where onnx-sk is installed)."""
    torch = _torch()
    check_writable(output)  # a missing folder, a FIFO or device: refused before converting
    module = to_torch(model)
    data = io.BytesIO()
    torch.save(module, data)
    with OutputFile(output) as out:  # atomic, through a symlink, a full disk one line
        out.stage_bytes(data.getvalue())
        return out.commit()
