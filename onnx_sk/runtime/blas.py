"""One BLAS thread for the weight fits: many small matrix products, where threads only contend.

Measured on the shared 2-core machines (bench/bench_init.py, ResNet-50, PW+DW+PW): the CP-ALS
fits took 460 s with OpenBLAS's default threads on a busy machine and 22 s with one thread.
``threadpoolctl`` (a dependency) limits the BLAS pool for the duration of the block only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def single_blas_thread() -> Iterator[None]:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # without it, the fits still run, with the default thread pool
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield
