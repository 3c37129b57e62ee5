r"""A fused forward and BPTT backward pass of Norse's ``lif_refrac_step`` iterated over time.

The equations are those of Norse's ``lif_refrac_step`` (see :mod:`workshop_utils.neurons`). From a given
state (the network's initial one: z = i = rho = 0, v = 0.9), :func:`lif_refrac_fast` returns the
state after every step and computes the same numbers as calling Norse's ``lif_refrac_step`` T times,
in two numba kernels, each run on batch blocks in parallel, on torch's own OpenMP threads
(:mod:`.parallel`), writing into reused memory (:mod:`.buffers`):

1. the forward recurrence, in Norse's float32 operation order (``i + linear(x, W_in) + linear(z,
   W_rec)`` etc.). Input and recurrent spikes are 0/1 and sparse, so each ``linear`` is a sum of
   the weight columns of the inputs that spiked; the kernel adds them in the order in which torch's
   ``linear`` (MKL) does for that shape, found once per shape by :func:`_summation_chunk`. Then the
   voltages are bit-identical to Norse's. Where no order matches (e.g. B = 1, H = 300) the input currents
   come from one batched torch matmul (the same rows as per-step ``linear`` for the shapes tested)
   and the recurrent sum may differ from Norse's by an ulp, which can, rarely, flip a spike;
2. BPTT, which computes the adjoint ``dj`` of every step's current jump and sums the weight
   gradients ``dW_in = sum dj x^T`` and ``dW_rec = sum dj_t z_{t-1}^T`` over the spikes only.

The backward pass is that of autograd through Norse's step: the surrogate ``p.lif.method`` (Norse
1.1.0's "tanh", "heavi_erfc" or "super") replaces Theta in the spike threshold and in the refractory
mask Theta(rho), the voltage reset uses the detached spike, relu has zero gradient at 0, and the
recurrent-weight gradient has a zero diagonal (no autapses), as Norse's autapse hook makes it.

Without numba, with tensors not float32 on the CPU, or with ``implementation="torch"``, the same
function loops Norse's ``lif_refrac_step`` instead (and warns once per reason when it had to).
"""

import functools
import math
import warnings
from typing import Tuple

import numpy as np
import torch
from norse.torch.functional.lif import LIFState
from norse.torch.functional.lif_refrac import LIFRefracParameters, LIFRefracState

from .buffers import BufferPool
from .parallel import in_parallel
from .reference import lif_refrac_loop

try:
    import numba

    _NUMBA_PROBLEM = ""
except Exception as error:  # ImportError, or a numba that does not support this numpy
    numba = None
    _NUMBA_PROBLEM = f"numba cannot be imported: {error}"

IMPLEMENTATIONS = ("auto", "numba", "torch")
_METHOD_CODES = {"tanh": 0, "heavi_erfc": 1, "super": 2}
_warned = set()  # reasons already reported, so that a training loop warns once
_BUFFERS = BufferPool()  # the [T, B, N] records and spike lists, reused once no tensor refers to them


def _warn_once(reason: str, fallback: bool = True) -> None:
    if reason not in _warned:
        _warned.add(reason)
        action = "using the plain PyTorch loop: " if fallback else ""
        warnings.warn(f"lif_refrac_fast: {action}{reason}", RuntimeWarning, stacklevel=3)


# ---------------------------------------------------------------------------------------------------
# numba kernels, compiled lazily on first use (or loaded from numba's on-disk cache). Every constant
# is float32 so that no operation is promoted to float64; fastmath is off, so there is no FMA either.


def _njit_inline(function):
    return numba.njit(cache=True, error_model="numpy", inline="always")(function) if numba is not None else function


def _njit(function):
    # nogil: the batch blocks run in Python threads, which compiles far faster than numba's parallel=True
    return numba.njit(cache=True, error_model="numpy", nogil=True)(function) if numba is not None else function


@_njit_inline
def _cutoff(method):
    """|alpha x| beyond which Norse's float32 surrogate of ``method`` is exactly 0 (inf: none)."""
    if method == 0:  # "tanh": tanhf(y) rounds to 1 for |y| > 9.1
        return np.float32(9.5)
    if method == 1:  # "heavi_erfc": exp(-y^2) underflows to 0 in float32
        return np.float32(10.5)
    return np.float32(np.inf)


