"""Checks of what every backend is given, before anything runs: a mismatch is a ``ValueError`` that names
the argument and what was expected, never a crash inside a kernel that checks no bounds.

Shapes: input spikes ``[T, B, H]``, input weights ``[N, H]``, recurrent weights ``[N, N]``, each field of
the state and each neuron parameter a tensor that broadcasts to ``[B, N]`` (as Norse broadcasts them:
a scalar, a per-neuron ``[N]``, a per-chain ``[B, 1]`` ...). Input, weights and state share one
floating dtype and one device.
"""

import numbers
from typing import Dict, NamedTuple

import torch
from norse.torch.functional.lif import LIFParameters, LIFState
from norse.torch.functional.lif_refrac import LIFRefracParameters, LIFRefracState

# the surrogate methods of Norse's ``threshold`` (norse.torch.functional.threshold)
NORSE_METHODS = ("heaviside", "super", "triangle", "tanh", "circ", "heavi_erfc")


class Problem(NamedTuple):
    """Why a backend cannot run a call (``reason``, "" if it can), and whether that lies in the call's
    arguments (``argument``: forcing that backend is then a ValueError) or in this machine (a missing
    package, a GPU the kernels cannot compile for: a RuntimeError)."""

    reason: str
    argument: bool


class Shapes(NamedTuple):
    T: int  # time steps
    B: int  # chains (batch)
    H: int  # inputs
    N: int  # neurons


def _layout(*sizes) -> str:
    return "[" + ", ".join(str(size) for size in sizes) + "]"


def _require_tensor(name: str, value, dims: int, expected: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape {expected}, got {type(value).__name__}")
    if value.dim() != dims:
        raise ValueError(f"{name} must have shape {expected}, got {list(value.shape)}")
    return value


def _broadcasts_to(shape, target) -> bool:
    """Whether a tensor of ``shape`` broadcasts to ``target`` without changing it (torch's rules)."""
    if len(shape) > len(target):
        return False
    return all(size in (1, wanted) for size, wanted in zip(reversed(tuple(shape)), reversed(tuple(target))))


def neuron_parameters(p: LIFRefracParameters, dt) -> Dict[str, object]:
    """The numbers of ``p`` and ``dt`` by the names the error messages use ("p.lif.v_th", "dt" ...)."""
    values = {f"p.lif.{name}": getattr(p.lif, name)
              for name in ("tau_syn_inv", "tau_mem_inv", "v_leak", "v_th", "v_reset", "alpha")}
    values["p.rho_reset"] = p.rho_reset
    values["dt"] = dt
    return values


def check_run(input_spikes, input_weights, recurrent_weights, p, dt, state) -> Shapes:
    """Raise a ``ValueError`` naming the first argument that does not fit the others; return the sizes."""
    input_spikes = _require_tensor("input_spikes", input_spikes, 3, "[T, B, H]")
    T, B, H = input_spikes.shape
    if min(T, B, H) < 1:
        raise ValueError(f"input_spikes must have shape [T, B, H] with T, B, H >= 1, got {list(input_spikes.shape)}")
    if not input_spikes.dtype.is_floating_point:
        raise ValueError(f"input_spikes must be a floating-point tensor (e.g. float32), got {input_spikes.dtype}")
    input_weights = _require_tensor("input_weights", input_weights, 2, f"[N, H] = [N, {H}]")
    N = input_weights.shape[0]
    if input_weights.shape[1] != H or N < 1:
        raise ValueError(f"input_weights must have shape [N, H] = [N, {H}] (H from input_spikes) with N >= 1, "
                         f"got {list(input_weights.shape)}")
    _require_tensor("recurrent_weights", recurrent_weights, 2, _layout(N, N))
    if tuple(recurrent_weights.shape) != (N, N):
        raise ValueError(f"recurrent_weights must have shape [N, N] = {_layout(N, N)} (N from input_weights), "
                         f"got {list(recurrent_weights.shape)}")
    for name, tensor in (("input_weights", input_weights), ("recurrent_weights", recurrent_weights)):
        if tensor.dtype != input_spikes.dtype or tensor.device != input_spikes.device:
            raise ValueError(f"{name} must have the dtype and device of input_spikes ({input_spikes.dtype} on "
                             f"{input_spikes.device}), got {tensor.dtype} on {tensor.device}")

    if not (isinstance(state, LIFRefracState) and isinstance(state.lif, LIFState)):
        raise ValueError(f"state must be a LIFRefracState(LIFState(z, v, i), rho), got {type(state).__name__}")
    for name, field in (("state.lif.z", state.lif.z), ("state.lif.v", state.lif.v), ("state.lif.i", state.lif.i),
                        ("state.rho", state.rho)):
        if not isinstance(field, torch.Tensor) or not _broadcasts_to(field.shape, (B, N)):
            got = list(field.shape) if isinstance(field, torch.Tensor) else type(field).__name__
            raise ValueError(f"{name} must be a tensor of shape [B, N] = {_layout(B, N)} (B from input_spikes, N from "
                             f"input_weights) or one that broadcasts to it, got {got}")
        if field.dtype != input_spikes.dtype or field.device != input_spikes.device:
            raise ValueError(f"{name} must have the dtype and device of input_spikes ({input_spikes.dtype} on "
                             f"{input_spikes.device}), got {field.dtype} on {field.device}")

    if not (isinstance(p, LIFRefracParameters) and isinstance(p.lif, LIFParameters)):
        raise ValueError(f"p must be a LIFRefracParameters(LIFParameters(...), rho_reset), got {type(p).__name__}")
    if p.lif.method not in NORSE_METHODS:
        raise ValueError(f"p.lif.method must be one of Norse's threshold methods {NORSE_METHODS}, got {p.lif.method!r}")
    for name, value in neuron_parameters(p, dt).items():
        if isinstance(value, torch.Tensor):
            if value.dtype.is_complex or value.dtype == torch.bool:
                raise ValueError(f"{name} must be a real number or tensor, got a {value.dtype} tensor")
            if not _broadcasts_to(value.shape, (B, N)):
                raise ValueError(f"{name} must be a number or a tensor that broadcasts to [B, N] = {_layout(B, N)} "
                                 f"(per neuron: [N] = [{N}]), got shape {list(value.shape)}")
            if value.dim() > 0 and value.device != input_spikes.device:
                raise ValueError(f"{name} must be on the device of input_spikes ({input_spikes.device}), "
                                 f"got {value.device}")
            promoted = torch.result_type(torch.empty(1, 1, dtype=input_spikes.dtype), value)
            if promoted != input_spikes.dtype:  # Norse's state would turn into it, and its next step fail
                raise ValueError(f"{name} must be a number or a tensor whose dtype does not promote "
                                 f"{input_spikes.dtype} (the dtype of input_spikes), got a {value.dtype} tensor "
                                 f"of shape {list(value.shape)}")
        elif isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"{name} must be a real number or a tensor, got {value!r}")
    return Shapes(T, B, H, N)
