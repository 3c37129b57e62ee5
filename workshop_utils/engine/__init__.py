"""The engine: simulates Norse's refractory LIF step over T steps, forward and backward, on some backend.

One function, :func:`lif_refrac_sequence`, picks the backend in one place:

- ``"norse"`` (:mod:`.reference`): Norse's ``lif_refrac_step`` looped in Python, on any device; the
  reference every other backend is tested against;
- ``"numba"`` (:mod:`.cpu`): fused forward and BPTT kernels for float32 tensors on the CPU, run on
  torch's OpenMP threads (:mod:`.parallel`);
- ``"triton"`` (:mod:`.gpu`): fused forward and BPTT kernels for float32 tensors on a CUDA GPU (on
  CPU tensors only in Triton's interpreter, for the tests);
- ``"auto"``: the fastest backend for the tensors' device ("triton" for CUDA tensors), else ``"norse"``
  with a warning that says why.

The engine knows nothing of the workshop: it never imports the teaching modules
(``workshop_utils.neurons``, ``training`` ...), which call into it.
"""

from .cpu import fast_path_available, lif_refrac_fast
from .reference import lif_refrac_loop, step_loop

BACKENDS = ("auto", "numba", "triton", "norse")


def lif_refrac_sequence(input_spikes, input_weights, recurrent_weights, p, dt, state, backend: str = "auto"):
    """Simulate ``[T, B, H]`` input from ``state`` (each field ``[B, N]``) with ``input_weights`` ``[N, H]``
    and ``recurrent_weights`` ``[N, N]``; returns (spikes, rho, refractory, voltages), each ``[T, B, N]``,
    and the final state. ``backend`` is one of :data:`BACKENDS`."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "norse":
        return lif_refrac_loop(input_spikes, input_weights, recurrent_weights, p, dt, state)
    if backend == "triton" or (backend == "auto" and input_spikes.device.type == "cuda"):
        from .gpu import lif_refrac_gpu  # imports triton only when a GPU backend is asked for

        return lif_refrac_gpu(input_spikes, input_weights, recurrent_weights, p, dt, state, fallback=backend == "auto")
    implementation = "numba" if backend == "numba" else "auto"
    return lif_refrac_fast(input_spikes, input_weights, recurrent_weights, p, dt, state, implementation)


__all__ = ["BACKENDS", "fast_path_available", "lif_refrac_fast", "lif_refrac_loop", "lif_refrac_sequence", "step_loop"]
