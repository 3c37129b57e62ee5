r"""The CPU backend: Norse's ``lif_refrac_step`` iterated over T steps, and its BPTT, in numba kernels.

Per chain b, neuron n and step t (Norse's float32 operations, in Norse's order; a = dt tau_mem_inv and
c = -dt tau_syn_inv as Norse computes them; every parameter may differ per neuron and chain):

.. math::
    \begin{align*}
        j &= (i + I_\text{in}) + I_\text{rec}, \qquad
        I_\text{in} = \sum_{h:\, x_h \neq 0} x_h W_\text{in}[n, h], \qquad
        I_\text{rec} = \sum_{k:\, z_k \neq 0} z_k W_\text{rec}[n, k] \\
        \tilde v &= v + a\,((v_\text{leak} - v) + j), \qquad i' = j + c\,j \\
        \tilde z &= \Theta(\tilde v - v_\text{th}), \qquad m = \Theta(\rho) \\
        z' &= (1 - m)\,\tilde z, \qquad v' = (1 - m)\,[(1 - \tilde z)\,\tilde v + \tilde z\,v_\text{reset}] + m\,v, \qquad
        \rho' = (1 - z')\max(\rho - m, 0) + z'\rho_\text{reset}
    \end{align*}

**The sums.** Both currents are sums over the non-zero inputs in ascending order (h, k = 0, 1, ...),
added one after the other to 0. Zeros are skipped: with finite weights, adding x_h W = ±0 never
changes a float sum. That is one fixed order on every CPU and at every thread count, but not the order
of torch's ``linear`` (MKL's, which depends on the CPU), so voltages differ from Norse's loop by float
rounding, and a neuron whose voltage lands within that rounding of its threshold may spike in one and
not the other (``tests/equivalence.py`` checks that such flips happen only there).

**The kernels.** A call runs three of them, each on torch's own OpenMP threads (:mod:`.parallel`):

1. :func:`_spike_lists` lists, per step and chain, the inputs that are not zero (the input, up to
   T x B x H floats, is read once, in memory order, split into blocks of steps);
2. :func:`_forward` iterates the step for a range of chains, adding one weight row per listed input
   and per spike of the previous step (:func:`_add_rows`: the partial sums in registers, :mod:`.simd`);
3. :func:`_backward` runs BPTT, the adjoint dj of every step's current jump, and sums the weight
   gradients ``dW_in = sum dj x^T`` and ``dW_rec = sum dj z^T`` over the listed inputs and spikes.
   Its surrogate gradients are Norse 1.1.0's ("tanh", "heavi_erfc", "super") wherever Norse applies
   Theta: the spike threshold, the refractory mask Theta(rho) (also where rho < 0) and the readout
   Theta(rho'). The voltage reset uses the detached spike, relu has gradient 0 at 0, and the
   recurrent-weight gradient has a zero diagonal (no autapses). Gradients reach the input, the
   weights, the initial state and, through the final state, an earlier run.

**Threads.** The batch is cut into at most :data:`GROUPS` groups of consecutive chains, however many
threads run them; each group sums its own weight gradients (in the order t = T - 1, ..., 0, then
chain by chain), and the groups' sums are added in group order. Everything else is computed per step
and chain. So the same input gives bit for bit the same numbers at any thread count.
"""

import functools
import math

import numpy as np
import torch
from norse.torch.functional.lif import LIFState
from norse.torch.functional.lif_refrac import LIFRefracParameters, LIFRefracState

from . import jit as compiler
from . import simd
from .arguments import Problem, neuron_parameters
from .buffers import BufferPool
from .jit import jit
from .parallel import in_parallel

METHODS = {"tanh": 0, "heavi_erfc": 1, "super": 2}  # Norse's surrogates that the kernels differentiate
GROUPS = 16  # the batch splits into at most this many gradient groups (and runs on at most as many threads)
# rows of the parameter array [7, B, N] and of the state array [4, B, N]
A, C, V_LEAK, V_TH, V_RESET, RHO_RESET, ALPHA = range(7)
Z, V, I, RHO = range(4)
_PERMUTATIONS = simd.permutations()  # for the AVX2 scan
_BUFFERS = BufferPool()  # the spike lists: up to T * B * H indices, reused once no run refers to them


