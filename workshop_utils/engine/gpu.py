r"""The GPU backend: Norse's ``lif_refrac_step`` iterated over time in fused Triton kernels, forward and BPTT.

:func:`lif_refrac_triton` computes what :func:`.reference.lif_refrac_loop` (Norse's loop) computes, with
the kernels of :mod:`.gpu_kernels`, in about ten launches per training step instead of about a
hundred small kernels per time step:

1. the input projection ``W_in x_t`` of all T steps as one matmul, ``[T * B, H] x [H, N]`` (cuBLAS);
2. the forward kernel: one program per block of 16 chains loops over the T steps with the state in
   registers, the recurrent input ``W_rec z`` as a float32 ``tl.dot``, the refractory readout
   Theta(rho) fused in, writing z, rho, v, Theta(rho) (the outputs) and, only when a gradient will be
   needed, the decayed voltage (what only the backward pass reads);
3. the backward kernel: the adjoint in reverse time, writing ``dj`` ``[T, B, N]``, the gradient of
   each step's current jump;
4. the weight gradients as two matmuls over the adjoints: ``dW_in = dj^T x``, ``dW_rec = dj^T z_prev``
   (z_prev: the spikes of the step before, the initial z for step 0), with a zero diagonal (no
   autapses, as Norse's recurrent cell without autapses and the reference make it).

Every output of Norse's loop has a gradient, as there: the voltages, the counters rho, Theta(rho),
the final state (continuing a run back-propagates through both pieces), and the gradients reach
the weights, the input and the initial state. Every field of ``LIFParameters`` and
``LIFRefracParameters`` is honoured as a number or a per-neuron ``[N]`` tensor; a form the kernels
do not implement (per-chain ``[B, N]`` parameters, parameters that require a gradient, another
surrogate) is reported by :func:`problem`, and the engine's "auto" then runs Norse's loop instead,
with a warning once per reason (``backend="triton"`` raises a ``ValueError`` naming it).

Float32 throughout: the kernels never use TF32, and the matmuls follow torch's setting as Norse's
loop does (``torch.backends.cuda.matmul``: full float32 by default). The sums of the two products are
taken in another order than torch's ``linear``, so voltages differ from Norse's by rounding (about
1e-7), which can flip a spike that lands at threshold; ``tests/equivalence.py`` shows such flips.

On CUDA tensors the kernels are compiled (the first call of each variant compiles for a few seconds;
Triton keeps them in its on-disk cache). On CPU tensors they run only in Triton's interpreter, which
is chosen by ``TRITON_INTERPRET=1`` in the environment *before* triton is first imported in the
process; it is slow and meant for the tests.
"""

import functools
from typing import NamedTuple

import torch
from norse.torch.functional.lif import LIFParameters, LIFState
from norse.torch.functional.lif_refrac import LIFRefracParameters, LIFRefracState

from .arguments import Problem

try:
    from . import gpu_kernels

    _IMPORT_PROBLEM = ""
except Exception as error:  # ImportError without triton, or a triton that does not match this Python/torch
    gpu_kernels = None
    _IMPORT_PROBLEM = f"triton cannot be imported ({type(error).__name__}: {error})"

MAX_NEURONS = 256  # above, the [16, N] tiles of the backward pass spill registers by tens of kilobytes
REGISTER_NEURONS = 64  # up to this padded N, W_rec stays in registers; above, it is read in chunks
_PARAMETERS = ("tau_mem_inv", "tau_syn_inv", "v_leak", "v_th", "v_reset", "rho_reset", "alpha")
def interpreted() -> bool:
    """True if the kernels run in Triton's interpreter (TRITON_INTERPRET=1 when triton was imported)."""
    return gpu_kernels is not None and not isinstance(gpu_kernels.lif_refrac_forward,
                                                      gpu_kernels.triton.runtime.JITFunction)


class LaunchConfig(NamedTuple):
    block_b: int  # chains per program: tl.dot needs at least 16 rows
    block_n: int  # N rounded up to a power of two, at least 16 (tl.dot's minimum)
    block_k: int  # neurons per chunk of the recurrent product when W_rec is not in registers
    in_registers: bool  # W_rec held in registers (block_n <= REGISTER_NEURONS)
    num_warps: int


def launch_config(neurons: int) -> LaunchConfig:
    """The kernels' block sizes for N = ``neurons``, chosen by the registers ptxas reports for sm_90
    (no spills up to N = 64; a few hundred bytes per thread at N = 128, a few kilobytes at 256)."""
    block_n = max(16, 1 << (neurons - 1).bit_length())
    if block_n <= REGISTER_NEURONS:
        return LaunchConfig(16, block_n, block_n, True, 4 if block_n == 16 else 8)
    return LaunchConfig(16, block_n, 16, False, 16)


