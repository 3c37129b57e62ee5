r"""The Triton kernels of the GPU backend (:mod:`.gpu`): Norse's ``lif_refrac_step`` iterated over time,
forward and in reverse time (the adjoint), one program per block of ``BLOCK_B`` chains.

Each program holds the state of its chains, ``[BLOCK_B, BLOCK_N]`` (``BLOCK_N`` = N rounded up to a
power of two, at least 16), in registers and loops over the T steps. The recurrent input of a step
is ``tl.dot`` of the previous spikes ``[BLOCK_B, N]`` with ``W_rec^T`` ``[N, N]`` in full float32
(``input_precision="ieee"``: no TF32). ``W_rec`` stays in registers for ``BLOCK_N <= 64``; for larger
populations the product is summed in chunks of ``BLOCK_K`` neurons read back from the records the
program has just written (after a barrier, bypassing L1 with ``.cg``). The step's input projection
``W_in x_t`` comes from one matmul over all T steps (:mod:`.gpu`); the program loads it one step
ahead, so that its memory latency overlaps the step before.

The records ``z``, ``rho`` and ``v`` are ``[T + 1, B, N]``: row 0 holds the initial state, row t + 1
the state after step t, so that every step reads its previous state at the same offset.
"""

import triton
import triton.language as tl

METHODS = {"tanh": 0, "heavi_erfc": 1, "super": 2}  # Norse 1.1.0's surrogates, as the kernels' METHOD


@triton.jit
def _surrogate(x, alpha, METHOD: tl.constexpr):
    """Norse 1.1.0's backward of Theta at x: tanh 1 - tanh(alpha x)^2; heavi_erfc 2 exp(-(alpha x)^2) /
    sqrt(pi); super 1 / (|x| + 1)^2 (alpha ignored). tanh(y) = 1 - 2 / (exp(2y) + 1) rounds to +-1, and
    the surrogate to 0, where Norse's float32 tanh does (|y| > 9); y is clipped to keep exp finite."""
    if METHOD == 2:
        d = tl.abs(x) + 1.0
        result = 1.0 / (d * d)
    elif METHOD == 0:
        y = tl.minimum(tl.maximum(x * alpha, -20.0), 20.0)
        t = 1.0 - 2.0 / (tl.exp(2.0 * y) + 1.0)
        result = 1.0 - t * t
    else:
        y = x * alpha
        result = 2.0 * tl.exp(-(y * y)) / 1.7724538509055159
    return result