# ---------------------------------------------------------------------------------------------------
# kernels (float32 throughout: every constant is float32, so nothing is promoted to float64)


@functools.partial(jit, inline=True)
def _surrogate(x, method, alpha):
    """Norse 1.1.0's backward of Theta at x: tanh: 1 - tanh(alpha x)^2; heavi_erfc: 2 exp(-(alpha
    x)^2) / sqrt(pi); super: 1 / (|x| + 1)^2 (no alpha). Exactly 0 where Norse's float32 value is 0
    (tanhf rounds to 1 beyond |alpha x| = 9.1, expf(-y^2) underflows beyond 10.4)."""
    if method == 2:
        d = abs(x) + np.float32(1.0)
        return np.float32(1.0) / (d * d)
    if x == np.float32(0.0):  # the common case (rho = 0), without tanh or exp
        return np.float32(1.0) if method == 0 else np.float32(2.0) / np.float32(math.sqrt(math.pi))
    y = x * alpha
    if method == 0:
        if abs(y) > np.float32(9.5):
            return np.float32(0.0)
        t = math.tanh(y)
        return np.float32(1.0) - t * t
    if abs(y) > np.float32(10.5):
        return np.float32(0.0)
    return np.float32(2.0) * math.exp(-(y * y)) / np.float32(math.sqrt(math.pi))


@jit
def _spike_lists(x, t0, t1, indices, starts, stops):
    """List the non-zero inputs of steps t0 <= t < t1 of ``x`` [T, B, H]: for each (t, b), ascending h
    in ``indices[starts[t, b]:stops[t, b]]``, written from ``indices[t0 * B * H]`` on. Returns True if
    every listed value is exactly 1. (-0.0 is listed too: it adds -0 * W = ±0, which changes no sum.)"""
    T, B, H = x.shape
    offset = t0 * B * H
    bits = x[t0:t1].reshape(-1).view(np.uint32)  # comparing bits is faster than comparing floats
    listed = indices[offset:]  # (indices from 0: no negative-index handling in the loops)
    one = np.uint32(0x3F800000)
    q = 0
    ones = 0
    for t in range(t1 - t0):
        for b in range(B):
            row = (t * B + b) * H
            starts[t0 + t, b] = offset + q
            for h in range(H):  # branch-free: write h, keep it if x is not zero
                listed[q] = h
                q += bits[row + h] != 0
            for h in range(H):  # a separate loop, which the compiler vectorises
                ones += bits[row + h] == one
            stops[t0 + t, b] = offset + q
    return ones == q


@jit
def _spike_lists_avx2(x, t0, t1, indices, starts, stops, table):
    """:func:`_spike_lists`, 8 inputs at a time (:func:`simd.compress8`, ``table`` = its permutations);
    the same lists."""
    T, B, H = x.shape
    offset = t0 * B * H
    bits = x[t0:t1].reshape(-1).view(np.uint32)
    listed = indices[offset:]
    whole = H - H % 8  # inputs h < whole 8 at a time; each block writes only where its own inputs have room
    q = 0
    ones = 0
    for t in range(t1 - t0):
        for b in range(B):
            row = (t * B + b) * H
            starts[t0 + t, b] = offset + q
            for h in range(0, whole, 8):
                count, count_ones = simd.compress8(bits, row + h, listed, q, h, table)
                q += count
                ones += count_ones
            for h in range(whole, H):
                listed[q] = h
                q += bits[row + h] != 0
                ones += bits[row + h] == np.uint32(0x3F800000)
            stops[t0 + t, b] = offset + q
    return ones == q


@functools.partial(jit, inline=True)
def _add_rows(y, i, x, rows, start, stop, scale, scaled):
    """y[i] += s_r x[r] for r = rows[start], ..., rows[stop - 1], added to y[i] one after the other;
    s_r = scale[r] if ``scaled``, else 1 (for 0/1 inputs: 1 x = x exactly). y, x: [., N]."""
    N = y.shape[1]
    vectors = N - N % simd.WIDTH  # lanes n < vectors in 8-lane vectors (:func:`simd.gather`), the rest one by one
    simd.gather(y, i, x, rows, start, stop, scale, scaled, vectors)
    _add_rows_lanes(y, i, x, rows, start, stop, scale, scaled, vectors)


