"""Inputs to feed a model: its real graph inputs, seeded random tensors, tensors from an .npz.

- ``real_inputs``: the graph inputs that are not initializers (IR < 4 lists every initializer as
  an input too);
- ``random_inputs``: seeded standard-normal tensors (zeros for integer inputs) at the model's
  input shape, or their absolute values (``nonnegative``: inputs in the domain of a model that
  takes a Sqrt or Log of them); symbolic dims are 1 for the batch, the channel count the Convs
  reading the input imply for its dim 1 (``graph.shapes.implied_channels``), ``spatial`` otherwise, or
  the shape given with ``--input-shape`` (which an input of unknown rank needs); an absurd size
  is refused before anything is allocated;
- ``load_calibration``: the arrays of an ``.npz`` by input name (one array for one input), after
  checking what the file declares against the memory available.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import onnx

from onnx_sk.errors import UserError
from onnx_sk.graph.shapes import MAX_ELEMENTS, implied_channels
from onnx_sk.runtime.npz import gib, npz_headers

_NP_TYPES: dict[int, type[np.generic]] = {
    onnx.TensorProto.FLOAT: np.float32,
    onnx.TensorProto.FLOAT16: np.float16,
    onnx.TensorProto.DOUBLE: np.float64,
    onnx.TensorProto.INT64: np.int64,
    onnx.TensorProto.INT32: np.int32,
    onnx.TensorProto.UINT8: np.uint8,
    onnx.TensorProto.INT8: np.int8,
    onnx.TensorProto.BOOL: np.bool_,
}


def real_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def random_inputs(
    model: onnx.ModelProto,
    rng: np.random.Generator,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    spatial: int = 64,
    nonnegative: bool = False,
) -> dict[str, np.ndarray]:
    """Seeded inputs at the model's shape; symbolic dims: 1 for the batch, the implied channel
    count for dim 1, ``spatial`` otherwise; ``nonnegative``: |N(0, 1)| instead of N(0, 1)."""
    feeds = {}
    input_shapes = input_shapes or {}
    inputs = real_inputs(model)
    implied = implied_channels(model)
    for vi in inputs:
        t = vi.type.tensor_type
        given = input_shapes.get(vi.name) or (input_shapes.get("") if len(inputs) == 1 else None)
        if given:
            shape = list(given)
        elif not t.HasField("shape"):
            raise UserError(
                f"input {vi.name!r} has no shape (its rank is unknown): give it with "
                f"--input-shape {vi.name}:1x3x224x224"
            )
        else:
            symbolic = [1, implied.get(vi.name, spatial)]
            shape = [
                d.dim_value
                if d.HasField("dim_value") and d.dim_value > 0
                else (symbolic[i] if i < 2 else spatial)
                for i, d in enumerate(t.shape.dim)
            ]
        dtype = _NP_TYPES.get(t.elem_type)
        if dtype is None:
            raise UserError(
                f"input {vi.name!r} has an element type onnx-sk cannot feed ({t.elem_type})"
            )
        _check_feed_size(vi.name, shape, np.dtype(dtype))
        if np.issubdtype(dtype, np.floating):
            draw = rng.standard_normal(shape)
            feeds[vi.name] = (np.abs(draw) if nonnegative else draw).astype(dtype)
        else:
            feeds[vi.name] = np.zeros(shape, dtype=dtype)
    return feeds


def _check_feed_size(name: str, shape: list[int], dtype: np.dtype) -> None:
    """Refuse, before allocating, a random input too large to make (absurd dims in the model)."""
    count = math.prod(shape)
    dims = "x".join(map(str, shape))
    if count > MAX_ELEMENTS:
        raise UserError(
            f"input {name!r} of shape {dims}: {count} elements is absurdly large for a random input: refused"
        )
    need = count * (8 + dtype.itemsize)  # the float64 draw and its cast
    available = available_memory()
    if available is not None and need > available:
        raise UserError(
            f"input {name!r} of shape {dims}: a random input needs {need / 2**30:.1f} GiB, more than "
            f"the {available / 2**30:.1f} GiB of memory available: refused"
        )


def available_memory() -> int | None:
    """MemAvailable from /proc/meminfo in bytes (None where there is none)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def load_calibration(
    path: str | os.PathLike, model: onnx.ModelProto, flag: str = "--calibration"
) -> dict[str, np.ndarray]:
    """The model's input tensors from an .npz (keys = input names; one array for one input),
    loaded whole: the declared sizes are checked against the memory available first
    (``--calibration`` streams instead: :mod:`onnx_sk.runtime.calibration`)."""
    p = Path(path)
    declared = sum(h.nbytes for h in npz_headers(p, flag).values())
    available = available_memory()
    if available is not None and declared > available // 2:
        raise UserError(
            f"{flag} {p}: its arrays declare {gib(declared)}, more than half the "
            f"{gib(available)} of memory available: refused"
        )
    try:
        with np.load(p, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as exc:
        raise UserError(f"{flag} {p}: not a readable .npz file ({type(exc).__name__})") from None
    inputs = real_inputs(model)
    names = [vi.name for vi in inputs]
    if len(names) == 1 and len(arrays) == 1:
        (key, value), vi = next(iter(arrays.items())), inputs[0]
        return {vi.name: _as_input_type(value, vi, f"{flag} {p}: array {key!r}")}
    missing = [n for n in names if n not in arrays]
    if missing:
        raise UserError(
            f"{flag} {p}: no array for input(s) {', '.join(missing)} "
            f"(the file has {', '.join(arrays) or 'none'})"
        )
    return {
        vi.name: _as_input_type(arrays[vi.name], vi, f"{flag} {p}: array {vi.name!r}")
        for vi in inputs
    }


def _as_input_type(value: np.ndarray, vi: onnx.ValueInfoProto, what: str) -> np.ndarray:
    """``value`` in the input's element type: floats of another width are converted (numpy
    saves float64 by default), as ``--calibration`` does; any other mismatch is refused."""
    dtype = _NP_TYPES.get(vi.type.tensor_type.elem_type)
    if dtype is None or value.dtype == dtype:
        return value
    if np.issubdtype(value.dtype, np.floating) and np.issubdtype(dtype, np.floating):
        return value.astype(dtype)
    raise UserError(f"{what} is {value.dtype}, input {vi.name!r} takes {np.dtype(dtype)}")
