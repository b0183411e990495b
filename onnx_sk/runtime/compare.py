"""``compare``: how far apart two models' outputs are on the same inputs (ONNX Runtime, CPU).

For every output (matched by name; both models must have the same outputs) over all samples:
``max_abs_diff`` and ``mean_abs_diff`` of ``b − a``; ``cosine`` = <a, b> / (|a|·|b|) of the
flattened outputs; ``top1_agreement`` = the fraction of samples whose argmax over axis 1 is the
same (outputs with at least 2 axes and more than one class only, else ``None``). Inputs come
from an .npz (keys = input names) or are ``samples`` seeded standard-normal draws, one per run,
at the model's input shape (symbolic dims: batch 1, others from ``input_shapes`` or 224).
Sessions run with graph optimisations disabled, one thread.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import numpy as np
import onnx

from onnx_sk.errors import UserError
from onnx_sk.graph.load import load_model
from onnx_sk.options import check_seed
from onnx_sk.runtime.feeds import load_calibration, random_inputs
from onnx_sk.runtime.session import session


@dataclass(frozen=True)
class OutputComparison:
    name: str
    shape: list
    max_abs_diff: float
    mean_abs_diff: float
    cosine: float
    top1_agreement: float | None


def _run_all(model: onnx.ModelProto, feeds_list: list[dict]) -> tuple[list[str], list[list]]:
    try:
        sess = session(model, opt_level="disabled")
        names = [o.name for o in sess.get_outputs()]
        return names, [sess.run(None, feeds) for feeds in feeds_list]
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"a model does not run in ONNX Runtime on these inputs: {first}") from None


def _top1(a: np.ndarray, b: np.ndarray) -> float | None:
    if a.ndim < 2 or a.shape[1] < 2:
        return None
    return float(np.mean(np.argmax(a, axis=1) == np.argmax(b, axis=1)))


@dataclass(frozen=True)
class Difference:
    """How far ``got`` is from ``want`` (float64): max and mean |got − want|, the cosine of the
    flattened tensors, and the output scale max |want|."""

    max_abs_diff: float
    mean_abs_diff: float
    cosine: float
    scale: float


def difference(want: np.ndarray, got: np.ndarray) -> Difference:
    """The :class:`Difference` of two arrays of the same shape (also used by verification)."""
    a64, b64 = want.astype(np.float64).ravel(), got.astype(np.float64).ravel()
    diff = np.abs(b64 - a64)
    norm = float(np.linalg.norm(a64) * np.linalg.norm(b64))
    cosine = float(a64 @ b64 / norm) if norm else float(np.array_equal(a64, b64))
    return Difference(
        float(diff.max()) if diff.size else 0.0,
        float(diff.mean()) if diff.size else 0.0,
        cosine,
        float(np.max(np.abs(a64))) if a64.size else 0.0,
    )


def compare_outputs(
    names: list[str], want: list[np.ndarray], got: list[np.ndarray]
) -> list[OutputComparison]:
    out = []
    for name, a, b in zip(names, want, got, strict=False):
        if a.shape != b.shape:
            raise UserError(
                f"output {name!r} has shape {list(a.shape)} in A but {list(b.shape)} in B"
            )
        d = difference(a, b)
        out.append(
            OutputComparison(
                name, list(a.shape), d.max_abs_diff, d.mean_abs_diff, d.cosine, _top1(a, b)
            )
        )
    return out


def compare(
    a: str | os.PathLike | onnx.ModelProto,
    b: str | os.PathLike | onnx.ModelProto,
    inputs: str | os.PathLike | None = None,
    samples: int = 8,
    seed: int = 0,
    input_shapes: dict | None = None,
) -> list[OutputComparison]:
    """Compare the outputs of models ``a`` and ``b`` on the same inputs, output by output."""
    if samples < 1:
        raise UserError(f"--samples {samples}: expected a positive integer")
    check_seed(seed)
    ma, mb = load_model(a).model, load_model(b).model
    if inputs is not None:
        feeds_list = [load_calibration(inputs, ma, "--inputs")]
    else:
        rng = np.random.default_rng(seed)
        feeds_list = [random_inputs(ma, rng, input_shapes, 224) for _ in range(samples)]
    names_a, runs_a = _run_all(ma, feeds_list)
    names_b, runs_b = _run_all(mb, feeds_list)
    if names_a != names_b:
        raise UserError(f"the models have different outputs: {names_a} vs {names_b}")
    want = [np.concatenate([r[i] for r in runs_a]) for i in range(len(names_a))]
    got = [np.concatenate([r[i] for r in runs_b]) for i in range(len(names_b))]
    return compare_outputs(names_a, want, got)


def to_dict(rows: list[OutputComparison]) -> dict:
    return {"outputs": [asdict(r) for r in rows]}