@functools.partial(jit, inline=True)
def _add_rows_lanes(y, i, x, rows, start, stop, scale, scaled, first):
    """:func:`_add_rows` for the lanes n >= first that the vectors leave, one at a time."""
    for n in range(first, y.shape[1]):
        for q in range(start, stop):
            r = rows[q]
            y[i, n] += (scale[r] if scaled else np.float32(1.0)) * x[r, n]


@functools.partial(jit, inline=True)
def _add_rows2(y, x, rows, start0, stop0, start1, stop1, scale0, scale1, scaled):
    """:func:`_add_rows` into y[0] (rows[start0:stop0], scale0) and y[1] (rows[start1:stop1], scale1)
    at once (:func:`simd.gather2`), each summed in the same order as alone."""
    N = y.shape[1]
    vectors = N - N % simd.WIDTH
    simd.gather2(y, 0, 1, x, rows, start0, stop0, start1, stop1, scale0, scale1, scaled, vectors)
    _add_rows_lanes(y, 0, x, rows, start0, stop0, scale0, scaled, vectors)
    _add_rows_lanes(y, 1, x, rows, start1, stop1, scale1, scaled, vectors)


@functools.partial(jit, inline=True)
def _add_to_rows(y, rows, start, stop, scale, scaled, x, i):
    """y[r] += s_r x[i] for r = rows[start], ..., rows[stop - 1] (s_r as in :func:`_add_rows`)."""
    N = y.shape[1]
    vectors = N - N % simd.WIDTH
    simd.scatter(y, rows, start, stop, scale, scaled, x, i, vectors)
    for n in range(vectors, N):
        for q in range(start, stop):
            r = rows[q]
            y[r, n] += (scale[r] if scaled else np.float32(1.0)) * x[i, n]


