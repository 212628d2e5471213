import pytest

from ase_flatten import threads
from ase_flatten.threads import thread_map


def test_one_item_runs_here_without_asking_threadpoolctl(monkeypatch):
    """A one-frame call (an MD step's domain distance, its cluster) must not pay
    threadpoolctl's library scan, about a millisecond a call."""

    def scan(*args, **kwargs):
        raise AssertionError("threadpoolctl asked for one item")

    monkeypatch.setattr(threads, "threadpool_info", scan)
    monkeypatch.setattr(threads, "threadpool_limits", scan)
    assert thread_map(lambda x: 2 * x, [21]) == [42]
    assert thread_map(lambda x: x, []) == []


@pytest.mark.parametrize("blas", [1, 2])
def test_results_in_order_on_any_thread_count(blas):
    from threadpoolctl import threadpool_limits

    with threadpool_limits(blas, user_api="blas"):
        assert thread_map(lambda x: x * x, range(50)) == [x * x for x in range(50)]
