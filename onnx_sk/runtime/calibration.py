"""Calibration: the input activations of the planned convs on the user's data, as patches.

``--calibration FILE.npz`` holds one array per model input (keys = input names; any key when the
model has one input); the first axis of every array is the sample axis. The file is never loaded
whole (:mod:`onnx_sk.runtime.npz`): the headers are checked first (shapes against the model's
inputs, one sample count for all arrays, dtypes), then at most ``MAX_SAMPLES`` samples (the
first ones) are streamed in batches the model accepts: its fixed batch size (one sample at a time
for a batch fixed at 1; samples past the last full batch are not used), else up to ``MAX_BATCH``
samples and ``BATCH_BYTES`` of input per batch. Non-finite data is refused.

The original model runs in ONNX Runtime (optimisations disabled, so every tensor exists) with
every planned conv's input added as a graph output, one batch at a time; from each batch's input
activation ``x  # [n, C, H, W]`` an equal share of ``max_patches`` output positions is drawn
(seeded), and their receptive fields become the columns of ``L  # [C·kh·kw, P]``
(:func:`onnx_sk.maths.patches.patches`), so ``||E·L||_F²`` is the mean squared output error of
a kernel error ``E``. Memory: one batch of inputs and activations, and at most about
``max_patches`` columns per conv.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import onnx

from onnx_sk.errors import UserError
from onnx_sk.graph.convs import ConvSite
from onnx_sk.graph.tensors import with_outputs
from onnx_sk.maths.patches import patches
from onnx_sk.runtime.feeds import available_memory, real_inputs
from onnx_sk.runtime.npz import NpyHeader, NpzStream, gib, npz_headers
from onnx_sk.runtime.session import session

DEFAULT_MAX_PATCHES = 2048
#: samples read from the file, at most (the first ones)
MAX_SAMPLES = 256
#: samples per batch when the model's batch is free, at most, and input bytes per such batch
MAX_BATCH = 32
BATCH_BYTES = 64 * 2**20
#: the stated budget in words (``--calibration``'s help and the README say the same)
BUDGET = (
    f"the first {MAX_SAMPLES} samples at most, in batches the model accepts (its fixed batch, "
    f"else up to {MAX_BATCH} samples and {BATCH_BYTES // 2**20} MiB)"
)


def _dims(dims: list[int | str]) -> str:
    return "x".join(map(str, dims)) or "()"


def _input_dims(vi: onnx.ValueInfoProto) -> list[int | str] | None:
    """The input's dims (ints, or the names of symbolic ones); None when it declares no shape."""
    if not vi.type.tensor_type.HasField("shape"):
        return None
    return [
        d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
        for d in vi.type.tensor_type.shape.dim
    ]


def _first_dim(vi: onnx.ValueInfoProto) -> list[int | str]:
    return (_input_dims(vi) or [])[:1]


def _arrays(
    headers: dict[str, NpyHeader], inputs: list[onnx.ValueInfoProto], where: str
) -> list[NpyHeader]:
    """The array for every input, in input order (one array serves the only input)."""
    names = [vi.name for vi in inputs]
    if len(names) == 1 and len(headers) == 1:
        return list(headers.values())
    missing = [n for n in names if n not in headers]
    if missing:
        raise UserError(
            f"{where}: no array for input(s) {', '.join(missing)} "
            f"(the file has {', '.join(headers) or 'none'})"
        )
    return [headers[n] for n in names]


def _check_array(h: NpyHeader, vi: onnx.ValueInfoProto, where: str) -> np.dtype:
    """The array fits the input (rank, static non-batch dims, dtype); returns the input dtype."""
    want = _input_dims(vi)
    if not h.shape:
        raise UserError(f"{where}: array {h.name!r} has no sample axis (a scalar)")
    if want is not None and (
        len(h.shape) != len(want)
        or any(
            isinstance(d, int) and d > 0 and d != got
            for d, got in zip(want[1:], h.shape[1:], strict=True)
        )
    ):  # a model input without a declared shape takes what ONNX Runtime accepts
        raise UserError(
            f"{where}: array {h.name!r} has samples of shape {_dims(list(h.shape[1:]))} but input "
            f"{vi.name!r} takes {_dims(want[1:])} (the first axis is the sample axis)"
        )
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type))
    floats = np.issubdtype(dtype, np.floating) and np.issubdtype(h.dtype, np.floating)
    if dtype != h.dtype and not floats:
        raise UserError(f"{where}: array {h.name!r} is {h.dtype}, input {vi.name!r} takes {dtype}")
    return dtype