@_njit_inline
def _surrogate(x, method, alpha):
    """Norse 1.1.0's backward of Theta at x (float32); exactly 0 where Norse's float32 value is 0."""
    if method == 2:  # "super": ignores alpha
        d = abs(x) + np.float32(1.0)
        return np.float32(1.0) / (d * d)
    y = x * alpha
    if abs(y) > _cutoff(method):
        return np.float32(0.0)
    if method == 0:
        t = math.tanh(y)
        return np.float32(1.0) - t * t
    return np.float32(2.0) * math.exp(-(y * y)) / np.float32(math.sqrt(math.pi))


@_njit
def _spike_lists(x, b0, b1, indptr, indices):
    """Write the input spikes of ``x[:, b0:b1]`` ([T, B, H]) as CSR into ``indptr`` [T * (b1 - b0) + 1]
    and ``indices``: row t * (b1 - b0) + (b - b0) lists the inputs h that spike at step t in batch
    entry b, ascending. Returns 1 if all entries are 0 or 1, 0 if not, -1 if ``indices`` is too short
    (it stops there)."""
    T, _, H = x.shape
    width = b1 - b0
    bits = x.view(np.uint32)  # reading the bits compares faster than floats; 0.0 and 1.0 are exact
    one = np.uint32(0x3F800000)
    binary = True
    q = 0
    indptr[0] = 0
    for t in range(T):
        for b in range(b0, b1):
            for h in range(H):  # one pass; a branch, as input spikes are sparse
                w = bits[t, b, h]
                if w != 0:
                    if q == indices.shape[0]:
                        return -1
                    indices[q] = h
                    q += 1
                    binary &= w == one
            indptr[t * width + b - b0 + 1] = q
    return 1 if binary else 0


@_njit_inline
def _add_columns(out, w_t, indices, start, stop, chunk, partial):
    """out = W s for binary s with ones at ``indices[start:stop]`` (ascending), ``w_t`` = W^T.

    Summed in MKL's order: columns added one by one within blocks of ``chunk`` inputs, then the block
    sums added to ``out`` (zero at first). ``partial`` is scratch of the size of ``out``.
    """
    zero = np.float32(0.0)
    n_out = out.shape[0]
    for n in range(n_out):
        out[n] = zero
    block = -1
    for q in range(start, stop + 1):
        k = indices[q] if q < stop else -1
        if q == stop or k // chunk != block:
            if block >= 0:
                for n in range(n_out):
                    out[n] += partial[n]
            if q == stop:
                break
            for n in range(n_out):
                partial[n] = zero
            block = k // chunk
        for n in range(n_out):
            partial[n] += w_t[k, n]