@jit
def _forward(b0, b1, x, indices, starts, stops, binary, w_in_t, w_rec_t, state0, params,
             z_out, rho_out, ref_out, v_out, vd_out, i_final):
    """Iterate the step for the chains b0 <= b < b1.

    In: x [T, B, H] input and its lists from :func:`_spike_lists` (binary: all listed values are 1),
    w_in_t [H, N] and w_rec_t [N, N] the transposed weights, state0 [4, B, N] (z, v, i, rho), params
    [7, B, N] (a, c, v_leak, v_th, v_reset, rho_reset, alpha).
    Out: the state after every step z', rho', Theta(rho'), v' and v~ [T, B, N], the last current i [B, N].
    """
    T = x.shape[0]
    N = w_in_t.shape[1]
    zero, one = np.float32(0.0), np.float32(1.0)
    # Each step in two phases: the currents of every chain, then one loop over all chains' neurons, on
    # flat arrays of the kernel's own, which LLVM knows alias nothing else, so that it compiles to
    # vector instructions (the outputs are copied out afterwards).
    L = b1 - b0
    z = state0[Z, b0:b1].copy().reshape(-1)  # [L * N]
    v = state0[V, b0:b1].copy().reshape(-1)
    i = state0[I, b0:b1].copy().reshape(-1)
    rho = state0[RHO, b0:b1].copy().reshape(-1)
    prm = params[:, b0:b1].copy().reshape(7, -1)  # [7, L * N]
    a, c, v_leak, v_th, v_reset, rho_reset = prm[A], prm[C], prm[V_LEAK], prm[V_TH], prm[V_RESET], prm[RHO_RESET]
    # this step's z', rho', Theta(rho'), v', v~: one array each (stores to one array's rows might alias)
    z_new, rho_new, ref_new, v_new, vd_new = (np.empty(L * N, np.float32), np.empty(L * N, np.float32),
                                              np.empty(L * N, np.float32), np.empty(L * N, np.float32),
                                              np.empty(L * N, np.float32))
    current = np.zeros((L, N), np.float32)  # I_in
    recurrent = np.zeros((L, N), np.float32)  # I_rec
    spiking = np.empty(N, np.int64)  # the neurons k with z_k != 0
    for t in range(T):
        current[:] = zero
        recurrent[:] = zero
        for l in range(0, L, 2):  # I_in: the listed inputs in ascending order, two chains at once where there are two
            b = b0 + l
            if l + 1 < L:
                _add_rows2(current[l:l + 2], w_in_t, indices, starts[t, b], stops[t, b], starts[t, b + 1],
                           stops[t, b + 1], x[t, b], x[t, b + 1], not binary)
            else:
                _add_rows(current, l, w_in_t, indices, starts[t, b], stops[t, b], x[t, b], not binary)
        for l in range(L):  # I_rec: the spikes of the previous step in ascending order
            count = 0
            for k in range(N):
                spiking[count] = k
                count += z[l * N + k] != zero
            _add_rows(recurrent, l, w_rec_t, spiking, 0, count, z[l * N:(l + 1) * N], True)
        drive = current.reshape(-1)
        feedback = recurrent.reshape(-1)
        for e in range(L * N):  # branch-free selects: spikes are too irregular for branch prediction
            j = (i[e] + drive[e]) + feedback[e]
            v_decayed = v[e] + a[e] * ((v_leak[e] - v[e]) + j)
            i[e] = j + c[e] * j
            refractory = rho[e] > zero  # m
            fired = v_decayed - v_th[e] > zero  # z~
            spike = fired & (not refractory)  # z'
            v_lif = v_reset[e] if fired else v_decayed
            v[e] = v[e] if refractory else v_lif
            counted = max(rho[e] - (one if refractory else zero), zero)
            rho[e] = rho_reset[e] if spike else counted
            z[e] = one if spike else zero
            z_new[e] = z[e]
            rho_new[e] = rho[e]
            ref_new[e] = one if rho[e] > zero else zero
            v_new[e] = v[e]
            vd_new[e] = v_decayed
        z_out[t, b0:b1] = z_new.reshape(L, N)
        rho_out[t, b0:b1] = rho_new.reshape(L, N)
        ref_out[t, b0:b1] = ref_new.reshape(L, N)
        v_out[t, b0:b1] = v_new.reshape(L, N)
        vd_out[t, b0:b1] = vd_new.reshape(L, N)
    i_final[b0:b1] = i.reshape(L, N)