@triton.jit
def _chain_block(B, N, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr):
    """This program's chains (rows) and neurons (cols), which of them exist, the offsets of its
    [BLOCK_B, BLOCK_N] tile in a [B, N] array, and the elements per time step (int64, so that
    T * B * N may exceed 2**31)."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.arange(0, BLOCK_N)
    row_ok = rows < B
    col_ok = cols < N
    mask = row_ok[:, None] & col_ok[None, :]
    offs = rows[:, None] * N + cols[None, :]
    return rows, row_ok, cols, col_ok, mask, offs, B.to(tl.int64) * N


@triton.jit
def _parameters(params, cols, col_ok, N):
    """The rows of ``params`` [7, N], each as [1, BLOCK_N] (a kernel's unused ones are never loaded)."""
    a = tl.load(params + cols, mask=col_ok, other=0.0)[None, :]
    c = tl.load(params + N + cols, mask=col_ok, other=0.0)[None, :]
    v_leak = tl.load(params + 2 * N + cols, mask=col_ok, other=0.0)[None, :]
    v_th = tl.load(params + 3 * N + cols, mask=col_ok, other=0.0)[None, :]
    v_reset = tl.load(params + 4 * N + cols, mask=col_ok, other=0.0)[None, :]
    rho_reset = tl.load(params + 5 * N + cols, mask=col_ok, other=0.0)[None, :]
    alpha = tl.load(params + 6 * N + cols, mask=col_ok, other=0.0)[None, :]
    return a, c, v_leak, v_th, v_reset, rho_reset, alpha


@triton.jit
def _product_from_memory(src, rows, row_ok, w, k_stride, n_stride, N, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr,
                         BLOCK_K: tl.constexpr):
    """sum_k src[b, k] w[k * k_stride + n * n_stride] for the rows b of ``src`` ``[B, N]``, in chunks of
    BLOCK_K; ``src`` was written by this program and is read from L2 (``.cg``), after a barrier."""
    cols = tl.arange(0, BLOCK_N)
    total = tl.full((BLOCK_B, BLOCK_N), 0.0, tl.float32)
    for k0 in tl.static_range(0, BLOCK_N, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(src + rows[:, None] * N + ks[None, :], mask=row_ok[:, None] & (ks[None, :] < N), other=0.0,
                    cache_modifier=".cg")
        w_chunk = tl.load(w + ks[:, None] * k_stride + cols[None, :] * n_stride,
                          mask=(ks[:, None] < N) & (cols[None, :] < N), other=0.0)
        total = tl.dot(x, w_chunk, total, input_precision="ieee")
    return total


@triton.jit(do_not_specialize=["T", "B"])  # one compiled kernel for every T and B
def lif_refrac_forward(
    proj, w_rec, params, z, rho, v, refractory, v_decayed, i_state,
    T, B, N,
    RECORD: tl.constexpr, W_IN_REGISTERS: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """T steps of ``lif_refrac_step`` for the chains of this program.

    ``proj`` [T, B, N]: W_in x_t. ``w_rec`` [N, N]. ``params`` [7, N]: dt tau_mem_inv, -dt tau_syn_inv,
    v_leak, v_th, v_reset, rho_reset, alpha. ``z``, ``rho``, ``v`` [T + 1, B, N]: row 0 is read (the
    initial state), rows 1..T written. ``refractory`` = Theta(rho') and, if RECORD, ``v_decayed`` (what
    only the backward pass needs) [T, B, N] are written. ``i_state`` [B, N]: the initial synaptic
    current, overwritten with the last one.
    """
    rows, row_ok, cols, col_ok, mask, offs, step = _chain_block(B, N, BLOCK_B, BLOCK_N)
    a, c, v_leak, v_th, v_reset, rho_reset, alpha = _parameters(params, cols, col_ok, N)
    if W_IN_REGISTERS:  # w_t[k, n] = W_rec[n, k]
        w_t = tl.load(w_rec + cols[None, :] * N + cols[:, None], mask=col_ok[None, :] & col_ok[:, None], other=0.0)

    z_prev = tl.load(z + offs, mask=mask, other=0.0)
    v_prev = tl.load(v + offs, mask=mask, other=0.0)
    r = tl.load(rho + offs, mask=mask, other=0.0)
    i = tl.load(i_state + offs, mask=mask, other=0.0)
    p_next = tl.load(proj + offs, mask=mask, other=0.0)
    for t in range(T):
        p_now = p_next
        p_next = tl.load(proj + step * (t + 1) + offs, mask=mask & (t + 1 < T), other=0.0)
        if W_IN_REGISTERS:
            recurrent = tl.dot(z_prev, w_t, input_precision="ieee")
        else:
            recurrent = _product_from_memory(z + step * t, rows, row_ok, w_rec, 1, N, N, BLOCK_B, BLOCK_N, BLOCK_K)
        # Norse's order: j = i + linear(x, W_in) + linear(z, W_rec); v~ = v + a ((v_leak - v) + j); i' = j + c j
        j = (i + p_now) + recurrent
        vd = v_prev + a * ((v_leak - v_prev) + j)
        i = j + c * j
        # a refractory neuron (rho > 0) holds its voltage, cannot spike and counts rho down to 0
        refr = r > 0.0
        fire = ((vd - v_th) > 0.0) & (refr == 0)
        z_new = tl.where(fire, 1.0, 0.0)
        v_new = tl.where(fire, v_reset, tl.where(refr, v_prev, vd))
        r = tl.where(fire, rho_reset, tl.maximum(r - tl.where(refr, 1.0, 0.0), 0.0))
        after = step * (t + 1) + offs
        tl.store(z + after, z_new, mask=mask)
        tl.store(rho + after, r, mask=mask)
        tl.store(v + after, v_new, mask=mask)
        tl.store(refractory + step * t + offs, tl.where(r > 0.0, 1.0, 0.0), mask=mask)
        if RECORD:
            tl.store(v_decayed + step * t + offs, vd, mask=mask)
        if not W_IN_REGISTERS:
            tl.debug_barrier()  # the next step reads these spikes back from memory
        z_prev = z_new
        v_prev = v_new
    tl.store(i_state + offs, i, mask=mask)


@triton.jit
def _step_records(z, rho, v, v_decayed, grad_z, grad_rho, grad_refractory, grad_v, at, step, mask, zero,
                  HAS_GRAD_Z: tl.constexpr, HAS_GRAD_RHO: tl.constexpr, HAS_GRAD_REFRACTORY: tl.constexpr,
                  HAS_GRAD_V: tl.constexpr):
    """What the backward pass reads for step t, at ``at`` = t * step + offsets: the spikes z_t, the
    state before the step (rho, v), the decayed voltage, and the output gradients that are given
    (``zero`` for the others)."""
    z_t = tl.load(z + step + at, mask=mask, other=0.0)
    rho_before = tl.load(rho + at, mask=mask, other=0.0)
    v_before = tl.load(v + at, mask=mask, other=0.0)
    vd = tl.load(v_decayed + at, mask=mask, other=0.0)
    g_z = zero
    g_rho = zero
    g_ref = zero
    g_v = zero
    if HAS_GRAD_Z:
        g_z = tl.load(grad_z + step + at, mask=mask, other=0.0)
    if HAS_GRAD_RHO:
        g_rho = tl.load(grad_rho + step + at, mask=mask, other=0.0)
    if HAS_GRAD_REFRACTORY:
        g_ref = tl.load(grad_refractory + at, mask=mask, other=0.0)
    if HAS_GRAD_V:
        g_v = tl.load(grad_v + step + at, mask=mask, other=0.0)
    return z_t, rho_before, v_before, vd, g_z, g_rho, g_ref, g_v


@triton.jit(do_not_specialize=["T", "B"])
def lif_refrac_backward(
    z, rho, v, v_decayed, w_rec, params,
    grad_z, grad_rho, grad_refractory, grad_v, grad_i,
    dj, grad_v0, grad_rho0,
    T, B, N,
    METHOD: tl.constexpr, HAS_GRAD_Z: tl.constexpr, HAS_GRAD_RHO: tl.constexpr, HAS_GRAD_REFRACTORY: tl.constexpr,
    HAS_GRAD_V: tl.constexpr, HAS_GRAD_I: tl.constexpr, W_IN_REGISTERS: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """The adjoint of :func:`lif_refrac_forward`, from t = T - 1 down to 0: writes dL/dj_t, the
    adjoint of each step's current jump, into ``dj`` [T, B, N], and the adjoints of the initial v and
    rho into ``grad_v0``, ``grad_rho0`` [B, N].

    Reads the forward records (``z``, ``rho``, ``v`` [T + 1, B, N], ``v_decayed`` [T, B, N]) and the
    gradients of the outputs that have one (HAS_GRAD_*): ``grad_z``, ``grad_rho``, ``grad_v`` [T + 1, B, N]
    (row 0 unused), ``grad_refractory`` [T, B, N], ``grad_i`` [B, N] (of the last current).
    The equations are autograd's through Norse's step: the surrogate of METHOD for the spike
    threshold and for Theta(rho) (both in the mask and in the readout), the reset with the detached
    spike, relu's gradient 0 at 0, and lz = W_rec^T dj_{t+1} for the spikes.
    """
    rows, row_ok, cols, col_ok, mask, offs, step = _chain_block(B, N, BLOCK_B, BLOCK_N)
    a, c, v_leak, v_th, v_reset, rho_reset, alpha = _parameters(params, cols, col_ok, N)
    if W_IN_REGISTERS:  # w[k, n] = W_rec[k, n]
        w = tl.load(w_rec + cols[:, None] * N + cols[None, :], mask=col_ok[:, None] & col_ok[None, :], other=0.0)

    zero = tl.full((BLOCK_B, BLOCK_N), 0.0, tl.float32)
    lv = zero  # adjoints of the state after the current step: v', i', rho'
    li = zero
    if HAS_GRAD_I:
        li = tl.load(grad_i + offs, mask=mask, other=0.0)
    lrho = zero
    dj_next = zero
    rho_new = tl.load(rho + step * T + offs, mask=mask, other=0.0)
    # the records of step T - 1, then each step's loads are issued one step ahead
    z_next, rho_next, v_next, vd_next, gz_next, grho_next, gref_next, gv_next = _step_records(
        z, rho, v, v_decayed, grad_z, grad_rho, grad_refractory, grad_v, step * (T - 1) + offs, step, mask, zero,
        HAS_GRAD_Z, HAS_GRAD_RHO, HAS_GRAD_REFRACTORY, HAS_GRAD_V)
    for s in range(T):
        t = T - 1 - s
        z_t, rho_prev, v_prev, vd = z_next, rho_next, v_next, vd_next
        g_z, g_rho, g_ref, g_v = gz_next, grho_next, gref_next, gv_next
        z_next, rho_next, v_next, vd_next, gz_next, grho_next, gref_next, gv_next = _step_records(
            z, rho, v, v_decayed, grad_z, grad_rho, grad_refractory, grad_v, step * (t - 1) + offs, step,
            mask & (t > 0), zero, HAS_GRAD_Z, HAS_GRAD_RHO, HAS_GRAD_REFRACTORY, HAS_GRAD_V)

        # the spikes z_t enter step t + 1 as W_rec z_t
        if W_IN_REGISTERS:
            lz = tl.dot(dj_next, w, input_precision="ieee")
        else:
            lz = _product_from_memory(dj + step * (t + 1), rows, row_ok & (t + 1 < T), w_rec, N, 1, N, BLOCK_B,
                                      BLOCK_N, BLOCK_K)
        lz = lz + g_z
        lv_t = lv + g_v
        # the readout Theta(rho') back-propagates through the surrogate of rho'
        lrho_t = lrho + g_rho + g_ref * _surrogate(rho_new, alpha, METHOD)
        m = tl.where(rho_prev > 0.0, 1.0, 0.0)
        threshold_distance = vd - v_th
        fired = threshold_distance > 0.0
        # rho' = (1 - z') relu(rho - m) + z' rho_reset   (relu has gradient 0 at 0)
        r_in = rho_prev - m
        lz_total = lz + lrho_t * (rho_reset - tl.maximum(r_in, 0.0))
        d_rin = tl.where(r_in > 0.0, lrho_t * (1.0 - z_t), 0.0)
        # z' = (1 - m) z~
        dzt = lz_total * (1.0 - m)
        dm = tl.where(fired, -d_rin - lz_total, -d_rin)
        # v' = (1 - m) v_lif + m v,  v_lif = (1 - z~) v~ + z~ v_reset  (z~ detached)
        dm = dm + lv_t * (v_prev - tl.where(fired, v_reset, vd))
        d_rho = d_rin + dm * _surrogate(rho_prev, alpha, METHOD)
        dvd = tl.where(fired, 0.0, lv_t * (1.0 - m)) + dzt * _surrogate(threshold_distance, alpha, METHOD)
        # v~ = v + a ((v_leak - v) + j),  i' = j + c j,  j = i + W_in x + W_rec z
        dj_t = li + c * li + a * dvd
        lv = lv_t * m + (dvd - a * dvd)
        li = dj_t
        lrho = d_rho
        tl.store(dj + step * t + offs, dj_t, mask=mask)
        if not W_IN_REGISTERS:
            tl.debug_barrier()  # the previous step reads dj_t back from memory
        dj_next = dj_t
        rho_new = rho_prev
    tl.store(grad_v0 + offs, lv, mask=mask)
    tl.store(grad_rho0 + offs, lrho, mask=mask)