# ---------------------------------------------------------------------------------------------------
# checks: shapes are errors on every backend; forms of parameters Norse accepts but the kernels do not
# implement are reasons to fall back (with "auto") or errors (with "triton")


def _parameter_tensors(p: LIFRefracParameters, dt, neurons: int):
    """(the parameters by name, as given, "") or (None, why the kernels cannot take them)."""
    if p.lif.method not in _methods():
        return None, f"method must be one of {tuple(_methods())}, got {p.lif.method!r}"
    values = {name: getattr(p.lif, name) for name in _PARAMETERS if name != "rho_reset"}
    values["rho_reset"] = p.rho_reset
    tensors = {}
    for name, value in values.items():
        tensor = torch.as_tensor(value)
        if tensor.requires_grad:
            return None, f"parameter {name} requires a gradient, which the triton backend does not compute"
        if tensor.dim() > 1 or (tensor.dim() == 1 and tensor.shape[0] not in (1, neurons)):
            return None, (f"parameter {name} must be a number or a per-neuron tensor of shape [N] = [{neurons}], "
                          f"got shape {list(tensor.shape)}")
        if tensor.dim() == 1 and torch.promote_types(tensor.dtype, torch.float32) != torch.float32:
            return None, f"parameter {name} is a {tensor.dtype} tensor, which would make Norse compute in that type"
        if not (tensor.is_floating_point() or tensor.dtype in (torch.int64, torch.int32, torch.int16, torch.int8)):
            return None, f"parameter {name} must be real, got {tensor.dtype}"
        tensors[name] = value  # as given: Norse computes dt * tau_mem_inv in double for a Python number
    dt_tensor = torch.as_tensor(dt)
    if dt_tensor.dim() != 0 or dt_tensor.requires_grad:
        return None, f"dt must be a number, got {dt!r}"
    return tensors, ""


def _methods() -> dict:
    """The surrogates the kernels implement, by name."""
    return gpu_kernels.METHODS if gpu_kernels is not None else {"tanh": 0, "heavi_erfc": 1, "super": 2}


def _pack_parameters(tensors: dict, dt, neurons: int) -> torch.Tensor:
    """The kernels' ``params`` ``[7, N]`` float32: dt tau_mem_inv, -dt tau_syn_inv, v_leak, v_th,
    v_reset, rho_reset, alpha, each computed with the torch operations of Norse's ``lif_step``."""
    rows = [dt * tensors["tau_mem_inv"], -dt * tensors["tau_syn_inv"]]  # Norse: dt * tau_mem_inv * (...)
    rows += [tensors[name] for name in ("v_leak", "v_th", "v_reset", "rho_reset", "alpha")]
    device = next((row.device for row in rows if isinstance(row, torch.Tensor) and row.device.type != "cpu"), "cpu")
    rows = [torch.as_tensor(row, device=device).to(torch.float32).expand(neurons) for row in rows]
    return torch.stack(rows).contiguous()


@functools.lru_cache(maxsize=16)
def _on_device(packed_bytes: bytes, neurons: int, device: torch.device) -> torch.Tensor:
    """The packed parameters on ``device``, copied once per distinct value (a copy from pageable host
    memory would make every call wait for the GPU)."""
    return torch.frombuffer(bytearray(packed_bytes), dtype=torch.float32).view(7, neurons).to(device)


def _parameters_for(tensors: dict, dt, neurons: int, device: torch.device) -> torch.Tensor:
    packed = _pack_parameters(tensors, dt, neurons)
    if packed.device == device:
        return packed
    if packed.device.type == "cpu":
        return _on_device(packed.numpy().tobytes(), neurons, device)
    return packed.to(device)


def unsupported(input_spikes, input_weights, recurrent_weights, p, dt, state) -> str:
    """Why the kernels cannot run this call (a form Norse's loop accepts), or ""."""
    tensors = (input_spikes, input_weights, recurrent_weights, state.lif.z, state.lif.v, state.lif.i, state.rho)
    if any(tensor.dtype != torch.float32 for tensor in tensors):
        return f"the tensors must be float32, got {sorted({str(tensor.dtype) for tensor in tensors})}"
    neurons = input_weights.shape[0]
    if neurons > MAX_NEURONS:
        return f"N must be at most {MAX_NEURONS} for the triton kernels, got {neurons}"
    if input_spikes.device.type == "cpu" and not interpreted():
        return ("on CPU tensors the triton kernels run only in Triton's interpreter (set TRITON_INTERPRET=1 "
                "before triton is imported); move the tensors to a CUDA device")
    if input_spikes.device.type not in ("cpu", "cuda"):
        return f"the triton kernels run on CUDA tensors, got {input_spikes.device}"
    return _parameter_tensors(p, dt, neurons)[1]


