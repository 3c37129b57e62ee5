"""workshop_utils.engine.parallel: calls run at the same time, results in order, errors reach the caller."""

import sys
import threading

import pytest
import torch

from workshop_utils.engine import parallel

RUNNERS = [pytest.param(True, id="torch-openmp"), pytest.param(False, id="thread-pool")]


def meet(barrier, value):
    """Returns only once every call of the region has arrived: fails unless the calls overlap."""
    barrier.wait(timeout=10)
    return value, threading.get_ident()


@pytest.mark.parametrize("use_openmp", RUNNERS)
def test_calls_run_at_the_same_time_on_different_threads(use_openmp):
    barrier = threading.Barrier(2)
    results = parallel.in_parallel([(meet, (barrier, "a")), (meet, (barrier, "b"))], use_openmp=use_openmp)
    assert [value for value, _ in results] == ["a", "b"]
    assert results[0][1] != results[1][1]


@pytest.mark.parametrize("use_openmp", RUNNERS)
def test_an_error_in_a_call_reaches_the_caller(use_openmp):
    def fail():
        raise ValueError("from a worker")

    with pytest.raises(ValueError, match="from a worker"):
        parallel.in_parallel([(abs, (-1,)), (fail, ())], use_openmp=use_openmp)
    assert parallel.in_parallel([(abs, (-1,)), (abs, (-2,))], use_openmp=use_openmp) == [1, 2]  # still usable


def test_a_nested_call_runs_its_calls_in_order():
    def nested(value):
        return parallel.in_parallel([(abs, (value,)), (abs, (value - 1,))])

    assert parallel.in_parallel([(nested, (-3,)), (nested, (-5,))]) == [[3, 4], [5, 6]]


def test_one_call_runs_in_the_calling_thread():
    assert parallel.in_parallel([(threading.get_ident, ())]) == [threading.get_ident()]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the OpenMP region is used on Linux only")
def test_torch_libgomp_is_found_where_torch_uses_it():
    uses_libgomp = any("libgomp" in line for line in open("/proc/self/maps") if "torch" in line)
    assert "OpenMP" in torch.__config__.parallel_info()
    assert parallel.runner() == ("torch-openmp" if uses_libgomp else "thread-pool")
