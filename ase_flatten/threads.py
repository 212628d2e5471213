"""Python threads over independent blocks of numpy work, one BLAS thread each.

NumPy's ufuncs, BLAS and scikit-learn's Cython loops release the GIL, so blocks of
a large array run in parallel on Python threads. Each thread's BLAS then runs on
one thread, so the machine is not oversubscribed. The thread count is what
BLAS may use now (``OMP_NUM_THREADS`` and the like): setting it to 1 runs
everything in the calling thread, as before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from threadpoolctl import threadpool_info, threadpool_limits

T = TypeVar("T")
R = TypeVar("R")


def blas_threads() -> int:
    """Threads BLAS may use now (OMP_NUM_THREADS and the like), at least 1."""
    counts = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    return max(counts, default=1)


def thread_map(func: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """``[func(item) for item in items]`` on :func:`blas_threads` threads.

    The results come in the order of ``items``. On the threads, BLAS runs on one
    thread each, so ``func`` gives the same numbers on any thread count when its
    own arithmetic does not depend on it (a seeded KMeans, a block of a
    product); OpenMP is the caller's to limit. With one item, or one BLAS
    thread, ``func`` runs in the calling thread and threadpoolctl is not asked
    (reading the loaded libraries costs about a millisecond: too much for the
    one-frame calls of an MD step).
    """
    items = list(items)
    n_threads = min(blas_threads(), len(items)) if len(items) > 1 else 1
    if n_threads == 1:
        return [func(item) for item in items]
    with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(n_threads) as pool:
        return list(pool.map(func, items))