@jit
def _backward(g0, g1, bounds, x, indices, starts, stops, binary, w_rec, z_rec, rho_rec, v_rec, vd_rec, state0, params,
              method, given, g_rho, g_ref, g_v, g_final, dj, grad_state0, grad_w_in_t, grad_w_rec_t):
    """BPTT for the gradient groups g0 <= g < g1 (chains bounds[g] <= b < bounds[g + 1] in group g).

    In: :func:`_forward`'s lists and records; w_rec [N, N] (not transposed); the gradients of the
    outputs rho', Theta(rho'), v' [T, B, N] (each read only where ``given`` [3] says the loss uses it)
    and of the final z and i, g_final [2, B, N].
    Out: dj [T, B, N], dL/dj of every step's current jump; grad_state0 [4, B, N], the gradient of
    the initial state; each group's weight gradients, transposed, grad_w_in_t [G, H, N] and
    grad_w_rec_t [G, N, N], each summed over its chains in the order t = T - 1, ..., 0, then b.

    Per chain the adjoints lv, li, lrho of the state (v, i, rho) run backwards in time; the adjoint of
    the spikes z'_t is lz = W_rec^T dj_{t+1}.
    """
    T, B, N = z_rec.shape
    zero, one = np.float32(0.0), np.float32(1.0)
    b0, b1 = bounds[g0], bounds[g1]
    # Each step in phases over all chains b0 <= b < b1 at once, on flat [L * N] arrays of the kernel's
    # own (which LLVM knows alias nothing else, so that the adjoint loop compiles to vector
    # instructions): W_rec^T dj_{t+1}, the records of step t, the surrogates, the adjoint, the
    # recurrent-weight gradient (chain by chain, in group order).
    L = b1 - b0
    neurons = np.arange(N)
    spiking = np.empty(N, np.int64)  # the neurons k with z_k != 0 at the previous step, and z
    z_prev = np.empty(N, np.float32)
    prm = params[:, b0:b1].copy().reshape(7, -1)  # [7, L * N]
    lz = np.zeros((L, N), np.float32)  # the adjoint of z'_t
    lv = np.zeros(L * N, np.float32)
    lrho = np.zeros(L * N, np.float32)
    li = g_final[1, b0:b1].copy().reshape(-1)
    step = np.zeros((7, L * N), np.float32)  # of step t: z', rho, v (before the step), v~, and the output gradients
    Z_NEW, RHO_PREV, V_PREV, V_DEC, G_RHO, G_REF, G_V = range(7)
    sigma_new = np.empty(L * N, np.float32)  # surrogate of Theta(rho') at step t
    sigma_spike = np.empty(L * N, np.float32)  # of the threshold z~
    sigma_rho = np.empty(L * N, np.float32)  # of Theta(rho') at step t, kept for t - 1
    dj_t = np.empty(L * N, np.float32)
    for l in range(L):
        for n in range(N):
            sigma_rho[l * N + n] = _surrogate(rho_rec[T - 1, b0 + l, n], method, params[ALPHA, b0 + l, n])
    for t in range(T - 1, -1, -1):
        for l in range(L):
            b = b0 + l
            if t == T - 1:  # the adjoint of z'_t: of the final state's z, or through the next step's current
                lz[l] = g_final[0, b]
            else:
                lz[l] = zero
                _add_rows(lz, l, w_rec, neurons, 0, N, dj[t + 1, b], True)  # W_rec^T dj_{t+1}
            e = l * N
            step[Z_NEW, e:e + N] = z_rec[t, b]
            step[RHO_PREV, e:e + N] = state0[RHO, b] if t == 0 else rho_rec[t - 1, b]
            step[V_PREV, e:e + N] = state0[V, b] if t == 0 else v_rec[t - 1, b]
            step[V_DEC, e:e + N] = vd_rec[t, b]
            if given[0]:
                step[G_RHO, e:e + N] = g_rho[t, b]
            if given[1]:
                step[G_REF, e:e + N] = g_ref[t, b]
            if given[2]:
                step[G_V, e:e + N] = g_v[t, b]
        lz_flat = lz.reshape(-1)
        for e in range(L * N):  # the surrogates, in a loop of their own: branches, tanh or exp near 0 only
            alpha = prm[ALPHA, e]
            rho_prev = step[RHO_PREV, e]
            sigma_new[e] = sigma_rho[e]  # of Theta(rho') at step t
            sigma_rho[e] = _surrogate(rho_prev, method, alpha)  # of Theta(rho), step t - 1's rho'
            threshold = step[V_DEC, e] - prm[V_TH, e]
            sigma_spike[e] = zero if rho_prev > zero else _surrogate(threshold, method, alpha)
        for e in range(L * N):
            rho_prev = step[RHO_PREV, e]
            v_prev = step[V_PREV, e]
            v_decayed = step[V_DEC, e]
            lv_n = lv[e] + step[G_V, e]  # (the output gradients are 0 where the loss does not use them)
            lrho_n = lrho[e] + step[G_RHO, e]
            lrho_n += step[G_REF, e] * sigma_new[e]  # the readout Theta(rho')
            refractory = rho_prev > zero  # m
            fired = v_decayed - prm[V_TH, e] > zero  # z~
            # rho' = (1 - z') relu(rho - m) + z' rho_reset   (relu has gradient 0 at 0)
            rho_in = rho_prev - (one if refractory else zero)
            lz_n = lz_flat[e] + lrho_n * (prm[RHO_RESET, e] - max(rho_in, zero))
            d_rho_in = lrho_n * (one - step[Z_NEW, e]) if rho_in > zero else zero
            # z' = (1 - m) z~;  v' = (1 - m) v_lif + m v,  v_lif = (1 - z~) v~ + z~ v_reset (z~ detached)
            d_m = -d_rho_in - (lz_n if fired else zero)
            v_lif = prm[V_RESET, e] if fired else v_decayed
            d_m += lv_n * (v_prev - v_lif)
            d_vd = (zero if (refractory or fired) else lv_n) + lz_n * sigma_spike[e]
            # m = Theta(rho);  v~ = v + a ((v_leak - v) + j);  i' = j + c j
            lrho[e] = d_rho_in + d_m * sigma_rho[e]
            dj_t[e] = li[e] + prm[C, e] * li[e] + prm[A, e] * d_vd
            lv[e] = (lv_n if refractory else zero) + d_vd - prm[A, e] * d_vd
            li[e] = dj_t[e]
        dj[t, b0:b1] = dj_t.reshape(L, N)
        # j = i + W_in x + W_rec z_{t-1}: the weight gradients over the listed inputs and the spikes
        for g in range(g0, g1):
            for b in range(bounds[g], bounds[g + 1]):
                count = 0
                for k in range(N):
                    z_prev[k] = state0[Z, b, k] if t == 0 else z_rec[t - 1, b, k]
                    spiking[count] = k
                    count += z_prev[k] != zero
                _add_to_rows(grad_w_rec_t[g], spiking, 0, count, z_prev, True, dj[t], b)
    for g in range(g0, g1):  # group by group, so that one group's gradient [H, N] stays in the cache
        grad = grad_w_in_t[g]
        for t in range(T - 1, -1, -1):
            for b in range(bounds[g], bounds[g + 1]):
                _add_to_rows(grad, indices, starts[t, b], stops[t, b], x[t, b], not binary, dj[t], b)
    for b in range(b0, b1):  # the initial state; z entered j_0 through W_rec
        e = (b - b0) * N
        grad_state0[V, b] = lv[e:e + N]
        grad_state0[I, b] = li[e:e + N]
        grad_state0[RHO, b] = lrho[e:e + N]
        grad_state0[Z, b] = zero
        _add_rows(grad_state0[Z], b, w_rec, neurons, 0, N, dj[0, b], True)


