"""The engine: simulates Norse's refractory LIF step over T steps, forward and backward, on some backend.

One function, :func:`lif_refrac_sequence`, checks the arguments (:mod:`.arguments`) and picks the
backend in one place:

- ``"norse"`` (:mod:`.reference`): Norse's ``lif_refrac_step`` looped in Python, on any device; the
  reference every other backend is tested against;
- ``"numba"`` (:mod:`.cpu`): fused forward and BPTT kernels for float32 tensors on the CPU, run on
  torch's OpenMP threads (:mod:`.parallel`);
- ``"triton"`` (:mod:`.gpu`): fused forward and BPTT kernels for float32 tensors on a CUDA GPU (on
  CPU tensors only in Triton's interpreter, for the tests);
- ``"auto"``: the backend for the tensors' device ("triton" on CUDA, "numba" on the CPU) where it
  computes what Norse's loop computes for these arguments, else Norse's loop, with a warning (once
  per reason) that says why.

The engine knows nothing of the workshop: it never imports the teaching modules
(``workshop_utils.neurons``, ``training`` ...), which call into it.
"""

import warnings

from . import cpu
from .arguments import check_run
from .reference import lif_refrac_loop

BACKENDS = ("auto", "numba", "triton", "norse")
# What the fallback costs, measured on the reference machine (AMD EPYC, 2 cores) and on an H200
# (torch 2.11): notebook 3's training, wu.train(wu.ExperimentConfig()), and one training step.
SLOWER = {
    "numba": "Norse's loop is 10 to 20 times slower on the CPU: notebook 3's training (80 epochs at T = 1000, "
             "H = 1024) took 43 s instead of 4 s on a 2-core machine; `pip install numba` gives the fast path",
    "triton": "Norse's loop is slow on a GPU (1.36 s per training step at T = 1000 on an H200, 108 s for notebook "
              "3's training); Triton ships with CUDA builds of PyTorch",
}
_warned = set()  # the messages already shown, so that a training loop warns once


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def fast_path_available() -> bool:
    """True if the CPU kernels can run in this process (numba importable, kernels compiled)."""
    return cpu.available()


def lif_refrac_sequence(input_spikes, input_weights, recurrent_weights, p, dt, state, backend: str = "auto"):
    """Simulate ``[T, B, H]`` input from ``state`` (each field ``[B, N]`` or broadcasting to it) with
    ``input_weights`` ``[N, H]``, ``recurrent_weights`` ``[N, N]``, Norse's parameters ``p``
    (``LIFRefracParameters``; numbers or tensors that broadcast to ``[B, N]``) and time step ``dt``.

    Returns (spikes, rho, refractory, voltages), each ``[T, B, N]``: the state after every step,
    refractory = Theta(rho) with the surrogate gradient of ``p.lif.method``, spikes without gradient;
    and the final state, from which a later call continues the run (gradients flow through it).
    The recurrent weights' gradient has a zero diagonal (no autapses).

    ``backend`` is one of :data:`BACKENDS`. Raises ``ValueError`` for arguments that do not fit
    together (naming the argument and the expected shape), or, with a forced backend ("numba",
    "triton"), for arguments its kernels cannot compute exactly (``RuntimeError`` where the backend
    itself is missing on this machine: numba, triton, a GPU it compiles for).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    check_run(input_spikes, input_weights, recurrent_weights, p, dt, state)
    if input_spikes.is_sparse:
        input_spikes = input_spikes.to_dense()
    forced = backend != "auto"
    if not forced:  # elsewhere than on the CPU and CUDA, Norse's loop is the backend for the device
        backend = {"cpu": "numba", "cuda": "triton"}.get(input_spikes.device.type, "norse")
    if backend == "norse":
        return lif_refrac_loop(input_spikes, input_weights, recurrent_weights, p, dt, state)
    if backend == "triton":
        from . import gpu as kernels  # imports triton only when the GPU backend is asked for
    else:
        kernels = cpu
    problem = kernels.problem(input_spikes, input_weights, recurrent_weights, p, dt, state)
    if not problem.reason:
        run = kernels.lif_refrac_triton if backend == "triton" else kernels.lif_refrac_numba
        return run(input_spikes, input_weights, recurrent_weights, p, dt, state)
    if forced:
        error = ValueError if problem.argument else RuntimeError
        raise error(f"backend={backend!r} cannot run this call: {problem.reason}")
    _warn_once(f"the {backend} kernels cannot run this call ({problem.reason}): using Norse's loop instead. "
               f"{SLOWER[backend]}.")
    return lif_refrac_loop(input_spikes, input_weights, recurrent_weights, p, dt, state)


__all__ = ["BACKENDS", "fast_path_available", "lif_refrac_sequence"]
