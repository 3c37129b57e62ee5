"""The joint distribution of k binary variables sampled over time, and the KL loss against a target."""

from typing import List

import torch

from .checks import require_positive_int, require_shape


def joint_distribution(states: torch.Tensor) -> torch.Tensor:
    """Empirical joint distribution of k binary variables, differentiable in ``states``.

    ``states`` is ``[T, B, k]`` with values in [0, 1]; the result is ``[B, 2**k]`` and each row sums
    to one. Variable 1 is the most significant bit: state (z_1, ..., z_k) has index
    sum_j z_j 2**(k - j), which matches the labels of :func:`state_labels`.
    """
    require_shape("states", states, ("T", "B", "k"))
    timesteps, batch_size, k = states.shape
    require_positive_int("T (timesteps)", timesteps)
    require_positive_int("k (number of readout variables)", k)
    # Outer product over variables, built one variable at a time so the last variable varies fastest:
    # joint[t, b, s] = prod_j (z_j if bit j of s is 1 else 1 - z_j).
    joint = torch.ones(timesteps, batch_size, 1, dtype=states.dtype, device=states.device)
    for j in range(k):
        z = states[:, :, j : j + 1]
        joint = torch.stack([joint * (1 - z), joint * z], dim=-1).flatten(start_dim=2)
    return joint.mean(dim=0)


def state_labels(k: int) -> List[str]:
    """Bit-string labels of the 2**k joint states, z_1 first: k = 2 gives ['00', '01', '10', '11']."""
    k = require_positive_int("k (number of readout variables)", k)
    return [format(index, f"0{k}b") for index in range(2**k)]


def kl_loss(p_sampled: torch.Tensor, p_target: torch.Tensor, floor: float = 1e-7) -> torch.Tensor:
    """KL(p_target || p_sampled), averaged over the batch; both ``[B, S]``.

    ``torch.nn.functional.kl_div`` takes the log of the *model's* distribution first. Unvisited states
    have p_sampled = 0; the ``floor`` clamp keeps their log finite (each costs about p_t * 16).
    """
    return torch.nn.functional.kl_div(
        torch.log(p_sampled.clamp(min=floor)), p_target, reduction="batchmean"
    )


def kl_per_chain(p_sampled: torch.Tensor, p_target: torch.Tensor, floor: float = 1e-7) -> torch.Tensor:
    """KL(p_target || p_sampled) of each row, ``[B]``, clamped like :func:`kl_loss` (whose mean it is).

    ``p_target`` may be one table ``[S]`` shared by all rows of ``p_sampled`` ``[B, S]``.
    """
    p_target = p_target.expand_as(p_sampled)
    return torch.nn.functional.kl_div(
        torch.log(p_sampled.clamp(min=floor)), p_target, reduction="none"
    ).sum(dim=-1)


def boltzmann_distribution(coupling: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Exact p(z) proportional to exp(z^T W z / 2 + b^T z) over z in {0, 1}^k, as ``[2**k]``.

    ``coupling`` W is a symmetric ``[k, k]`` matrix (its diagonal acts like a bias, since z_j^2 = z_j),
    ``bias`` b is ``[k]``. States are ordered as in :func:`joint_distribution`.
    """
    require_shape("bias", bias, ("k",))
    k = require_positive_int("k (length of bias)", bias.shape[0])
    require_shape("coupling", coupling, (k, k))
    if not torch.allclose(coupling, coupling.T):
        raise ValueError("coupling must be a symmetric [k, k] matrix")
    if k > 20:
        raise ValueError(f"k must be at most 20 for exact enumeration, got {k}")
    bits = torch.arange(2**k).unsqueeze(1).bitwise_right_shift(torch.arange(k - 1, -1, -1)) & 1
    z = bits.to(coupling.dtype)  # [2**k, k], z_1 is the most significant bit
    energy = 0.5 * torch.einsum("si,ij,sj->s", z, coupling, z) + z @ bias
    return torch.softmax(energy, dim=0)
