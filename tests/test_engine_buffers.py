"""workshop_utils.engine.buffers: a block is handed out again only when nothing refers to it any more."""

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from workshop_utils.engine.buffers import ALIGNMENT, BufferPool


def address(array) -> int:
    return array.__array_interface__["data"][0]


def test_a_block_is_reused_once_dropped():
    pool = BufferPool()
    first = pool.empty((100, 4))
    where = address(first)
    del first
    assert address(pool.empty((100, 4))) == where


def test_a_block_in_use_is_not_handed_out_again():
    pool = BufferPool()
    holders = {
        "array": lambda a: a,
        "numpy view": lambda a: a[10:20],
        "reshaped view": lambda a: a.reshape(-1)[::3],
        "torch tensor": torch.from_numpy,
        "torch view": lambda a: torch.from_numpy(a)[5],
        "autograd graph": lambda a: (torch.from_numpy(a).requires_grad_(True) * 2).sum(),
    }
    for name, hold in holders.items():
        block = pool.empty((100, 4))
        kept = hold(block)
        where = address(block)
        del block
        other = pool.empty((100, 4))
        assert address(other) != where, f"a live {name} did not keep its block"
        del kept, other


def test_a_larger_request_after_a_smaller_one_gets_all_its_bytes():
    """Issue #11, defect 1: the 64-byte alignment offset was taken out of a block that was only
    checked to hold the bytes asked for ("cannot reshape array of size 125004 into (125010,)")."""
    pool = BufferPool()
    first = pool.empty((100000,))
    del first
    second = pool.empty((125010,))  # fits the 125,000-float block only if its alignment is not counted
    assert second.shape == (125010,)
    second[:] = 3.0
    assert np.all(second == 3.0)


def test_arrays_have_the_shape_dtype_and_alignment_asked_for():
    pool = BufferPool()
    for shape, dtype in [((3, 5, 7), np.float32), ((11,), np.int64), ((1000, 3), np.int32), ((0,), np.float32)]:
        array = pool.empty(shape, dtype)
        assert array.shape == shape and array.dtype == dtype and array.flags.c_contiguous and array.flags.writeable
        assert address(array) % ALIGNMENT == 0


def test_a_small_request_does_not_take_a_much_larger_block():
    pool = BufferPool()
    big = pool.empty((1000,))
    big_where = address(big)
    del big
    assert address(pool.empty((10,))) != big_where
    assert address(pool.empty((900,))) == big_where  # at most twice as large: reused


def test_idle_memory_beyond_its_limit_goes_back():
    pool = BufferPool(max_idle_bytes=10_000)
    arrays = [pool.empty((n,), np.uint8) for n in (4_000, 5_000, 6_000)]
    del arrays
    pool.empty((10,), np.uint8)  # the oldest idle blocks go until the rest fit in 10,000 bytes
    assert pool.idle_bytes() <= 10_000


@settings(derandomize=True, max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5000), st.sampled_from([np.float32, np.int32, np.int64, np.uint8]),
                          st.sampled_from(["drop", "view", "tensor", "graph"])), max_size=40))
def test_no_block_is_handed_out_while_anything_refers_to_it(requests):
    """Random sizes and dtypes; each array is filled with its number, then dropped at once or dropped
    while a numpy view, a torch tensor or an autograd graph that saved it stays alive. Whatever is
    handed out and filled later, every live holder still sees its own number (and a graph still
    back-propagates through its saved values)."""
    pool = BufferPool(max_idle_bytes=50_000)
    live = []
    for number, (size, dtype, hold) in enumerate(requests):
        array = pool.empty((size,), dtype)
        assert array.shape == (size,) and array.dtype == dtype and address(array) % ALIGNMENT == 0
        value = number % 100
        array[:] = value
        if hold == "view":
            live.append((value, array[size // 2:]))
        elif hold == "tensor" or (hold == "graph" and dtype != np.float32):
            live.append((value, torch.from_numpy(array)))
        elif hold == "graph":
            leaf = torch.from_numpy(array).requires_grad_(True)
            live.append((value, (leaf * leaf).sum()))  # the graph saved leaf, the pool's memory
        del array  # (no reference cycles: reference counting returns the block at once)
    for value, holder in live:
        if isinstance(holder, torch.Tensor) and holder.grad_fn is not None:
            gradient, = torch.autograd.grad(holder, holder.grad_fn.next_functions[0][0].next_functions[0][0].variable)
            assert torch.all(gradient == 2 * value)
        else:
            values = holder.numpy() if isinstance(holder, torch.Tensor) else holder
            assert np.all(values == value)
