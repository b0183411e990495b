"""DATA of ``distill`` and ``optimize --recover``: which form it is, and the checked samples.

A path to a folder: images (or files for ``--preprocess``; :mod:`onnx_sk.training.images`); a
path to a file: an ``.npz``; anything else (the Python API): an iterable of input dicts or a
``CalibrationDataReader`` (:mod:`onnx_sk.training.samples`). The image options apply to a folder
only. Checked before any training: every input present, dtype and fixed dims equal to the
model's, the same sample count for all inputs, no NaN/Inf, at least one sample, and two or more
when some are held out.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnx_sk.errors import UserError
from onnx_sk.options import DataOptions
from onnx_sk.runtime.feeds import real_inputs
from onnx_sk.training import images
from onnx_sk.training.samples import (
    ArraySamples,
    Samples,
    check_array,
    check_finite,
    check_input,
    read_npz,
    stack,
)

Data = str | os.PathLike | Iterable[Mapping[str, np.ndarray]] | Any


def validate(data: Data, opts: DataOptions | None, flag: str = "--data") -> None:
    """What can be checked before any model is read: the path exists, the options parse."""
    opts = opts or DataOptions()
    images.validate(opts)
    if isinstance(data, (str, os.PathLike)) and not Path(data).exists():
        raise UserError(f"{flag} {data}: no such file")


def load_samples(
    data: Data,
    model: onnx.ModelProto,
    holdout: float,
    flag: str = "--data",
    holdout_flag: str = "--holdout",
    opts: DataOptions | None = None,
) -> Samples:
    """The checked samples for ``model``'s real inputs (see the module docstring); errors name
    the options as ``flag`` and ``holdout_flag`` (``optimize --recover`` has its own)."""
    opts = opts or DataOptions()
    validate(data, opts, flag)
    inputs = real_inputs(model)
    for vi in inputs:
        check_input(vi)
    path = Path(data) if isinstance(data, (str, os.PathLike)) else None
    where = f"{flag} {data}" if path is not None else "data"
    if path is not None and path.is_dir():
        samples: Samples = images.folder_samples(path, inputs, opts, where)
    else:
        if images.given(opts):
            what = "an .npz file" if path is not None else "not a folder"
            raise UserError(
                f"{', '.join(images.given(opts))}: for a folder of images; {where} is {what}"
            )
        arrays = read_npz(path, flag) if path is not None else stack(data, inputs)
        samples = _checked_arrays(where, arrays, inputs)
    n = len(samples)
    if n == 0:
        raise UserError(f"{where}: 0 samples (empty)")
    if holdout > 0 and n < 2:
        raise UserError(
            f"{where}: 1 sample cannot be split for {holdout_flag} {holdout:g} (need 2+)"
        )
    return samples


def _checked_arrays(
    where: str, arrays: dict[str, np.ndarray], inputs: list[onnx.ValueInfoProto]
) -> ArraySamples:
    if not arrays:
        raise UserError(f"{where}: no arrays (empty)")
    missing = [vi.name for vi in inputs if vi.name not in arrays]
    if missing:
        raise UserError(
            f"{where}: no array for input(s) {', '.join(missing)} "
            f"(it has {', '.join(sorted(arrays))})"
        )
    counts = set()
    for vi in inputs:
        check_array(where, vi, arrays[vi.name])
        counts.add(len(arrays[vi.name]))
    if len(counts) > 1:
        raise UserError(f"{where}: the inputs have different sample counts ({sorted(counts)})")
    samples = ArraySamples({vi.name: arrays[vi.name] for vi in inputs})
    if len(samples):
        for name, a in samples.arrays.items():
            check_finite(where, name, a)
    return samples
