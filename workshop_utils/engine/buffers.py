"""Reused memory for the CPU backend's largest array, the spike lists (up to T x B x H indices).

Fresh memory costs a page fault per 4 KiB on first write, and memory this large goes back to the
operating system when it is freed, so every call would pay the faults again: at T = 1000, B = 32,
H = 1024 and 0.3 spikes per step and input, writing the lists into fresh memory took 29 ms more than
into reused memory with 4 KiB pages (9,600 faults), 4.6 ms more with transparent huge pages (AMD
EPYC, one thread; 3.3 ms and 0.6 ms at the workshop's 0.03 spikes). A :class:`BufferPool`
keeps the blocks. It hands a block out as an array whose base is a *lease*; every view of the array,
every torch tensor made from it and every autograd graph that saves one keeps the lease alive, and
only when the last of them is gone does a weakref finalizer return the block to the pool. A block is
therefore never handed out twice at once, whatever holds it.
"""

import collections
import threading
import weakref
from typing import List

import numpy as np

ALIGNMENT = 64  # bytes, as torch aligns its own CPU tensors


class _Block:
    """``nbytes`` usable bytes starting at a 64-byte aligned address."""

    def __init__(self, nbytes: int):
        self.memory = np.empty(nbytes + ALIGNMENT, np.uint8)
        self.offset = -self.memory.ctypes.data % ALIGNMENT
        self.nbytes = nbytes

    def address(self) -> int:
        return self.memory.ctypes.data + self.offset


class _Lease:
    """The base object of the arrays handed out for one use of a block (numpy's array interface)."""

    def __init__(self, block: _Block, nbytes: int):
        self.block = block
        self.__array_interface__ = dict(shape=(nbytes,), typestr="|u1", data=(block.address(), False), version=3)


class BufferPool:
    """``empty(shape, dtype)``: an uninitialised C-contiguous array like ``np.empty``, in an idle block
    if one fits (at least as large, at most twice as large), else in a new one.

    Idle blocks are kept up to ``max_idle_bytes`` in all; beyond that the least recently returned go
    back to the system. Pages of a block that are never written cost no memory.
    """

    def __init__(self, max_idle_bytes: int = 2**30):
        self.max_idle_bytes = max_idle_bytes
        self._idle: List[_Block] = []  # least recently returned first
        self._returned = collections.deque()  # filled by finalizers, in any thread, without the lock
        self._lock = threading.Lock()

    def empty(self, shape, dtype=np.float32) -> np.ndarray:
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        with self._lock:
            while self._returned:
                self._idle.append(self._returned.popleft())
            fitting = [block for block in self._idle if nbytes <= block.nbytes <= 2 * nbytes + ALIGNMENT]
            block = min(fitting, key=lambda block: block.nbytes) if fitting else _Block(nbytes)
            if fitting:
                self._idle.remove(block)
            while sum(idle.nbytes for idle in self._idle) > self.max_idle_bytes:
                self._idle.pop(0)
        lease = _Lease(block, nbytes)
        weakref.finalize(lease, self._returned.append, block).atexit = False
        return np.asarray(lease).view(dtype).reshape(shape)

    def idle_bytes(self) -> int:
        """Bytes in idle blocks (after the finalizers that have run)."""
        with self._lock:
            while self._returned:
                self._idle.append(self._returned.popleft())
            return sum(block.nbytes for block in self._idle)