# ---------------------------------------------------------------------------------------------------


def group_bounds(batch_size: int) -> np.ndarray:
    """[G + 1] bounds of the gradient groups: group g holds chains bounds[g] <= b < bounds[g + 1]."""
    groups = min(batch_size, GROUPS)
    return np.array([g * batch_size // groups for g in range(groups + 1)], np.int64)


def _workers(count: int) -> list:
    """[start, stop) of each of min(torch threads, count) contiguous ranges of ``count`` items."""
    workers = max(1, min(torch.get_num_threads(), count))
    return [(w * count // workers, (w + 1) * count // workers) for w in range(workers)]


def _sum_in_order(partial: np.ndarray) -> np.ndarray:
    """partial[0] + partial[1] + ... (the groups' gradients), added in this order."""
    total = partial[0].copy()
    for group in partial[1:]:
        total += group
    return total


def _float32_array(tensor: torch.Tensor, shape) -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().to(torch.float32).expand(shape).numpy())


def neuron_constants(p: LIFRefracParameters, dt, batch_size: int, neurons: int) -> np.ndarray:
    """[7, B, N]: a = dt tau_mem_inv, c = -dt tau_syn_inv (computed as Norse computes them), v_leak,
    v_th, v_reset, rho_reset, alpha, each broadcast to [B, N] as float32."""
    values = [dt * p.lif.tau_mem_inv, -dt * p.lif.tau_syn_inv, p.lif.v_leak, p.lif.v_th, p.lif.v_reset, p.rho_reset,
              p.lif.alpha]
    shape = (batch_size, neurons)
    return np.stack([_float32_array(torch.as_tensor(value), shape) for value in values])


def problem(input_spikes, input_weights, recurrent_weights, p, dt, state) -> Problem:
    """Whether the kernels compute exactly what Norse's loop does for these (already checked) arguments."""
    environment = _compile_problem()
    if environment:
        return Problem(environment, False)
    if input_spikes.device.type != "cpu":
        return Problem(f"the tensors are on {input_spikes.device}, not on the CPU", True)
    if input_spikes.dtype != torch.float32:
        return Problem(f"the tensors are {input_spikes.dtype}, not float32", True)
    if p.lif.method not in METHODS:
        return Problem(f"p.lif.method={p.lif.method!r} is not one of the surrogates they differentiate "
                       f"{tuple(METHODS)}", True)
    for name, value in neuron_parameters(p, dt).items():
        if isinstance(value, torch.Tensor):
            if value.requires_grad:
                return Problem(f"{name} requires grad, and they do not differentiate the parameters", True)
            if not torch.isfinite(value).all():
                return Problem(f"{name} is not finite", True)
        elif not math.isfinite(value):
            return Problem(f"{name} is not finite", True)
    for name, weights in (("input_weights", input_weights), ("recurrent_weights", recurrent_weights)):
        if not torch.isfinite(weights).all():
            return Problem(f"{name} are not all finite (the kernels skip zero inputs, Norse adds 0 * inf = nan)", True)
    return Problem("", False)


class _LIFRefracNumba(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input_spikes, input_weights, recurrent_weights, z0, v0, i0, rho0, params, method):
        T, B, H = input_spikes.shape
        N = input_weights.shape[0]
        x = input_spikes.detach().contiguous().numpy()
        state0 = np.stack([_float32_array(field, (B, N)) for field in (z0, v0, i0, rho0)])
        indices = _BUFFERS.empty((T * B * H,), np.int32)  # pages never written cost no memory
        starts, stops = np.empty((T, B), np.int64), np.empty((T, B), np.int64)
        lists = (indices, starts, stops)
        scans = [(_spike_lists_avx2, (x, t0, t1, *lists, _PERMUTATIONS)) if simd.AVX2 else
                 (_spike_lists, (x, t0, t1, *lists)) for t0, t1 in _workers(T)]  # the same lists either way
        binary = all(in_parallel(scans))
        spikes, rho, refractory, voltages, v_decayed = (torch.empty(T, B, N) for _ in range(5))
        i_final = torch.empty(B, N)
        records = [tensor.numpy() for tensor in (spikes, rho, refractory, voltages, v_decayed, i_final)]
        w_in_t = input_weights.detach().t().contiguous().numpy()
        w_rec_t = recurrent_weights.detach().t().contiguous().numpy()
        in_parallel([(_forward, (b0, b1, x, indices, starts, stops, binary, w_in_t, w_rec_t, state0, params, *records))
                     for b0, b1 in _workers(B)])
        ctx.save_for_backward(input_spikes, input_weights, recurrent_weights, spikes, rho, voltages, v_decayed)
        ctx.lists = (indices, starts, stops, binary)
        ctx.state0, ctx.params, ctx.method = state0, params, METHODS[method]
        ctx.state_shapes = [field.shape for field in (z0, v0, i0, rho0)]
        ctx.mark_non_differentiable(spikes)
        ctx.set_materialize_grads(False)  # the gradients of unused outputs arrive as None
        return spikes, rho, refractory, voltages, spikes[-1].clone(), i_final

    @staticmethod
    def backward(ctx, _grad_spikes, grad_rho, grad_refractory, grad_voltages, grad_z_final, grad_i_final):
        input_spikes, input_weights, recurrent_weights, spikes, rho, voltages, v_decayed = ctx.saved_tensors
        indices, starts, stops, binary = ctx.lists
        T, B, H = input_spikes.shape
        N = input_weights.shape[0]
        bounds = group_bounds(B)
        groups = len(bounds) - 1
        outputs = (grad_rho, grad_refractory, grad_voltages)
        given = np.array([grad is not None for grad in outputs])
        nothing = np.zeros((1, 1, 1), np.float32)
        output_grads = [nothing if grad is None else _float32_array(grad, (T, B, N)) for grad in outputs]
        g_final = np.zeros((2, B, N), np.float32)
        for row, grad in enumerate((grad_z_final, grad_i_final)):
            if grad is not None:
                g_final[row] = _float32_array(grad, (B, N))
        dj = np.empty((T, B, N), np.float32)
        grad_state0 = np.empty((4, B, N), np.float32)
        grad_w_in_t = np.zeros((groups, H, N), np.float32)
        grad_w_rec_t = np.zeros((groups, N, N), np.float32)
        args = (bounds, input_spikes.detach().contiguous().numpy(), indices, starts, stops, binary,
                recurrent_weights.detach().contiguous().numpy(), spikes.numpy(), rho.numpy(), voltages.numpy(),
                v_decayed.numpy(), ctx.state0, ctx.params, ctx.method, given, *output_grads, g_final, dj, grad_state0,
                grad_w_in_t, grad_w_rec_t)
        in_parallel([(_backward, (g0, g1) + args) for g0, g1 in _workers(groups)])
        needs = ctx.needs_input_grad
        grad_input = None
        if needs[0]:
            grad_input = (torch.from_numpy(dj).reshape(T * B, N) @ input_weights.detach()).reshape(T, B, H)
        grad_w_in = torch.from_numpy(_sum_in_order(grad_w_in_t)).t().contiguous() if needs[1] else None
        grad_w_rec = None
        if needs[2]:
            grad_w_rec = torch.from_numpy(_sum_in_order(grad_w_rec_t)).t().contiguous()
            grad_w_rec.fill_diagonal_(0.0)  # no autapses, as Norse's hook makes it
        grad_state = [torch.from_numpy(grad_state0[row]).sum_to_size(shape) if needs[3 + row] else None
                      for row, shape in enumerate(ctx.state_shapes)]
        return (grad_input, grad_w_in, grad_w_rec, *grad_state, None, None)


def lif_refrac_numba(input_spikes, input_weights, recurrent_weights, p, dt, state):
    """The kernels on checked arguments for which :func:`problem` found none; returns (spikes, rho,
    refractory, voltages), each ``[T, B, N]``, and the final state."""
    B, N = input_spikes.shape[1], input_weights.shape[0]
    params = neuron_constants(p, dt, B, N)
    spikes, rho, refractory, voltages, z_final, i_final = _LIFRefracNumba.apply(
        input_spikes, input_weights, recurrent_weights, state.lif.z, state.lif.v, state.lif.i, state.rho, params,
        p.lif.method)
    final_state = LIFRefracState(LIFState(z_final, voltages[-1], i_final), rho[-1])
    return spikes, rho, refractory, voltages, final_state


@functools.lru_cache(maxsize=None)
def _compile_problem() -> str:
    """Why the kernels cannot run in this process, or ""; compiles them (or loads them from numba's
    cache) on a tiny problem, again without the cache if it fails with it."""
    if compiler.NUMBA_PROBLEM:
        return compiler.NUMBA_PROBLEM
    try:
        _run_tiny_problem()
        return ""
    except Exception as error:  # a numba typing or lowering error, or its cache failing
        failure = error
    if compiler.disable_cache():
        try:
            _run_tiny_problem()
            compiler.warn_without_cache(f"{type(failure).__name__}: {failure}")
            return ""
        except Exception as error:
            failure = error
    return f"the numba kernels failed to compile: {type(failure).__name__}: {failure}"


def _run_tiny_problem() -> None:
    """Forward and backward through every kernel, on 2 steps of 2 chains (binary and weighted input)."""
    with torch.enable_grad():  # the first call may come from inside torch.no_grad()
        weights = torch.ones(2, 3, requires_grad=True)
        recurrent = torch.ones(2, 2, requires_grad=True)
        state = LIFRefracState(LIFState(*[torch.zeros(2, 2, requires_grad=True)] * 3), torch.zeros(2, 2))
        x = torch.tensor([[[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]]] * 2)
        spikes, rho, refractory, voltages, final = lif_refrac_numba(
            x, weights, recurrent, LIFRefracParameters(), 1e-3, state)
        (rho.sum() + refractory.sum() + voltages.sum() + final.lif.z.sum() + final.lif.i.sum()).backward()


def available() -> bool:
    """True if numba is importable and the kernels compile (or load from numba's cache)."""
    return not _compile_problem()