@_njit
def _forward_block(b0, b1, x, x_indptr, x_indices, w_in_t, chunk_in, proj, w_rec_t, chunk_rec, z0, v0, i0, rho0, a,
                   c, v_leak, v_th, v_reset, rho_reset, z_out, rho_out, ref_out, v_out, vd_out, i_final):
    """Iterate the step for the batch entries b0 <= b < b1 from the state (z0, v0, i0, rho0) [B, N];
    writes z, rho, Theta(rho), v, v_decayed [T, B, N] and the last synaptic current ``i_final`` [B, N].

    ``x`` [T, B, H] are the input spikes, ``w_in_t`` [H, N] and ``w_rec_t`` [N, N] the transposed
    weights. With ``chunk_in`` > 0 the block's input spikes are first written into (x_indptr,
    x_indices) and the status of :func:`_spike_lists` returned; unless it is 1 (binary input, lists
    complete) the kernel returns right after that. With ``chunk_in`` = 0 the input currents are taken
    from ``proj`` [T, B, N] instead, and the kernel returns 0.
    """
    T, B, N = z_out.shape
    status = 0
    if chunk_in > 0:
        status = _spike_lists(x, b0, b1, x_indptr, x_indices)
        if status != 1:
            return status
    zero = np.float32(0.0)
    one = np.float32(1.0)
    i = i0.copy()
    v = v0.copy()
    rho = rho0.copy()
    spiking = np.zeros((B, N), np.int32)  # this step's spikes as index lists, one row per batch
    n_spiking = np.zeros(B, np.int64)
    for b in range(b0, b1):
        for n in range(N):
            if z0[b, n] != zero:
                spiking[b, n_spiking[b]] = n
                n_spiking[b] += 1
    new_spiking = np.zeros((B, N), np.int32)
    current_in = np.zeros(N, np.float32)
    rec = np.zeros(N, np.float32)
    partial = np.zeros(N, np.float32)
    for t in range(T):
        for b in range(b0, b1):
            if chunk_in > 0:
                row = t * (b1 - b0) + b - b0
                _add_columns(current_in, w_in_t, x_indices, x_indptr[row], x_indptr[row + 1], chunk_in, partial)
            else:
                for n in range(N):  # explicit loops: numba's slice copies cost ~100 ns each
                    current_in[n] = proj[t, b, n]
            _add_columns(rec, w_rec_t, spiking[b], 0, n_spiking[b], chunk_rec, partial)
            for n in range(N):
                j = (i[b, n] + current_in[n]) + rec[n]  # i + linear(x, W_in) + linear(z, W_rec)
                vd = v[b, n] + a * ((v_leak - v[b, n]) + j)
                i[b, n] = j + c * j
                vd_out[t, b, n] = vd
                # branch-free selects (spikes are too irregular for branch prediction):
                # a refractory neuron holds its voltage, cannot spike and counts rho down to 0
                refractory = rho[b, n] > zero
                fire = (vd - v_th > zero) and not refractory
                z = one if fire else zero
                held = v[b, n] if refractory else vd
                v[b, n] = v_reset if fire else held
                counted = max(rho[b, n] - (one if refractory else zero), zero)
                rho[b, n] = rho_reset if fire else counted
                z_out[t, b, n] = z
                rho_out[t, b, n] = rho[b, n]
                ref_out[t, b, n] = one if rho[b, n] > zero else zero
                v_out[t, b, n] = v[b, n]
            count = 0
            for n in range(N):  # this step's spikes as a list, for the next step's recurrent sum
                new_spiking[b, count] = n
                count += z_out[t, b, n] != zero
            n_spiking[b] = count
        spiking, new_spiking = new_spiking, spiking
    for b in range(b0, b1):
        for n in range(N):
            i_final[b, n] = i[b, n]
    return status


@_njit_inline
def _dot(w_t, n, dj, t, b):
    """sum_k w_t[n, k] dj[t, b, k], in four partial sums (a quarter of the dependency chain)."""
    N = w_t.shape[1]
    s0 = s1 = s2 = s3 = np.float32(0.0)
    k = 0
    while k + 4 <= N:
        s0 += w_t[n, k] * dj[t, b, k]
        s1 += w_t[n, k + 1] * dj[t, b, k + 1]
        s2 += w_t[n, k + 2] * dj[t, b, k + 2]
        s3 += w_t[n, k + 3] * dj[t, b, k + 3]
        k += 4
    while k < N:
        s0 += w_t[n, k] * dj[t, b, k]
        k += 1
    return (s0 + s1) + (s2 + s3)


