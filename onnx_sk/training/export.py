"""``onnx-sk export-torch``: an ONNX model as a trainable ``torch.nn.Module``; torch imported lazily.

The conversion itself is :class:`onnx_sk.training.module.OnnxModule` (see there for the op list and
what becomes a parameter). ``export_torch`` writes the module with ``torch.save``; load it with
``torch.load(path, weights_only=False)`` where onnx-sk and torch are installed.

Before anything is written the module is checked against ONNX Runtime (graph optimisations off)
on the seeded random input verification uses (symbolic spatial dims 64, then 224): same output
shapes and dtypes, and ``max |torch − ORT| ≤ rtol · max |ORT| + atol`` per float output, rtol 1e-3
(1e-2 for float16 outputs), atol 1e-5. A model that ONNX Runtime cannot run on random input is
written unverified, with a warning.
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np
import onnx

from onnx_sk.errors import UserError, VerificationError
from onnx_sk.graph.load import load_model
from onnx_sk.graph.output_path import check_writable
from onnx_sk.graph.save import OutputFile
from onnx_sk.runtime.compare import difference
from onnx_sk.runtime.verify import reference_outputs

if TYPE_CHECKING:
    from onnx_sk.training.module import OnnxModule

log = logging.getLogger(__name__)


def _torch() -> ModuleType:
    try:
        import torch
    except ImportError:
        raise UserError("export-torch needs PyTorch: pip install 'onnx-sk[torch]'") from None
    return torch


def to_torch(model: str | os.PathLike | onnx.ModelProto) -> OnnxModule:
    """A trainable ``torch.nn.Module`` computing ``model`` (in eval mode, like ONNX Runtime)."""
    _torch()
    from onnx_sk.training.module import OnnxModule

    return OnnxModule(load_model(model).model).eval()


def verify_module(model: onnx.ModelProto, module: OnnxModule) -> None:
    """``module`` (an OnnxModule of ``model``) against ONNX Runtime; VerificationError if it differs."""
    torch = _torch()
    try:
        ref = reference_outputs(model, seed=0, input_shapes=None)
    except VerificationError as exc:
        log.warning("export-torch: not verified: %s", exc)
        return
    with torch.no_grad():
        got = module(*[torch.from_numpy(ref.feeds[name]) for name in module.inputs])
    got = list(got) if isinstance(got, tuple) else [got]
    for name, want, value in zip(ref.names, ref.values, got, strict=True):
        value = value.detach().cpu().numpy()
        if value.shape != want.shape or value.dtype != want.dtype:
            raise VerificationError(
                f"export-torch: output {name!r} is {value.dtype}{list(value.shape)} in torch but "
                f"{want.dtype}{list(want.shape)} in ONNX Runtime"
            )
        if want.size == 0 or not np.issubdtype(want.dtype, np.floating):
            if not np.array_equal(value, want):
                raise VerificationError(f"export-torch: output {name!r} differs from ONNX Runtime")
            continue
        same = (np.isnan(want) & np.isnan(value)) | (np.isinf(want) & (want == value))
        d = difference(np.where(same, 0, want), np.where(same, 0, value))  # NaN/inf where ORT's
        rtol = 1e-2 if want.dtype == np.float16 else 1e-3
        if not d.max_abs_diff <= rtol * d.scale + 1e-5:
            raise VerificationError(
                f"export-torch: output {name!r} of the torch module differs from ONNX Runtime by "
                f"{d.max_abs_diff:.3g} (output scale {d.scale:.3g})"
            )


def export_torch(
    model: str | os.PathLike | onnx.ModelProto, output: str | os.PathLike, verify: bool = True
) -> Path:
    """Write ``to_torch(model)`` with ``torch.save`` (load with ``torch.load(path, weights_only=False)``
    where onnx-sk is installed), after checking it against ONNX Runtime unless ``verify`` is off."""
    torch = _torch()
    check_writable(output)  # a missing folder, a FIFO or device: refused before converting
    proto = load_model(model).model
    from onnx_sk.training.module import OnnxModule

    module = OnnxModule(proto).eval()
    if verify:
        verify_module(proto, module)
    data = io.BytesIO()
    torch.save(module, data)
    with OutputFile(output) as out:  # atomic, through a symlink, a full disk one line
        out.stage_bytes(data.getvalue())
        return out.commit()
