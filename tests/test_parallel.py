"""Worker threads with a single-threaded BLAS (reid_tf.parallel), as the scoring engine uses them."""
import threading

import numpy as np
import pytest
import threadpoolctl

from reid_tf import parallel


def blas_thread_counts():
    return [info["num_threads"] for info in threadpoolctl.threadpool_info() if info["user_api"] == "blas"]


def test_blas_threads_limits_numpys_blas_inside_the_block_only():
    before = blas_thread_counts()
    assert before, "NumPy's BLAS is not visible to threadpoolctl"
    with parallel.blas_threads(1) as limited:
        assert limited
        assert blas_thread_counts() == [1] * len(before)
    assert blas_thread_counts() == before


def test_parallel_map_runs_every_item_on_single_threaded_blas_workers():
    seen, counts, lock = [], [], threading.Lock()
    a = np.ones((64, 64), np.float32)

    def work(i):
        total = float((a @ a).sum())  # a BLAS call inside the worker
        with lock:
            seen.append((i, total, threading.current_thread() is threading.main_thread()))
            counts.append(blas_thread_counts())

    parallel.parallel_map(work, range(5), workers=2)
    assert sorted(i for i, _, _ in seen) == list(range(5))
    assert all(total == 64.0 ** 3 and not on_main for _, total, on_main in seen)
    assert all(set(c) == {1} for c in counts)


def test_parallel_map_with_one_worker_runs_in_order_on_the_calling_thread():
    before, seen = blas_thread_counts(), []
    parallel.parallel_map(lambda i: seen.append((i, threading.current_thread(), blas_thread_counts())), range(3), 1)
    assert [i for i, _, _ in seen] == [0, 1, 2]
    assert all(t is threading.current_thread() and c == before for _, t, c in seen)


def test_parallel_map_falls_back_to_the_calling_thread_without_a_blas_limit(monkeypatch):
    monkeypatch.setattr(parallel, "_blas", lambda: threadpoolctl.ThreadpoolController().select(user_api="none"))
    seen = []
    parallel.parallel_map(lambda i: seen.append(threading.current_thread()), range(3), workers=2)
    assert seen == [threading.current_thread()] * 3


def test_a_workers_exception_reaches_the_caller():
    def fail(i):
        if i == 2:
            raise RuntimeError("item 2")

    with pytest.raises(RuntimeError, match="item 2"):
        parallel.parallel_map(fail, range(4), workers=2)