@_njit
def _backward_block(b0, b1, z_all, rho_all, v_all, vd_all, g_rho, g_ref, g_v, given, x_indptr, x_indices, H, w_rec_t,
                    z0, v0, rho0, a, c, v_th, v_reset, rho_reset, method, alpha, dj_out):
    """BPTT for the batch entries b0 <= b < b1, from the forward pass's [T, B, N] records and the
    output gradients ``g_rho``, ``g_ref`` (of Theta(rho)), ``g_v`` [T, B, N], of which only those
    marked in ``given`` [3] are read (the others are zero), and the initial state (z0, v0, rho0)
    [B, N]: writes the adjoint dL/dj of every step's current jump into ``dj_out`` [T, B, N] and
    returns this block's weight gradients, transposed, [H, N] and [N, N]. (x_indptr, x_indices) are
    the block's input spikes as returned by :func:`_forward_block`.

    Per neuron the state adjoints are lv, li, lrho and lz = W_rec^T dj_{t+1}. Each row (t, b) takes
    three passes over the neurons: a branch-free one that finds where a surrogate can be non-zero
    (near threshold, for tanh and heavi_erfc) and where lz is used; a scalar one that computes
    those few surrogates and dot products; and a branch-free one for the adjoints, which the
    compiler vectorises. lz is summed in four partial sums, so dj differs from autograd's (which
    sums in MKL's order) by rounding only.
    """
    T, B, N = z_all.shape
    grad_w_in_t = np.zeros((H, N), np.float32)
    grad_w_rec_t = np.zeros((N, N), np.float32)
    zero = np.float32(0.0)
    one = np.float32(1.0)
    sig_rho0 = _surrogate(zero, method, alpha)
    has_lz = sig_rho0 != zero
    lv = np.zeros((B, N), np.float32)
    li = np.zeros((B, N), np.float32)
    lrho = np.zeros((B, N), np.float32)
    sig_s = np.zeros(N, np.float32)
    sig_rho = np.zeros(N, np.float32)
    sig_new = np.zeros(N, np.float32)
    need = np.zeros(N, np.bool_)
    lz = np.zeros(N, np.float32)
    cut = _cutoff(method)
    for t in range(T - 1, -1, -1):
        for b in range(b0, b1):
            for n in range(N):  # 1. which surrogates and lz this row needs
                rho_prev = rho_all[t - 1, b, n] if t > 0 else rho0[b, n]
                rho_new = rho_all[t, b, n]
                s = vd_all[t, b, n] - v_th
                sig_s[n] = zero
                sig_rho[n] = sig_rho0 if rho_prev == zero else zero
                sig_new[n] = sig_rho0 if rho_new == zero else zero
                lz[n] = zero
                rho_in_range = (rho_prev != zero) & (abs(rho_prev * alpha) <= cut)
                need[n] = (((rho_prev <= zero) & (abs(s * alpha) <= cut)) | rho_in_range
                           | ((rho_new != zero) & (abs(rho_new * alpha) <= cut))
                           | ((s > zero) & (rho_prev == zero) & has_lz))
            for n in range(N):  # 2. those surrogates (Theta at threshold, before and after) and lz
                if need[n]:
                    rho_prev = rho_all[t - 1, b, n] if t > 0 else rho0[b, n]
                    rho_new = rho_all[t, b, n]
                    if rho_prev <= zero:
                        sig_s[n] = _surrogate(vd_all[t, b, n] - v_th, method, alpha)
                    else:
                        sig_rho[n] = _surrogate(rho_prev, method, alpha)
                    if rho_new != zero:
                        sig_new[n] = _surrogate(rho_new, method, alpha)
                    fired = vd_all[t, b, n] - v_th > zero
                    if t + 1 < T and (sig_s[n] != zero or (fired and sig_rho[n] != zero)):
                        lz[n] = _dot(w_rec_t, n, dj_out, t + 1, b)
            for n in range(N):  # 3. the adjoints
                if t > 0:
                    rho_prev = rho_all[t - 1, b, n]
                    v_prev = v_all[t - 1, b, n]
                else:
                    rho_prev = rho0[b, n]
                    v_prev = v0[b, n]
                refractory = rho_prev > zero
                vd = vd_all[t, b, n]
                fired = vd - v_th > zero
                z_new = z_all[t, b, n]
                lv_n = lv[b, n] + (g_v[t, b, n] if given[2] else zero)
                # the readout Theta(rho') back-propagates through the same surrogate
                lrho_n = (lrho[b, n] + (g_rho[t, b, n] if given[0] else zero)
                          + (g_ref[t, b, n] * sig_new[n] if given[1] else zero))
                m = one if refractory else zero
                # rho' = (1 - z') relu(rho - m) + z' rho_reset   (relu has gradient 0 at 0)
                r_in = rho_prev - m
                r = max(r_in, zero)
                lz_total = lz[n] + lrho_n * (rho_reset - r)
                d_rin = lrho_n * (one - z_new) if r_in > zero else zero
                # z' = (1 - m) z~
                dzt = lz_total * (one - m)
                dm = (-d_rin - lz_total) if fired else -d_rin
                # v' = (1 - m) v_lif + m v,  v_lif = (1 - z~) v_decayed + z~ v_reset  (z~ detached)
                v_lif = v_reset if fired else vd
                dv_lif = lv_n * (one - m)
                dm += lv_n * (v_prev - v_lif)
                dv = lv_n * m
                d_rho = d_rin + dm * sig_rho[n]
                dvd = (zero if fired else dv_lif) + dzt * sig_s[n]
                # v_decayed = v + a ((v_leak - v) + j),  i' = j + c j
                dj = li[b, n] + c * li[b, n] + a * dvd
                dv += dvd - a * dvd
                dj_out[t, b, n] = dj
                lv[b, n] = dv
                li[b, n] = dj
                lrho[b, n] = d_rho
            # j = i + W_in x + W_rec z_{t-1}: the weight gradients are sums of dj over the spikes
            row = t * (b1 - b0) + b - b0
            for q in range(x_indptr[row], x_indptr[row + 1]):
                h = x_indices[q]
                for n in range(N):
                    grad_w_in_t[h, n] += dj_out[t, b, n]
            for k in range(N):
                if (z_all[t - 1, b, k] if t > 0 else z0[b, k]) != zero:
                    for n in range(N):
                        grad_w_rec_t[k, n] += dj_out[t, b, n]
    return grad_w_in_t, grad_w_rec_t


