"""The engine: simulates Norse's refractory LIF step over T steps, forward and backward, on some backend.

One function, :func:`lif_refrac_sequence`, checks the arguments (:mod:`.arguments`) and picks the
backend in one place:

- ``"norse"`` (:mod:`.reference`): Norse's ``lif_refrac_step`` looped in Python, on any device; the
  reference every other backend is tested against;
- ``"numba"`` (:mod:`.cpu`): fused forward and BPTT kernels for float32 tensors on the CPU, run on
  torch's OpenMP threads (:mod:`.parallel`);
- ``"auto"``: the fastest backend that computes exactly what Norse's loop computes for these
  arguments, else Norse's loop, with a warning (once per reason) that says why.

The engine knows nothing of the workshop: it never imports the teaching modules
(``workshop_utils.neurons``, ``training`` ...), which call into it.
"""

import warnings

from . import cpu
from .arguments import check_run
from .reference import lif_refrac_loop

BACKENDS = ("auto", "numba", "norse")
# measured on the reference machine (AMD EPYC, 2 cores): wu.train(wu.ExperimentConfig()), notebook 3's training
SLOWER = ("Norse's loop is 10 to 20 times slower: notebook 3's training (80 epochs at T = 1000, H = 1024) took "
          "43 s instead of 4 s on a 2-core machine")
_warned = set()  # the reasons already reported, so that a training loop warns once


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
    together (naming the argument and the expected shape), or, with ``backend="numba"``, for
    arguments the kernels cannot compute exactly (``RuntimeError`` where numba itself is missing).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    check_run(input_spikes, input_weights, recurrent_weights, p, dt, state)
    if input_spikes.is_sparse:
        input_spikes = input_spikes.to_dense()
    if backend == "norse":
        return lif_refrac_loop(input_spikes, input_weights, recurrent_weights, p, dt, state)
    problem = cpu.problem(input_spikes, input_weights, recurrent_weights, p, dt, state)
    if not problem.reason:
        return cpu.lif_refrac_numba(input_spikes, input_weights, recurrent_weights, p, dt, state)
    if backend == "numba":
        error = ValueError if problem.argument else RuntimeError
        raise error(f"backend='numba' cannot run this call: {problem.reason}")
    if input_spikes.device.type == "cpu":  # elsewhere Norse's loop is the backend for the device
        fix = "" if problem.argument else "; `pip install numba` gives the fast path"
        _warn_once(f"the CPU kernels cannot run this call ({problem.reason}): using Norse's loop instead. "
                   f"{SLOWER}{fix}.")
    return lif_refrac_loop(input_spikes, input_weights, recurrent_weights, p, dt, state)


__all__ = ["BACKENDS", "fast_path_available", "lif_refrac_sequence"]
