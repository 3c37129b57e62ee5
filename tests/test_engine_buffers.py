"""workshop_utils.engine.buffers: a block is reused only when nothing refers to it any more."""

import numpy as np
import torch

from workshop_utils.engine.buffers import BufferPool


def address(array) -> int:
    return array.__array_interface__["data"][0]


def test_a_block_is_reused_once_dropped():
    pool = BufferPool()
    first = pool.empty((100, 4))
    where = address(first)
    del first
    again = pool.empty((100, 4))
    assert address(again) == where
    assert len(pool) == 1


def test_a_block_in_use_is_not_handed_out_again():
    pool = BufferPool()
    holders = {
        "array": lambda a: a,
        "numpy view": lambda a: a[10:20],
        "torch tensor": torch.from_numpy,
        "torch view": lambda a: torch.from_numpy(a)[5],
    }
    for name, hold in holders.items():
        block = pool.empty((100, 4))
        kept = hold(block)
        where = address(block)
        del block
        other = pool.empty((100, 4))
        assert address(other) != where, f"a live {name} did not keep its block"
        del kept, other


def test_arrays_have_the_shape_dtype_and_alignment_asked_for():
    pool = BufferPool()
    for shape, dtype in [((3, 5, 7), np.float32), ((11,), np.int64), ((1000, 3), np.int32)]:
        array = pool.empty(shape, dtype)
        assert array.shape == shape and array.dtype == dtype and array.flags.c_contiguous
        assert address(array) % 64 == 0
        array[...] = 7  # the whole array is writable memory of its own
        assert np.all(array == 7)


def test_a_small_request_does_not_take_a_much_larger_block():
    pool = BufferPool()
    big = pool.empty((1000,))
    big_where = address(big)
    del big
    small = pool.empty((10,))
    assert address(small) != big_where
    assert address(pool.empty((900,))) == big_where  # at most twice as large: reused


def test_idle_blocks_beyond_the_limit_are_dropped_least_recently_used_first():
    pool = BufferPool(max_idle=2)
    arrays = [pool.empty((n,)) for n in (100, 300, 1000, 3000)]  # sizes no other request can reuse
    del arrays
    pool.empty((5,))  # one more request: only the two most recently used idle blocks stay
    kept = sorted(block.nbytes for block in pool._blocks if block.nbytes > 100)
    assert len(kept) == 2 and 1000 * 4 <= kept[0] < 3000 * 4 <= kept[1]  # the 1000- and 3000-float blocks


def test_idle_memory_beyond_its_limit_goes_back():
    pool = BufferPool(max_idle_bytes=10_000)
    arrays = [pool.empty((n,), np.uint8) for n in (4_000, 5_000, 6_000)]
    del arrays
    pool.empty((10,), np.uint8)  # the oldest idle blocks go until the rest fit in 10,000 bytes
    kept = sorted(block.nbytes for block in pool._blocks if block.nbytes > 100)
    assert len(kept) == 1 and kept[0] >= 6_000