def _batch(arrays: list[NpyHeader], inputs: list[onnx.ValueInfoProto], where: str) -> int:
    """The batch size to feed: the model's fixed batch, else as many as the budget allows."""
    fixed = {d for vi in inputs for d in _first_dim(vi) if isinstance(d, int) and d > 0}
    sample = sum(h.sample_bytes for h in arrays)
    if len(fixed) > 1:
        raise UserError(f"{where}: the model's inputs have different fixed batch sizes {fixed}")
    if fixed:
        batch = fixed.pop()
        available = available_memory()
        if available is not None and batch * sample > available // 4:
            raise UserError(
                f"{where}: one batch of {batch} samples (the model's fixed batch) declares "
                f"{gib(batch * sample)}, over a quarter of the {gib(available)} of memory "
                f"available: refused"
            )
        return batch
    if sample > BATCH_BYTES:
        raise UserError(
            f"{where}: one sample declares {gib(sample)}, over the {gib(BATCH_BYTES)} "
            f"calibration budget per batch"
        )
    return max(1, min(MAX_BATCH, BATCH_BYTES // max(1, sample)))


def _probe(model: onnx.ModelProto, wanted: list[ConvSite], feeds: set[str]) -> onnx.ModelProto:
    """The model with every wanted conv's input added as a graph output."""
    return with_outputs(model, [s.node.input[0] for s in wanted if s.node.input[0] not in feeds])[0]


def calibration_patches(
    path: str | os.PathLike,
    model: onnx.ModelProto,
    sites: list[ConvSite],
    seed: int = 0,
    max_patches: int = DEFAULT_MAX_PATCHES,
    flag: str = "--calibration",
) -> dict[str, np.ndarray]:
    """conv output name → its input patches ``L`` on the file's samples (module docstring)."""
    where = f"{flag} {Path(path)}"
    inputs = real_inputs(model)
    arrays = _arrays(npz_headers(path, flag), inputs, where)
    dtypes = [_check_array(h, vi, where) for h, vi in zip(arrays, inputs, strict=True)]
    counts = {h.name: h.shape[0] for h in arrays}
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{k}: {v}" for k, v in counts.items())
        raise UserError(f"{where}: the arrays have different sample counts ({listed})")
    n = arrays[0].shape[0]
    if n == 0:
        raise UserError(f"{where}: array {arrays[0].name!r} has no samples")
    batch = _batch(arrays, inputs, where)
    fixed = any(isinstance(d, int) and d > 0 for vi in inputs for d in _first_dim(vi))
    if fixed and n < batch:
        raise UserError(f"{where}: {n} samples, but the model's batch is fixed at {batch}")
    used = min(n, MAX_SAMPLES)
    used -= used % batch if fixed else 0
    for h in arrays:
        if h.fortran_order and h.nbytes > BATCH_BYTES:
            raise UserError(
                f"{where}: array {h.name!r} is stored in Fortran order ({gib(h.nbytes)}), which "
                f"cannot be read by samples: save it C-ordered"
            )
    wanted = [s for s in sites if s.spec is not None and s.spec.spatial_rank == 2 and not s.scope]
    batches = math.ceil(used / batch)
    rng = np.random.default_rng(seed)
    names = [vi.name for vi in inputs]
    try:
        sess = session(_probe(model, wanted, set(names)), opt_level="disabled")
    except Exception as exc:
        raise UserError(
            f"{where}: the model does not load in ONNX Runtime: {_first(exc)}"
        ) from None
    outputs = [o.name for o in sess.get_outputs()]
    columns: dict[str, list[np.ndarray]] = {s.node.output[0]: [] for s in wanted}
    with NpzStream(path, arrays, where) as stream:
        for k, values in enumerate(stream.batches(batch, used)):
            feeds = {}
            for name, h, v, dtype in zip(names, arrays, values, dtypes, strict=True):
                if np.issubdtype(v.dtype, np.floating) and not np.isfinite(v).all():
                    raise UserError(
                        f"{where}: calibration data contains NaN/Inf (array {h.name!r}, "
                        f"samples {k * batch}..{k * batch + len(v) - 1})"
                    )
                feeds[name] = v.astype(dtype, copy=False)
            try:
                acts = dict(zip(outputs, sess.run(None, feeds), strict=False))
            except Exception as exc:
                raise UserError(
                    f"{where}: the model does not run on these inputs: {_first(exc)}"
                ) from None
            acts.update(feeds)
            for s in wanted:
                x = np.asarray(acts[s.node.input[0]])
                assert s.spec is not None
                share = max_patches // batches + (k < max_patches % batches)  # sums to max
                columns[s.node.output[0]].append(patches(s.spec, x, share, rng, normalise=False))
    out = {}
    for key, cols in columns.items():
        joined = np.concatenate(cols, axis=1)
        out[key] = joined / math.sqrt(max(1, joined.shape[1]))
    return out


def _first(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
