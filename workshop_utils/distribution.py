"""The joint distribution of k binary variables sampled over time, and the KL loss against a target."""

from typing import List

import numpy as np
import torch

from .checks import (
    require_distribution,
    require_float,
    require_float_tensor,
    require_memory,
    require_positive_int,
)

BOLTZMANN_MAX_K = 20  # exact enumeration of 2**k states


def joint_distribution(states: torch.Tensor) -> torch.Tensor:
    """Empirical joint distribution of k binary variables, differentiable in ``states``.

    ``states`` is ``[T, B, k]`` with values in [0, 1] (integers and bools are read as floats); the
    result is ``[B, 2**k]`` and each row sums to one. Variable 1 is the most significant bit: state
    (z_1, ..., z_k) has index sum_j z_j 2**(k - j), which matches the labels of :func:`state_labels`.
    Raises a ValueError for other shapes or values, or if the ``[T, B, 2**k]`` table the product is
    built in (three of them, counting autograd's) cannot fit in the memory of the states' device.
    """
    states = require_float_tensor("states", states, ("T", "B", "k"))
    timesteps, batch_size, k = states.shape
    if not ((states >= 0) & (states <= 1)).all():  # also false for NaN
        raise ValueError("states must hold values in [0, 1] (refractory states or probabilities), "
                         f"got values from {states.min().item():g} to {states.max().item():g} or NaN")
    require_memory(f"joint_distribution of [T, B, k] = {list(states.shape)} states (2**k = 2**{k} per step)",
                   3 * timesteps * batch_size * 2**k * states.element_size(), _memory_device(states))
    # Outer product over variables, built one variable at a time so the last variable varies fastest:
    # joint[t, b, s] = prod_j (z_j if bit j of s is 1 else 1 - z_j).
    joint = torch.ones(timesteps, batch_size, 1, dtype=states.dtype, device=states.device)
    for j in range(k):
        z = states[:, :, j : j + 1]
        joint = torch.stack([joint * (1 - z), joint * z], dim=-1).flatten(start_dim=2)
    return joint.mean(dim=0)


def _memory_device(tensor: torch.Tensor) -> str:
    return str(tensor.device) if tensor.device.type == "cuda" else "cpu"


def state_labels(k: int) -> List[str]:
    """Bit-string labels of the 2**k joint states, z_1 first: k = 2 gives ['00', '01', '10', '11']."""
    k = require_positive_int("k (number of readout variables)", k)
    require_memory(f"state_labels(k={k}), 2**{k} strings,", 2**k * (49 + k), "cpu")  # sys.getsizeof of a str
    return [format(index, f"0{k}b") for index in range(2**k)]


def _distributions(p_sampled, p_target, floor):
    """Checked (p_sampled [B, S], p_target [B, S] or [S], floor) for the KL functions."""
    p_sampled = require_float_tensor("p_sampled", p_sampled, ("B", "S"))
    dims = p_target.dim() if isinstance(p_target, torch.Tensor) else np.ndim(p_target)
    p_target = require_float_tensor("p_target", p_target, ("S",) if dims == 1 else ("B", "S"))
    if p_target.shape[-1] != p_sampled.shape[-1] or (p_target.dim() == 2 and p_target.shape[0] != p_sampled.shape[0]):
        raise ValueError(f"p_target must have the shape of p_sampled {list(p_sampled.shape)} (or [S]), "
                         f"got {list(p_target.shape)}")
    if p_target.device != p_sampled.device:
        raise ValueError(f"p_target must be on the device of p_sampled ({p_sampled.device}), got {p_target.device}")
    require_distribution("p_sampled", p_sampled.detach())
    require_distribution("p_target", p_target.detach())
    floor = require_float("floor", floor, 0.0, 1.0, include_minimum=False)
    return p_sampled, p_target.to(p_sampled.dtype).expand_as(p_sampled), floor


def kl_loss(p_sampled: torch.Tensor, p_target: torch.Tensor, floor: float = 1e-7) -> torch.Tensor:
    """KL(p_target || p_sampled), averaged over the batch; both ``[B, S]`` (``p_target`` may be ``[S]``).

    ``torch.nn.functional.kl_div`` takes the log of the *model's* distribution first. Unvisited states
    have p_sampled = 0; the ``floor`` clamp keeps their log finite (each costs about p_t * 16). Raises a
    ValueError unless both are tables of probabilities (finite, non-negative, rows summing to 1).
    """
    p_sampled, p_target, floor = _distributions(p_sampled, p_target, floor)
    return torch.nn.functional.kl_div(
        torch.log(p_sampled.clamp(min=floor)), p_target, reduction="batchmean"
    )


def kl_per_chain(p_sampled: torch.Tensor, p_target: torch.Tensor, floor: float = 1e-7) -> torch.Tensor:
    """KL(p_target || p_sampled) of each row, ``[B]``, clamped and checked like :func:`kl_loss` (whose
    mean it is). ``p_target`` may be one table ``[S]`` shared by all rows of ``p_sampled`` ``[B, S]``.
    """
    p_sampled, p_target, floor = _distributions(p_sampled, p_target, floor)
    return torch.nn.functional.kl_div(
        torch.log(p_sampled.clamp(min=floor)), p_target, reduction="none"
    ).sum(dim=-1)


def boltzmann_distribution(coupling: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Exact p(z) proportional to exp(z^T W z / 2 + b^T z) over z in {0, 1}^k, as ``[2**k]``.

    ``coupling`` W is a finite, symmetric ``[k, k]`` matrix (its diagonal acts like a bias, since
    z_j^2 = z_j), ``bias`` b is finite and ``[k]``, 1 <= k <= 20. States are ordered as in
    :func:`joint_distribution`.
    """
    bias = require_float_tensor("bias", bias, ("k",))
    k = bias.shape[0]
    if k > BOLTZMANN_MAX_K:
        raise ValueError(f"bias must have k <= {BOLTZMANN_MAX_K} entries for exact enumeration, got k = {k}")
    coupling = require_float_tensor("coupling", coupling, (k, k)).to(bias.device)
    if not (torch.isfinite(coupling).all() and torch.isfinite(bias).all()):
        raise ValueError("coupling and bias must be finite, got NaN or inf")
    if not torch.allclose(coupling, coupling.T):
        raise ValueError("coupling must be a symmetric [k, k] matrix")
    dtype = torch.promote_types(coupling.dtype, bias.dtype)
    bits = torch.arange(2**k, device=bias.device).unsqueeze(1).bitwise_right_shift(
        torch.arange(k - 1, -1, -1, device=bias.device)) & 1
    z = bits.to(dtype)  # [2**k, k], z_1 is the most significant bit
    energy = 0.5 * torch.einsum("si,ij,sj->s", z, coupling.to(dtype), z) + z @ bias.to(dtype)
    return torch.softmax(energy, dim=0)
