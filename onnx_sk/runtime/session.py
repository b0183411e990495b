"""ONNX Runtime sessions and inputs: explicit providers, fixed threads, seeded random inputs."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx

from onnx_sk.errors import UserError
from onnx_sk.graph.save import save_model
from onnx_sk.graph.tensors import is_large
from onnx_sk.graph.shapes import MAX_ELEMENTS

OPT_LEVELS = {
    "disabled": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}
_NP_TYPES = {
    onnx.TensorProto.FLOAT: np.float32,
    onnx.TensorProto.FLOAT16: np.float16,
    onnx.TensorProto.DOUBLE: np.float64,
    onnx.TensorProto.INT64: np.int64,
    onnx.TensorProto.INT32: np.int32,
    onnx.TensorProto.UINT8: np.uint8,
    onnx.TensorProto.INT8: np.int8,
    onnx.TensorProto.BOOL: np.bool_,
}


def _ort():
    """onnxruntime, imported on first use (it is slow to import and may log on import)."""
    import onnxruntime

    return onnxruntime


def check_providers(providers: list[str]) -> list[str]:
    ort = _ort()
    available = ort.get_available_providers()
    for p in providers:
        if p not in available:
            raise UserError(
                f"execution provider {p!r} is not available in this onnxruntime "
                f"({ort.__version__}); available: {', '.join(available)}"
            )
    return providers


def session(
    model: onnx.ModelProto | str | os.PathLike,
    providers: list[str] | None = None,
    threads: int = 1,
    opt_level: str = "disabled",
    profile_prefix: str | None = None,
    large: bool | None = None,
    overrides: dict[str, np.ndarray] | None = None,
    arena: bool = True,
) -> onnxruntime.InferenceSession:  # noqa: F821
    """A session with explicit providers, thread count and optimisation level.

    ``profile_prefix``: turn on ONNX Runtime's profiler, writing ``<prefix>_<date>.json``
    (``end_profiling()`` returns the file). ``overrides``: initializer values used instead of
    the model's, without copying the model (the arrays must outlive the session).
    ``arena=False`` returns memory to the system when the session goes (one-shot sessions).
    """
    ort = _ort()
    providers = check_providers(providers or ["CPUExecutionProvider"])
    so = ort.SessionOptions()
    if profile_prefix is not None:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPT_LEVELS[opt_level])
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    so.enable_cpu_mem_arena = arena
    keep = []  # ORT reads these OrtValues (and their arrays) for the session's whole life
    for name, value in (overrides or {}).items():
        keep.append(ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value)))
        so.add_initializer(name, keep[-1])
    sess = _open(ort, model, so, providers, large)
    sess._onnx_sk_keep = keep
    return sess


def _open(ort, model, so, providers: list[str], large: bool | None):
    if isinstance(model, onnx.ModelProto):
        if is_large(model, large):
            with tempfile.TemporaryDirectory() as tmp:
                path = save_model(model, Path(tmp) / "model.onnx", external_data=True)
                return ort.InferenceSession(str(path), so, providers=providers)
        return ort.InferenceSession(model.SerializeToString(), so, providers=providers)
    return ort.InferenceSession(str(model), so, providers=providers)


def real_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def random_inputs(
    model: onnx.ModelProto,
    rng: np.random.Generator,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    spatial: int = 64,
) -> dict[str, np.ndarray]:
    """Seeded inputs at the model's shape; symbolic dims: 1 for the batch, ``spatial`` otherwise."""
    feeds = {}
    input_shapes = input_shapes or {}
    inputs = real_inputs(model)
    for vi in inputs:
        t = vi.type.tensor_type
        given = input_shapes.get(vi.name) or (input_shapes.get("") if len(inputs) == 1 else None)
        if given:
            shape = list(given)
        else:
            shape = [
                d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (1 if i == 0 else spatial)
                for i, d in enumerate(t.shape.dim)
            ]
        dtype = _NP_TYPES.get(t.elem_type)
        if dtype is None:
            raise UserError(f"input {vi.name!r} has an element type onnx-sk cannot feed ({t.elem_type})")
        _check_feed_size(vi.name, shape, np.dtype(dtype))
        if np.issubdtype(dtype, np.floating):
            feeds[vi.name] = rng.standard_normal(shape).astype(dtype)
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
    available = _available_memory()
    if available is not None and need > available:
        raise UserError(
            f"input {name!r} of shape {dims}: a random input needs {need / 2**30:.1f} GiB, more than "
            f"the {available / 2**30:.1f} GiB of memory available: refused"
        )


def _available_memory() -> int | None:
    """MemAvailable from /proc/meminfo in bytes (None where there is none)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def release_memory() -> None:
    """Hand freed heap pages back to the OS (glibc keeps them after a large session is gone)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name:
        try:
            ctypes.CDLL(name).malloc_trim(0)
        except (OSError, AttributeError):  # not glibc
            pass
