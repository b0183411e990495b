"""A model run in ONNX Runtime with chosen intermediate tensors added as outputs, batch by batch.

Distillation reads the teacher's graph outputs and the tensors the teacher shares with the
student by name (the output of every conv onnx-sk replaced keeps its name). The session runs with
graph optimisations disabled, so every named tensor exists. A model whose batch dim is fixed at 1
is fed one sample at a time and the results are concatenated along the first axis.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx

from onnx_sk.errors import UserError
from onnx_sk.graph.tensors import with_outputs
from onnx_sk.runtime.feeds import real_inputs
from onnx_sk.runtime.session import session


def batch_fixed_at_one(model: onnx.ModelProto) -> bool:
    """True when some real input's first dim is the fixed value 1."""
    for vi in real_inputs(model):
        dims = vi.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value") and dims[0].dim_value == 1:
            return True
    return False


class Probe:
    """``run(feeds)`` → {name: array} for the model's outputs and ``extra`` tensors."""

    def __init__(
        self,
        model: onnx.ModelProto,
        extra: Sequence[str] = (),
        threads: int = 1,
        what: str = "model",
    ) -> None:
        probe, _ = with_outputs(model, extra, _elem_types(model) if extra else None)
        self.what = what
        self.one_at_a_time = batch_fixed_at_one(model)
        try:
            self.sess = session(probe, threads=threads, opt_level="disabled")
        except UserError:
            raise
        except Exception as exc:
            raise UserError(
                f"the {what} does not load in ONNX Runtime: {_first_line(exc)}"
            ) from None
        self.names = [o.name for o in self.sess.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(next(iter(feeds.values())))
        step = 1 if self.one_at_a_time else n
        parts: list[list[np.ndarray]] = []
        for i in range(0, n, step):
            chunk = {k: np.ascontiguousarray(v[i : i + step]) for k, v in feeds.items()}
            try:
                parts.append(self.sess.run(None, chunk))
            except Exception as exc:
                raise UserError(
                    f"the {self.what} does not run on these inputs: {_first_line(exc)}"
                ) from None
        return {
            name: np.concatenate([p[j] for p in parts]) if len(parts) > 1 else parts[0][j]
            for j, name in enumerate(self.names)
        }


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Tensor name → element type, from ONNX shape inference (empty where it fails)."""
    try:
        g = onnx.shape_inference.infer_shapes(model).graph
    except Exception:  # a model shape inference cannot read: the caller assumes float
        return {}
    return {vi.name: vi.type.tensor_type.elem_type for vi in [*g.value_info, *g.output]}


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
