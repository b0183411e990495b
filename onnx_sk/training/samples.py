"""Unlabelled input samples for distillation: an ``.npz`` read lazily, or any iterable of dicts.

An ``.npz`` holds one array per real graph input (key = input name, first axis = samples). Arrays
stored uncompressed (``np.savez``) are memory-mapped straight out of the zip file, so only the
batches in use are read; compressed members (``np.savez_compressed``) cannot be mapped and are read
whole. An iterable of ``{input name: array}`` dicts (one sample each, or a batch with a first
axis; ONNX Runtime's ``CalibrationDataReader`` protocol, ``get_next() -> dict | None``, too) is
stacked in memory. Checked before any training: every input present, dtype equal to the model's,
every fixed dim equal to the model's, the same sample count for all inputs, no NaN/Inf (scanned in
chunks), and enough samples for the held-out split.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from onnx_sk.errors import UserError
from onnx_sk.runtime.feeds import _NP_TYPES, real_inputs

#: samples scanned per chunk when looking for NaN/Inf
_SCAN_CHUNK = 256


@dataclass(frozen=True)
class Samples:
    """The samples by input name (each array: first axis = samples; maybe memory-mapped)."""

    arrays: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values())))

    def take(self, index: np.ndarray) -> dict[str, np.ndarray]:
        """The samples at ``index``, in that order, as in-memory arrays."""
        return {k: np.ascontiguousarray(v[index]) for k, v in self.arrays.items()}


def _npz_arrays(path: Path) -> dict[str, np.ndarray]:
    """Each member of an .npz: memory-mapped when stored uncompressed, else read whole."""
    out: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                continue
            key = info.filename[: -len(".npy")]
            with zf.open(info) as fh:
                version = np.lib.format.read_magic(fh)
                read_header = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                shape, fortran, dtype = read_header(fh)
                header_len = fh.tell()
            if dtype.hasobject:
                raise UserError(f"--data {path}: array {key!r} holds Python objects: refused")
            if info.compress_type == zipfile.ZIP_STORED and not fortran and shape and shape[0]:
                with open(path, "rb") as raw:
                    raw.seek(info.header_offset)
                    local = raw.read(30)
                name_len = int.from_bytes(local[26:28], "little")
                extra_len = int.from_bytes(local[28:30], "little")
                start = info.header_offset + 30 + name_len + extra_len + header_len
                out[key] = np.memmap(path, dtype=dtype, mode="r", offset=start, shape=shape)
            else:
                with zf.open(info) as fh:
                    out[key] = np.lib.format.read_array(fh, allow_pickle=False)
    return out


def read_npz(path: str | os.PathLike, flag: str = "--data") -> dict[str, np.ndarray]:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{flag} {p}: no such file")
    try:
        return _npz_arrays(p)
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"{flag} {p}: not a readable .npz file ({type(exc).__name__})") from None


def _stack(items: Iterable[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """An iterable of input dicts (or a CalibrationDataReader) stacked along a new/first axis."""
    if hasattr(items, "get_next"):
        reader = items
        items = iter(lambda: reader.get_next(), None)  # type: ignore[attr-defined]
    parts: dict[str, list[np.ndarray]] = {}
    for item in items:
        for k, v in item.items():
            parts.setdefault(k, []).append(np.asarray(v))
    return {k: np.concatenate(v) for k, v in parts.items()}


def load_samples(
    data: str | os.PathLike | Iterable[Mapping[str, np.ndarray]],
    model: onnx.ModelProto,
    holdout: float,
    flag: str = "--data",
    holdout_flag: str = "--holdout",
) -> Samples:
    """The checked samples for ``model``'s real inputs (see the module docstring); errors name
    the options as ``flag`` and ``holdout_flag`` (``optimize --recover`` has its own)."""
    where = f"{flag} {data}" if isinstance(data, (str, os.PathLike)) else "data"
    arrays = read_npz(data, flag) if isinstance(data, (str, os.PathLike)) else _stack(data)
    inputs = real_inputs(model)
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
        _check_array(where, vi, arrays[vi.name])
        counts.add(len(arrays[vi.name]))
    if len(counts) > 1:
        raise UserError(f"{where}: the inputs have different sample counts ({sorted(counts)})")
    n = counts.pop()
    if n == 0:
        raise UserError(f"{where}: 0 samples (empty)")
    if holdout > 0 and n < 2:
        raise UserError(
            f"{where}: 1 sample cannot be split for {holdout_flag} {holdout:g} (need 2+)"
        )
    samples = Samples({vi.name: arrays[vi.name] for vi in inputs})
    _check_finite(where, samples)
    return samples


def _check_array(where: str, vi: onnx.ValueInfoProto, a: np.ndarray) -> None:
    t = vi.type.tensor_type
    want = _NP_TYPES.get(t.elem_type)
    if want is None:
        raise UserError(
            f"input {vi.name!r} has an element type onnx-sk cannot feed ({t.elem_type})"
        )
    if a.dtype != np.dtype(want):
        raise UserError(
            f"{where}: array {vi.name!r} is {a.dtype}, the model's input is {np.dtype(want)}"
        )
    if not t.HasField("shape"):
        return
    dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    if dims and dims[0] is not None and dims[0] != 1:
        raise UserError(
            f"input {vi.name!r} has its batch fixed at {dims[0]}: distill feeds a free batch or "
            "a batch fixed at 1"
        )
    shape = "x".join(map(str, a.shape))
    model_shape = "x".join("?" if d is None else str(d) for d in dims)
    if a.ndim != len(dims) or any(
        d is not None and d != s for d, s in zip(dims[1:], a.shape[1:], strict=True)
    ):
        raise UserError(
            f"{where}: array {vi.name!r} has shape {shape}; the model's input is {model_shape} "
            "(first axis = samples)"
        )


def _check_finite(where: str, samples: Samples) -> None:
    for name, a in samples.arrays.items():
        if not np.issubdtype(a.dtype, np.floating):
            continue
        for i in range(0, len(a), _SCAN_CHUNK):
            if not np.isfinite(a[i : i + _SCAN_CHUNK]).all():
                raise UserError(f"{where}: array {name!r} holds NaN or Inf values")
