"""Run a few GIL-releasing calls (the fast path's numba kernels) in parallel, on torch's own OpenMP threads.

After every parallel torch operation, the OpenMP threads of torch's CPU build wait for the next one by
spinning for several milliseconds (libgomp's default). Kernels run in threads of our own would
compete with those spinning threads for the cores: on 2 cores the fast path's kernels took twice as
long. So, where torch's OpenMP runtime is GNU libgomp (torch's Linux wheels), the calls run as one
OpenMP parallel region of that same runtime (``GOMP_parallel`` through ctypes): the spinning
threads pick the work up. Elsewhere, or if that runtime is not found, they run in a thread pool.
"""

import ctypes
import functools
import re
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, List, Optional, Sequence, Tuple

Call = Tuple[Callable, tuple]
_NOT_RUN = object()


@functools.lru_cache(maxsize=None)
def _torch_libgomp() -> Optional[ctypes.CDLL]:
    """The GNU OpenMP runtime that this process's torch loaded, or None (not Linux, not libgomp)."""
    if not sys.platform.startswith("linux"):
        return None
    import torch  # noqa: F401  (loads its OpenMP runtime)

    try:
        with open("/proc/self/maps") as maps:
            paths = sorted(set(re.findall(r"(/\S*/libgomp[^/\s]*\.so[^/\s]*)", maps.read())))
    except OSError:
        return None
    torch_paths = [path for path in paths if "torch" in path]
    if len(torch_paths) != 1:  # none, or an ambiguous mix: do not guess which runtime torch uses
        return None
    try:
        library = ctypes.CDLL(torch_paths[0])  # the already loaded library, not a second copy
        library.GOMP_parallel.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint)
        library.GOMP_parallel.restype = None
        library.omp_get_thread_num.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return library


class _OpenMPRegion:
    """``run(calls)``: one libgomp parallel region with one thread per call; thread i runs call i."""

    _callback_type = ctypes.CFUNCTYPE(None, ctypes.c_void_p)

    def __init__(self, library: ctypes.CDLL):
        self._library = library
        self._lock = threading.Lock()  # one region at a time: the calls are handed over in attributes;
        # a second caller meanwhile (a nested call, another Python thread) runs its calls one by one
        self._callback = self._callback_type(self._run_one)  # kept alive as long as the region object
        self._calls: Sequence[Call] = ()
        self._results: list = []
        self._errors: list = []

    def _run_one(self, _data) -> None:
        # runs in each thread of the region, with the GIL (ctypes takes it); the numba kernel releases it
        index = self._library.omp_get_thread_num()
        try:
            function, args = self._calls[index]
            self._results[index] = function(*args)
        except BaseException as error:  # re-raised in the calling thread
            self._errors[index] = error

    def run(self, calls: Sequence[Call]) -> list:
        if not self._lock.acquire(blocking=False):  # called from inside a region, or another thread's
            return [function(*args) for function, args in calls]
        try:
            self._calls, self._results, self._errors = calls, [_NOT_RUN] * len(calls), [None] * len(calls)
            # ctypes releases the GIL for the call; the calling thread runs call 0 itself
            self._library.GOMP_parallel(ctypes.cast(self._callback, ctypes.c_void_p), None, len(calls), 0)
            results, errors = self._results, self._errors
            self._calls, self._results, self._errors = (), [], []
        finally:
            self._lock.release()
        for error in errors:
            if error is not None:
                raise error
        if any(result is _NOT_RUN for result in results):  # fewer threads than asked for: run the rest here
            results = [function(*args) if result is _NOT_RUN else result
                       for (function, args), result in zip(calls, results)]
        return results


@functools.lru_cache(maxsize=None)
def _openmp_region() -> Optional[_OpenMPRegion]:
    library = _torch_libgomp()
    return _OpenMPRegion(library) if library is not None else None


@functools.lru_cache(maxsize=None)
def _thread_pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="engine-cpu")


def runner() -> str:
    """Where :func:`in_parallel` runs its calls: "torch-openmp" or "thread-pool"."""
    return "torch-openmp" if _openmp_region() is not None else "thread-pool"


def in_parallel(calls: List[Call], use_openmp: bool = True) -> list:
    """``[function(*args) for function, args in calls]``, the calls run in parallel threads (they must
    release the GIL to overlap). ``use_openmp=False`` forces the thread pool (for tests)."""
    if len(calls) == 1:
        return [calls[0][0](*calls[0][1])]
    region = _openmp_region() if use_openmp else None
    if region is not None:
        return region.run(calls)
    futures = [_thread_pool(len(calls)).submit(function, *args) for function, args in calls]
    return [future.result() for future in futures]
