"""Worker processes for per-conv work that is a pure function of its arguments (weight fits).

:func:`ordered_map` runs ``fn`` over the items in ``workers()`` processes when there is more
than one core to use and more than one item, else in this process; either way the results come
back in the items' order and each call runs with one BLAS thread
(:func:`onnx_sk.runtime.blas.single_blas_thread`), so the results are the same bytes whatever
the number of workers (the fits draw no random numbers). Items are handed out largest first
(``costs``) so that one big fit does not start last.

``workers()`` is the number of cores this process may run on (``os.sched_getaffinity``), or
the ``ONNX_SK_WORKERS`` environment variable when set (``1``: no worker processes). On Linux
the workers are forked (nothing to import); elsewhere they are spawned, which imports onnx-sk
once per worker.

Latency measurements are never run here: concurrent processes would time each other's load.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

from onnx_sk.errors import UserError
from onnx_sk.runtime.blas import single_blas_thread

WORKERS_ENV = "ONNX_SK_WORKERS"
PR_SET_PDEATHSIG = 1  # linux/prctl.h

T = TypeVar("T")
R = TypeVar("R")


def workers() -> int:
    """How many worker processes per-conv work may use (1: none)."""
    given = os.environ.get(WORKERS_ENV, "").strip()
    if given:
        try:
            n = int(given)
        except ValueError:
            n = 0
        if n < 1:
            raise UserError(f"{WORKERS_ENV}={given!r}: expected a whole number of processes >= 1")
        return n
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _die_with_parent() -> None:
    """Worker initializer: on Linux, ask the kernel to end this worker when the process that
    forked it ends (killed mid-run, it would otherwise finish its fit first)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        except (OSError, AttributeError):  # no prctl: the worker ends after its current item
            pass


def _one_thread(fn: Callable[[T], R], item: T) -> R:
    with single_blas_thread():
        return fn(item)


def ordered_map(
    fn: Callable[[T], R],
    items: Sequence[T],
    costs: Sequence[float] | None = None,
    done: Callable[[int, int, int], None] | None = None,
) -> list[R]:
    """``[fn(item) for item in items]``, in worker processes when it pays (module docstring).

    ``fn`` must be a module-level function and items and results picklable. ``done(finished,
    total, index)`` is called in this process as each item's result arrives."""
    n = min(workers(), len(items))
    if n <= 1:
        out = []
        for k, item in enumerate(items):
            out.append(_one_thread(fn, item))
            if done is not None:
                done(k + 1, len(items), k)
        return out
    order = sorted(range(len(items)), key=lambda i: -costs[i] if costs is not None else 0)
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    results: list[R | None] = [None] * len(items)
    ex = concurrent.futures.ProcessPoolExecutor(
        n, multiprocessing.get_context(method), initializer=_die_with_parent
    )
    try:
        futures = {ex.submit(_one_thread, fn, items[i]): i for i in order}
        for k, fut in enumerate(concurrent.futures.as_completed(futures)):
            i = futures[fut]
            results[i] = fut.result()
            if done is not None:
                done(k + 1, len(items), i)
    finally:  # on an error, the items not started yet are dropped, not run
        ex.shutdown(wait=True, cancel_futures=True)
    return results  # type: ignore[return-value]  # every slot filled above