def _batch_blocks(batch_size: int) -> list:
    """(b0, b1) bounds of the batch blocks that run in parallel, one per torch thread."""
    blocks = max(1, min(batch_size, torch.get_num_threads()))
    return [(block * batch_size // blocks, (block + 1) * batch_size // blocks) for block in range(blocks)]


def _spike_list_buffers(T: int, width: int, H: int, fraction: float) -> tuple:
    """(indptr, indices) for :func:`_spike_lists` of a block of ``width`` chains, from the pool, with
    room for ``fraction`` of the T * width * H inputs to spike (pages never written cost no memory)."""
    indices = _BUFFERS.empty((max(H, int(T * width * H * fraction)),), np.int32)
    return _BUFFERS.empty((T * width + 1,), np.int64), indices


@functools.lru_cache(maxsize=None)
def _fast_path_problem() -> str:
    """Why the numba path cannot run here, or "" if it can; compiles the kernels on a tiny problem."""
    if _NUMBA_PROBLEM:
        return _NUMBA_PROBLEM
    try:
        with torch.enable_grad():  # the first call may come from inside torch.no_grad()
            weights = torch.ones(2, 2, requires_grad=True)
            state = [torch.zeros(1, 2)] * 4
            outputs = _LIFRefracFunction.apply(torch.ones(2, 1, 2), weights, weights, LIFRefracParameters(), 1e-3,
                                               *state)
            _, rho, refractory, voltages, _ = outputs
            (rho.sum() + refractory.sum() + voltages.sum()).backward()
        for method in _METHOD_CODES:
            _surrogate(np.float32(0.0), _METHOD_CODES[method], np.float32(1.0))
    except Exception as error:  # a numba typing or lowering error
        return f"the numba kernel failed to compile: {type(error).__name__}: {error}"
    return ""


@functools.lru_cache(maxsize=None)
def _summation_chunk(rows: int, inputs: int, outputs: int) -> int:
    """The block size in which torch's ``linear`` sums ``[rows, inputs] x [inputs, outputs]`` for binary
    inputs (MKL here: all at once up to 128 inputs, in blocks of 128 for 256, of 192 from 512 on), found
    by comparing with :func:`_add_columns` on random data; 0 if no block size reproduces it bit for bit."""
    generator = torch.Generator().manual_seed(0)
    weights = torch.randn(outputs, inputs, generator=generator)
    x = (torch.rand(4, rows, inputs, generator=generator) < 0.3).float()
    expected = torch.stack([torch.nn.functional.linear(rows_x, weights) for rows_x in x]).reshape(-1, outputs)
    indptr, indices = np.empty(x.numel() // inputs + 1, np.int64), np.empty(x.numel(), np.int32)
    _spike_lists(x.reshape(-1, 1, inputs).numpy(), 0, 1, indptr, indices)
    w_t = weights.t().contiguous().numpy()
    out, partial = np.empty(outputs, np.float32), np.empty(outputs, np.float32)
    common = [inputs, 128, 192, 64, 256, 32, 512, 16]  # MKL: 128 for 256 inputs, 192 for 512 and more
    others = [size for size in range(8, inputs, 8) if size not in common]
    for chunk in [size for size in common if size <= inputs] + others:
        for row, expected_row in enumerate(expected.numpy()):
            _add_columns(out, w_t, indices, indptr[row], indptr[row + 1], chunk, partial)
            if not np.array_equal(out, expected_row):
                break
        else:
            return chunk
    return 0


def fast_path_available() -> bool:
    """True if numba is importable and the kernels compile (or load from numba's cache)."""
    return not _fast_path_problem()


# ---------------------------------------------------------------------------------------------------


def _constants(p: LIFRefracParameters, dt: float) -> dict:
    """Norse's step constants as float32, computed with the same torch operations as ``lif_step``."""

    def f32(value):
        return np.float32(torch.as_tensor(value, dtype=torch.float32).item())

    return dict(
        a=f32(dt * p.lif.tau_mem_inv),  # dv = (dt * tau_mem_inv) * ((v_leak - v) + j)
        c=f32(-dt * p.lif.tau_syn_inv),  # di = (-dt * tau_syn_inv) * j
        v_leak=f32(p.lif.v_leak),
        v_th=f32(p.lif.v_th),
        v_reset=f32(p.lif.v_reset),
        rho_reset=f32(p.rho_reset),
        alpha=f32(p.lif.alpha),
    )


class _LIFRefracFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input_spikes, input_weights, recurrent_weights, p, dt, z0, v0, i0, rho0):
        T, B, H = input_spikes.shape
        N = input_weights.shape[0]
        k = _constants(p, dt)
        initial = [tensor.detach().to(torch.float32).contiguous() for tensor in (z0, v0, i0, rho0)]
        chunk_in = _summation_chunk(B, H, N)
        chunk_rec = _summation_chunk(B, N, N)
        if not chunk_rec:
            _warn_once(f"the recurrent sum for B={B}, N={N} may differ from torch's by rounding", fallback=False)
            chunk_rec = N
        spikes, rho, refractory, voltages, v_decayed = (torch.from_numpy(_BUFFERS.empty((T, B, N))) for _ in range(5))
        i_final = torch.empty(B, N)
        ctx.blocks = _batch_blocks(B)

        def run(chunk_in, proj, spike_lists):
            """The kernel on every batch block; returns the blocks' statuses (see _forward_block)."""
            args = (
                input_weights.detach().t().contiguous().numpy(), chunk_in, proj.numpy(),
                recurrent_weights.detach().t().contiguous().numpy(), chunk_rec, *(x.numpy() for x in initial),
                k["a"], k["c"], k["v_leak"], k["v_th"], k["v_reset"], k["rho_reset"], spikes.numpy(), rho.numpy(),
                refractory.numpy(), voltages.numpy(), v_decayed.numpy(), i_final.numpy(),
            )
            x = input_spikes.numpy()
            blocks = zip(ctx.blocks, spike_lists)
            calls = [(_forward_block, (b0, b1, x, *lists) + args) for (b0, b1), lists in blocks]
            return in_parallel(calls)

        ctx.binary = False
        if chunk_in:
            # room for 1/8 of the inputs to spike (rate 0.3 fills 3 %), or, if that is too little, for all
            for fraction in (1 / 8, 1):
                ctx.spike_lists = [_spike_list_buffers(T, b1 - b0, H, fraction) for b0, b1 in ctx.blocks]
                statuses = run(chunk_in, torch.empty(0, 0, 0), ctx.spike_lists)
                if min(statuses) >= 0:
                    break
            ctx.binary = min(statuses) == 1
        if not ctx.binary:
            # no reproducible order, or input that is not 0/1: the input currents come from torch,
            # whose batched rows equal its per-step ones for the shapes tested; empty spike lists
            # (every row from 0 to 0), so that the backward kernel leaves dW_in to torch
            ctx.spike_lists = [(np.zeros(T * B + 1, np.int64), np.zeros(0, np.int32))] * len(ctx.blocks)
            run(0, torch.nn.functional.linear(input_spikes, input_weights), ctx.spike_lists)
        z0, v0, _, rho0 = initial
        ctx.save_for_backward(input_spikes, input_weights, recurrent_weights, spikes, rho, voltages, v_decayed, z0, v0,
                              rho0)
        ctx.constants, ctx.method = k, _METHOD_CODES[p.lif.method]
        ctx.mark_non_differentiable(spikes, i_final)
        ctx.set_materialize_grads(False)
        return spikes, rho, refractory, voltages, i_final

    @staticmethod
    def backward(ctx, _grad_spikes, grad_rho, grad_refractory, grad_voltages, _grad_i_final):
        (input_spikes, input_weights, recurrent_weights, spikes, rho, voltages, v_decayed, z0, v0,
         rho0) = ctx.saved_tensors
        T, B, H = input_spikes.shape
        N = input_weights.shape[0]
        k = ctx.constants
        dj = torch.from_numpy(_BUFFERS.empty((T, B, N)))
        # gradients of outputs the loss does not use arrive as None (not materialised as zeros)
        output_grads = (grad_rho, grad_refractory, grad_voltages)
        given = np.array([grad is not None for grad in output_grads])
        nothing = torch.zeros(1, 1, 1)
        arrays = [tensor.contiguous().numpy() for tensor in (spikes, rho, voltages, v_decayed)]
        arrays += [nothing.numpy() if grad is None else grad.contiguous().numpy() for grad in output_grads]
        arrays.append(given)
        w_rec_t = recurrent_weights.detach().t().contiguous().numpy()
        args = (w_rec_t, z0.numpy(), v0.numpy(), rho0.numpy(), k["a"], k["c"], k["v_th"], k["v_reset"], k["rho_reset"],
                ctx.method, k["alpha"], dj.numpy())
        # with binary input the kernel sums dW_in over the input spikes; otherwise torch does, below
        sums = in_parallel([
            (_backward_block, (b0, b1, *arrays, x_indptr, x_indices, H) + args)
            for (b0, b1), (x_indptr, x_indices) in zip(ctx.blocks, ctx.spike_lists)
        ])
        grad_input = None
        if ctx.needs_input_grad[0]:
            grad_input = (dj.reshape(T * B, N) @ input_weights.detach()).reshape(T, B, H)
        if ctx.binary:
            grad_w_in = torch.from_numpy(sum(block[0] for block in sums)).t().contiguous()
        else:
            grad_w_in = dj.reshape(T * B, N).t() @ input_spikes.reshape(T * B, H)
        grad_w_rec = torch.from_numpy(sum(block[1] for block in sums)).t().contiguous()
        grad_w_rec.fill_diagonal_(0.0)  # no autapses, as Norse's hook (idempotent if that hook runs too)
        return grad_input, grad_w_in, grad_w_rec, None, None, None, None, None, None


def lif_refrac_fast(
    input_spikes: torch.Tensor,
    input_weights: torch.Tensor,
    recurrent_weights: torch.Tensor,
    p: LIFRefracParameters,
    dt: float,
    state: LIFRefracState,
    implementation: str = "auto",
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, LIFRefracState]:
    """Simulate ``[T, B, H]`` input spikes from ``state`` (every field ``[B, N]``).

    ``input_weights`` is ``[N, H]``, ``recurrent_weights`` ``[N, N]``. Returns (spikes, rho,
    refractory, voltages), each ``[T, B, N]``, the state after every step (refractory = Theta(rho) with
    the surrogate gradient of ``p.lif.method``), and the final state, which continues the run.
    Spikes carry no gradient, the others do; no gradient flows into the initial state (a run
    continued from a final state is back-propagated in separate pieces).

    ``implementation``: "numba" (the fused kernels; raises if they are unavailable), "torch" (loop
    Norse's step), or "auto": numba for float32 CPU tensors when it is available, else torch with a
    warning (once per reason).
    """
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
    if p.lif.method not in _METHOD_CODES:
        raise ValueError(f"method must be one of {tuple(_METHOD_CODES)}, got {p.lif.method!r}")
    if implementation == "torch":
        return lif_refrac_loop(input_spikes, input_weights, recurrent_weights, p, dt, state)
    tensors = (input_spikes, input_weights, recurrent_weights)
    if any(tensor.device.type != "cpu" for tensor in tensors):
        problem = "the tensors are not on the CPU"
    elif any(tensor.dtype != torch.float32 for tensor in tensors):
        problem = "the tensors are not float32"
    else:
        problem = _fast_path_problem()
    if problem:
        if implementation == "numba":
            raise RuntimeError(f"lif_refrac_fast: the numba path cannot run: {problem}")
        _warn_once(problem)
        return lif_refrac_loop(input_spikes, input_weights, recurrent_weights, p, dt, state)
    spikes, rho, refractory, voltages, i_final = _LIFRefracFunction.apply(
        input_spikes.contiguous(), input_weights, recurrent_weights, p, dt, state.lif.z, state.lif.v, state.lif.i,
        state.rho,
    )
    final_state = LIFRefracState(LIFState(spikes[-1], voltages[-1].detach(), i_final), rho[-1].detach())
    return spikes, rho, refractory, voltages, final_state
