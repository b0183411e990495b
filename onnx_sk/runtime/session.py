"""ONNX Runtime sessions: explicit providers, fixed threads, a chosen optimisation level.

onnxruntime is imported on first use (it is slow to import and may log on import).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np
import onnx

from onnx_sk.errors import UserError
from onnx_sk.graph.save import save_model
from onnx_sk.graph.tensors import is_large

if TYPE_CHECKING:
    import onnxruntime

OPT_LEVELS = {
    "disabled": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


#: ORT's log severity for sessions and its default logger: 4 (FATAL) keeps its own coloured
#: ``[E:onnxruntime:...]`` lines off stderr; every ORT failure reaches the user as an exception,
#: turned into one ``error:`` line
LOG_SEVERITY = 4


def _ort() -> ModuleType:
    """onnxruntime, imported on first use (it is slow to import and may log on import), with its
    default logger silenced (``LOG_SEVERITY``)."""
    import onnxruntime

    onnxruntime.set_default_logger_severity(LOG_SEVERITY)
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
) -> onnxruntime.InferenceSession:
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
    so.log_severity_level = LOG_SEVERITY
    so.enable_cpu_mem_arena = arena
    keep = []  # ORT reads these OrtValues (and their arrays) for the session's whole life
    for name, value in (overrides or {}).items():
        keep.append(ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value)))
        so.add_initializer(name, keep[-1])
    sess = _open(ort, model, so, providers, large)
    sess._onnx_sk_keep = keep
    return sess


def _open(
    ort: ModuleType,
    model: onnx.ModelProto | str | os.PathLike,
    so: onnxruntime.SessionOptions,
    providers: list[str],
    large: bool | None,
) -> onnxruntime.InferenceSession:
    if isinstance(model, onnx.ModelProto):
        if is_large(model, large):
            with tempfile.TemporaryDirectory() as tmp:
                path = save_model(model, Path(tmp) / "model.onnx", external_data=True)
                return ort.InferenceSession(str(path), so, providers=providers)
        return ort.InferenceSession(model.SerializeToString(), so, providers=providers)
    return ort.InferenceSession(str(model), so, providers=providers)


def with_cpu_fallback(provider: str) -> list[str]:
    """The named provider first; the CPU provider behind it for the nodes it does not take."""
    return [provider] if provider == "CPUExecutionProvider" else [provider, "CPUExecutionProvider"]


def warm_session(
    model: onnx.ModelProto,
    provider: str,
    threads: int,
    feeds: dict[str, np.ndarray],
    what: str,
    runs: int = 1,
) -> onnxruntime.InferenceSession:
    """A session of ``model`` as deployed (ORT_ENABLE_ALL) on ``provider``, run ``runs`` times
    on ``feeds``; a provider that cannot build or run it is a UserError naming ``what``."""
    try:
        sess = session(model, with_cpu_fallback(provider), threads, "all")
        for _ in range(runs):
            sess.run(None, feeds)
        return sess
    except UserError:
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{provider} cannot run {what}: {first}") from None


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
