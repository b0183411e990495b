"""The machine a measurement was taken on: CPU identity, versions, and process memory.

``cpu_identity()`` names what decides ONNX Runtime's kernels on a CPU: the model name, the
architecture and the widest SIMD extension (AVX-512 machines use 16-channel NCHWc blocks, AVX2
ones 8; Arm has NEON/SVE). A latency table measured on one identity is never reused on another.

Memory (Linux): ``peak_rss_delta`` resets the process's peak resident set (``VmHWM``, by
writing ``5`` to ``/proc/self/clear_refs``) and reports ``VmHWM`` after the block minus
``VmRSS`` before it: the peak extra memory the block needed. Where the reset is not allowed it
falls back to the change in ``VmRSS`` (a lower bound), and says which it measured.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from collections.abc import Callable
from contextlib import suppress
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
_SIMD = ("avx512f", "avx2", "avx", "sve2", "sve", "asimd", "neon")


@lru_cache(maxsize=1)
def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip().lower(), value.strip())
    return info


def cpu_model() -> str:
    """'AMD EPYC 9654 96-Core Processor', or the best name the platform gives."""
    info = _cpuinfo()
    for key in ("model name", "hardware", "cpu model", "processor"):
        value = info.get(key, "")
        if value and not value.isdigit():
            return value
    return platform.processor() or platform.machine() or "unknown CPU"


def simd() -> str:
    flags = set((_cpuinfo().get("flags") or _cpuinfo().get("features") or "").split())
    return next((f for f in _SIMD if f in flags), "none")


def cpu_identity() -> str:
    """'AMD EPYC (x86_64, avx512f)': the key a latency table is bound to."""
    return f"{cpu_model()} ({platform.machine()}, {simd()})"


def onnx_sk_version() -> str:
    """The installed onnx-sk's version (its metadata; the package's ``__version__``)."""
    try:
        return importlib.metadata.version("onnx-sk")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def environment() -> dict:
    """Versions and machine for the header of a benchmark."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    return {
        "onnx_sk": onnx_sk_version(),
        "onnxruntime": ort.__version__,
        "onnx": onnx.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_identity": cpu_identity(),
        "cpu_count": os.cpu_count(),
        "available_providers": ort.get_available_providers(),
    }


def _status_kib(field: str) -> int | None:
    with suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_delta(block: Callable[[], T]) -> tuple[T, int | None, str]:
    """Run ``block``; return its result, the extra bytes it needed, and how that was measured."""
    before = _status_kib("VmRSS")
    reset = before is not None and _reset_peak()
    result = block()
    if before is None:
        return result, None, "unavailable (no /proc/self/status)"
    if reset:
        peak = _status_kib("VmHWM")
        if peak is not None:
            return result, max(0, peak - before) * 1024, "peak RSS (VmHWM) minus RSS before"
    after = _status_kib("VmRSS") or before
    return result, max(0, after - before) * 1024, "RSS after minus RSS before"
