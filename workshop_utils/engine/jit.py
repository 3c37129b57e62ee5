"""numba for the CPU kernels: imported if it can be, compiled with its on-disk cache where it has one.

numba's ``cache=True`` looks for a writable directory (``NUMBA_CACHE_DIR``, the source file's
``__pycache__``, the user's cache directory) when the decorator runs, and raises where it finds none:
a package installed read-only and run by a user without a home directory, or a read-only mount.
Writing or reading the cache can also fail later, at the first compilation. In every such case the
kernels compile in memory instead (a few seconds once per process), and one warning says why and how
to give numba a cache (set ``NUMBA_CACHE_DIR`` to a writable directory).
"""

import warnings
from typing import Callable, List

try:
    import numba

    NUMBA_PROBLEM = ""
except Exception as error:  # ImportError, or a numba that does not support this numpy
    numba = None
    NUMBA_PROBLEM = f"numba cannot be imported ({type(error).__name__}: {error})"

# fastmath stays off: no FMA contraction and no reordering, so every sum is computed in the order written
_OPTIONS = dict(error_model="numpy", nogil=True)
_cached: List = []  # the dispatchers compiled with numba's on-disk cache
_uncached: List = []  # those that found no place for it


def warn_without_cache(reason: str) -> None:
    warnings.warn(
        f"numba cannot use its on-disk cache ({reason}); the CPU kernels compile in memory instead, a few "
        "seconds once per process. Set NUMBA_CACHE_DIR to a writable directory to keep them.",
        RuntimeWarning, stacklevel=3)


def jit(function: Callable, inline: bool = False) -> Callable:
    """``numba.njit`` for a kernel (``inline=True``: a helper inlined into the kernels that call it),
    with the on-disk cache where numba finds a place for it; the plain function without numba."""
    if numba is None:
        return function
    if inline:  # compiled as part of its callers, which are cached
        return numba.njit(inline="always", **_OPTIONS)(function)
    try:
        dispatcher = numba.njit(cache=True, **_OPTIONS)(function)
    except RuntimeError as error:  # "cannot cache function ...: no locator available for file ..."
        if not _uncached:  # one warning: the other kernels live in the same file
            warn_without_cache(str(error))
        _uncached.append(function)
        return numba.njit(**_OPTIONS)(function)
    _cached.append(dispatcher)
    return dispatcher


def disable_cache() -> bool:
    """Compile without the on-disk cache from now on (after it failed to be read or written);
    returns False if no kernel used it."""
    for dispatcher in _cached:
        dispatcher._cache.disable()  # numba's Cache.disable: neither loads nor saves any more
    used, _cached[:] = bool(_cached), []
    return used
