"""NumPy work on worker threads, each with a single-threaded BLAS (through threadpoolctl).

The scoring engine runs its correlation matmuls one signal image per worker thread rather than one
call at a time on a multi-threaded BLAS: the max-pooling, the projection and the patch building
around each matmul (single-threaded NumPy) then run in parallel too, and a core taken by another
job slows one worker instead of stalling OpenBLAS's own threads on their barrier. For that, NumPy's
BLAS must run one thread per call while the workers run (docs/RESULTS.md has the measurements).

OpenBLAS's thread count is process-wide (pthreads layer), so the limit is set once by the calling
thread around the whole pool, not by each worker.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import functools
from collections.abc import Callable, Iterable, Iterator

import threadpoolctl

__all__ = ["blas_threads", "parallel_map"]


@functools.lru_cache(maxsize=1)
def _blas() -> threadpoolctl.ThreadpoolController:
    """The BLAS libraries loaded in this process (NumPy's among them: it is loaded by `import numpy`)."""
    return threadpoolctl.ThreadpoolController().select(user_api="blas")


@contextlib.contextmanager
def blas_threads(n: int) -> Iterator[bool]:
    """Run the block with every loaded BLAS limited to n threads; yields whether that holds.

    False when threadpoolctl finds no BLAS it can control, or the limit did not take (e.g. another
    Python thread controls OpenBLAS's process-wide pool); the block then runs with BLAS as it was.
    """
    blas = _blas()
    if not blas.lib_controllers:
        yield False
        return
    with blas.limit(limits=n):
        yield all(info["num_threads"] == n for info in blas.info())


def parallel_map(fn: Callable, items: Iterable, workers: int) -> None:
    """fn(item) for every item, on `workers` threads with a single-threaded BLAS each.

    In the calling thread, one item after another with BLAS as configured, when workers ≤ 1, when
    there is at most one item, or when BLAS cannot be limited (parallel calls into a multi-threaded
    BLAS would oversubscribe the cores). fn's results are dropped: it writes where it must.
    """
    items = list(items)
    with blas_threads(1) as limited:
        if workers > 1 and limited and len(items) > 1:
            with concurrent.futures.ThreadPoolExecutor(workers) as pool:
                list(pool.map(fn, items))  # list(): re-raises a worker's exception here
            return
    for item in items:
        fn(item)