@functools.lru_cache(maxsize=None)
def device_problem(device: torch.device) -> str:
    """Why the kernels cannot run on ``device`` (e.g. no GPU Triton supports), or "": compiles and runs
    them once on a small problem (N = 32, so the workshop's variant is compiled already)."""
    if gpu_kernels is None:
        return _IMPORT_PROBLEM
    if device.type == "cuda" and not torch.cuda.is_available():
        return "CUDA is not available"
    try:
        with torch.enable_grad():
            generator = torch.Generator().manual_seed(0)
            w_in = torch.randn(32, 4, generator=generator).to(device).requires_grad_(True)
            w_rec = torch.randn(32, 32, generator=generator).to(device).requires_grad_(True)
            x = (torch.rand(3, 2, 4, generator=generator) < 0.5).float().to(device)
            zeros = torch.zeros(2, 32, device=device)
            state = LIFRefracState(LIFState(zeros, zeros, zeros), zeros)
            p = LIFRefracParameters(LIFParameters(method="tanh"))  # the workshop's surrogate: its variant compiles
            _, _, refractory, _, _ = _run(x, w_in, w_rec, p, 1e-3, state)
            refractory.sum().backward()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
    except Exception as error:  # a compilation or launch error of this GPU/driver/triton
        return f"the triton kernels failed on {device}: {type(error).__name__}: {error}"
    return ""


# ---------------------------------------------------------------------------------------------------


def _device_guard(device: torch.device):
    return torch.cuda.device(device) if device.type == "cuda" else _no_guard()


class _no_guard:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _simulate(input_spikes, input_weights, recurrent_weights, z0, v0, i0, rho0, params, config: LaunchConfig,
              record: bool):
    """Run the forward kernel; returns z, rho, v [T + 1, B, N] (row 0: the initial state), Theta(rho)
    [T, B, N], the decayed voltages [T, B, N] (None unless ``record``) and the last current [B, N]."""
    T, B, _ = input_spikes.shape
    N = input_weights.shape[0]
    proj = torch.nn.functional.linear(input_spikes, input_weights.detach())  # [T, B, N], one cuBLAS call
    z, rho, v = (input_spikes.new_empty(T + 1, B, N) for _ in range(3))
    z[0], rho[0], v[0] = z0.detach(), rho0.detach(), v0.detach()
    i = i0.detach().clone(memory_format=torch.contiguous_format)
    refractory = input_spikes.new_empty(T, B, N)
    v_decayed = input_spikes.new_empty(T, B, N) if record else None
    with _device_guard(input_spikes.device):
        gpu_kernels.lif_refrac_forward[(_cdiv(B, config.block_b),)](
            proj, recurrent_weights.detach().contiguous(), params, z, rho, v, refractory,
            refractory if v_decayed is None else v_decayed, i, T, B, N,
            RECORD=record, W_IN_REGISTERS=config.in_registers, BLOCK_B=config.block_b, BLOCK_N=config.block_n,
            BLOCK_K=config.block_k, num_warps=config.num_warps,
        )
    return z, rho, v, refractory, v_decayed, i


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


class _LIFRefracGPU(torch.autograd.Function):
    """Outputs z, rho, v [T + 1, B, N] (row 0: the initial state), Theta(rho) [T, B, N], the last i [B, N]."""

    @staticmethod
    def forward(ctx, input_spikes, input_weights, recurrent_weights, z0, v0, i0, rho0, params, config, method):
        z, rho, v, refractory, v_decayed, i = _simulate(input_spikes, input_weights, recurrent_weights, z0, v0, i0,
                                                        rho0, params, config, record=True)
        ctx.save_for_backward(input_spikes, input_weights, recurrent_weights, z, rho, v, v_decayed, params)
        ctx.config, ctx.method = config, method
        ctx.set_materialize_grads(False)  # outputs the loss does not use get no gradient tensor at all
        return z, rho, v, refractory, i

    @staticmethod
    def backward(ctx, grad_z, grad_rho, grad_v, grad_refractory, grad_i):
        input_spikes, input_weights, recurrent_weights, z, rho, v, v_decayed, params = ctx.saved_tensors
        config = ctx.config
        T, B, H = input_spikes.shape
        N = input_weights.shape[0]
        dj = torch.empty_like(v_decayed)
        grad_v0, grad_rho0 = torch.empty_like(z[0]), torch.empty_like(z[0])
        given = [grad_z, grad_rho, grad_refractory, grad_v, grad_i]
        pointers = [dj if grad is None else grad.contiguous() for grad in given]  # dj: a pointer never read
        with _device_guard(input_spikes.device):
            gpu_kernels.lif_refrac_backward[(_cdiv(B, config.block_b),)](
                z, rho, v, v_decayed, recurrent_weights.detach().contiguous(), params, *pointers, dj, grad_v0,
                grad_rho0, T, B, N,
                METHOD=ctx.method, HAS_GRAD_Z=grad_z is not None, HAS_GRAD_RHO=grad_rho is not None,
                HAS_GRAD_REFRACTORY=grad_refractory is not None, HAS_GRAD_V=grad_v is not None,
                HAS_GRAD_I=grad_i is not None, W_IN_REGISTERS=config.in_registers, BLOCK_B=config.block_b,
                BLOCK_N=config.block_n, BLOCK_K=config.block_k, num_warps=config.num_warps,
            )
        needs = ctx.needs_input_grad
        dj_rows = dj.view(T * B, N)
        grad_input = (dj_rows @ input_weights.detach()).view(T, B, H) if needs[0] else None
        grad_w_in = dj_rows.t() @ input_spikes.reshape(T * B, H) if needs[1] else None
        grad_w_rec = None
        if needs[2]:  # j_t contains W_rec z_{t-1}, with z_{-1} the initial spikes (row 0 of z)
            grad_w_rec = dj_rows.t() @ z[:-1].reshape(T * B, N)
            grad_w_rec.fill_diagonal_(0.0)  # no autapses
        grad_z0 = dj[0] @ recurrent_weights.detach() if needs[3] else None
        grad_i0 = dj[0] if needs[5] else None  # j_0 = i_0 + ...
        return (grad_input, grad_w_in, grad_w_rec, grad_z0, grad_v0 if needs[4] else None, grad_i0,
                grad_rho0 if needs[6] else None, None, None, None)


def _run(input_spikes, input_weights, recurrent_weights, p, dt, state):
    """The kernels, after the checks: (spikes, rho, refractory, voltages, final state)."""
    N = input_weights.shape[0]
    tensors, problem = _parameter_tensors(p, dt, N)
    if problem:
        raise ValueError(problem)
    params = _parameters_for(tensors, dt, N, input_spikes.device)
    config = launch_config(N)
    input_spikes = input_spikes.contiguous()
    initial = (state.lif.z, state.lif.v, state.lif.i, state.rho)
    differentiable = (input_spikes, input_weights, recurrent_weights, *initial)
    if torch.is_grad_enabled() and any(tensor.requires_grad for tensor in differentiable):
        z, rho, v, refractory, i = _LIFRefracGPU.apply(input_spikes, input_weights, recurrent_weights, *initial,
                                                       params, config, gpu_kernels.METHODS[p.lif.method])
    else:  # no graph: the kernel skips the record only the backward pass needs
        z, rho, v, refractory, _, i = _simulate(input_spikes, input_weights, recurrent_weights, *initial, params,
                                                config, record=False)
    final_state = LIFRefracState(LIFState(z[-1], v[-1], i), rho[-1])
    return z[1:].detach(), rho[1:], refractory, v[1:], final_state


def problem(input_spikes, input_weights, recurrent_weights, p, dt, state) -> Problem:
    """Whether the kernels can run this (already checked, :func:`.arguments.check_run`) call: a form of
    input or parameter they do not implement (see :func:`unsupported`), or no triton, or kernels that
    fail on this device (see :func:`device_problem`)."""
    if _IMPORT_PROBLEM:
        return Problem(_IMPORT_PROBLEM, False)
    reason = unsupported(input_spikes, input_weights, recurrent_weights, p, dt, state)
    if reason:
        return Problem(reason, True)
    return Problem(device_problem(input_spikes.device), False)


def lif_refrac_triton(input_spikes, input_weights, recurrent_weights, p, dt, state):
    """Simulate ``[T, B, H]`` input spikes from ``state`` (each field broadcasting to ``[B, N]``) with
    ``input_weights`` ``[N, H]`` and ``recurrent_weights`` ``[N, N]``; returns (spikes, rho, refractory,
    voltages), each ``[T, B, N]``, and the final state, as :func:`.reference.lif_refrac_loop` does
    (spikes detached, the final state's fields with their gradients). Call :func:`problem` first."""
    B, N = input_spikes.shape[1], input_weights.shape[0]
    state = LIFRefracState(LIFState(*(field.expand(B, N) for field in state.lif)), state.rho.expand(B, N))
    return _run(input_spikes, input_weights, recurrent_weights, p, dt, state)
