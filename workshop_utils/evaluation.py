"""Honest fidelity: a trained network's long-run distribution, and the noise floor of a T-step estimate.

The training loss compares the target with a distribution estimated from only T correlated steps
per chain, so it stays above zero even for a perfect sampler. Here the network runs for a long time
instead, in chunks so memory stays flat, without autograd.
"""

import math
from typing import NamedTuple, Optional

import torch

from .checks import (
    require_distribution,
    require_float_tensor,
    require_generator,
    require_int,
    require_memory,
    require_non_negative_int,
    require_positive_int,
    require_probability,
    require_readout_size,
)
from .distribution import joint_distribution, kl_per_chain
from .encoding import poisson_input
from .neurons import RefractoryLIFNetwork


def require_model(model) -> RefractoryLIFNetwork:
    """Return ``model``, or raise unless it is a :class:`~workshop_utils.neurons.RefractoryLIFNetwork`."""
    if not isinstance(model, RefractoryLIFNetwork):
        raise ValueError(f"model must be a RefractoryLIFNetwork, got {type(model).__name__}")
    return model


def _reference_table(name: str, table, k: int, device) -> torch.Tensor:
    """A checked distribution over the 2**k states, ``[2**k]`` (row 0 of a ``[B, 2**k]`` table)."""
    dims = table.dim() if isinstance(table, torch.Tensor) else None
    table = require_float_tensor(name, table, ("B", 2**k) if dims == 2 else (2**k,))
    table = table[0] if table.dim() == 2 else table
    require_distribution(name, table)
    return table.to(device=device, dtype=torch.float32)


def state_counts(
    model: RefractoryLIFNetwork,
    k: int,
    rate: float,
    steps: int,
    chains: int,
    generator: Optional[torch.Generator] = None,
    chunk: int = 1000,
    burn_in: int = 0,
) -> torch.Tensor:
    """How often each chain visits each of the 2**k joint states in ``steps`` steps, ``[chains, 2**k]``.

    The chains start from the model's initial state; the first ``burn_in`` steps are not counted.
    The run is cut into chunks of ``chunk`` steps, each continuing from the last state.
    """
    require_model(model)
    k = require_readout_size(k, model.neurons)
    rate = require_probability("rate", rate)
    steps, chains, chunk = (require_positive_int(n, v) for n, v in (("steps", steps), ("chains", chains), ("chunk", chunk)))
    burn_in = require_non_negative_int("burn_in", burn_in)
    device = model.input_weights.device
    generator = require_generator("generator", generator, str(device))
    length = min(chunk, max(steps, burn_in))
    require_memory(f"{chains} chains in chunks of {length} steps (H = {model.input_features}, N = {model.neurons}, "
                   f"k = {k})", 4 * length * chains * (model.input_features + 4 * model.neurons + 3 * 2**k),
                   str(device) if device.type == "cuda" else "cpu")
    counts = torch.zeros(chains, 2**k, dtype=torch.float64, device=device)
    state = model.initial_state(chains, device)
    buffer = torch.empty(length, chains, model.input_features, device=device)
    done = -burn_in
    with torch.no_grad():
        while done < steps:
            length = min(chunk, steps - done) if done >= 0 else min(chunk, -done)
            spikes = poisson_input(rate, length, chains, model.input_features, generator, device, out=buffer[:length])
            trace = model.trace(spikes, state)
            state = trace.final_state
            if done >= 0:
                counts += joint_distribution(trace.refractory[:, :, :k]).double() * length
            done += length
    return counts


def long_run_distribution(
    model: RefractoryLIFNetwork,
    k: int,
    rate: float = 0.3,
    steps: int = 20_000,
    chains: int = 32,
    generator: Optional[torch.Generator] = None,
    burn_in: int = 100,
    chunk: int = 1000,
    group: Optional[int] = None,
) -> torch.Tensor:
    """The network's stationary distribution of its first k refractory states, ``[2**k]``, pooled
    over ``chains`` chains of ``steps`` steps (640,000 samples by default) after a burn-in.

    ``group`` chains are simulated at a time (default: all), which bounds memory by
    group x chunk x H input spikes."""
    require_model(model)
    steps, chains = require_positive_int("steps", steps), require_positive_int("chains", chains)
    group = chains if group is None else require_positive_int("group", group)
    counts = sum(
        state_counts(model, k, rate, steps, min(group, chains - start), generator, chunk, burn_in).sum(dim=0)
        for start in range(0, chains, group)
    )
    return (counts / counts.sum()).float()


class NoiseFloor(NamedTuple):
    mean: float  # expected KL(p_reference || p_T) of a T-step estimate p_T
    std: float  # its spread over chains
    per_chain: torch.Tensor  # [chains]


def noise_floor(
    model: RefractoryLIFNetwork,
    k: int,
    timesteps: int,
    p_reference: torch.Tensor,
    rate: float = 0.3,
    chains: int = 256,
    generator: Optional[torch.Generator] = None,
    chunk: int = 1000,
) -> NoiseFloor:
    """The KL that a T-step estimate scores against ``p_reference`` ``[2**k]``, over independent chains
    started as in training. With ``p_reference`` the model's own long-run distribution this is the
    loss a perfect sampler of that distribution would show: the part of the training loss that is noise."""
    require_model(model)
    k = require_readout_size(k, model.neurons)
    timesteps = require_positive_int("timesteps", timesteps)
    p_reference = _reference_table("p_reference", p_reference, k, model.input_weights.device)
    counts = state_counts(model, k, rate, timesteps, chains, generator, chunk)
    per_chain = kl_per_chain((counts / timesteps).float(), p_reference)
    return NoiseFloor(per_chain.mean().item(), per_chain.std().item(), per_chain)


class Fidelity(NamedTuple):
    p_long_run: torch.Tensor  # [2**k], the network's stationary distribution
    long_run_kl: float  # KL(p_target || p_long_run): how good the sampler really is
    noise_floor: float  # expected KL(p_long_run || p_T) of a T-step estimate: the loss's noise part (nan if skipped)
    noise_floor_std: float


def evaluate_fidelity(
    model: RefractoryLIFNetwork,
    p_target: torch.Tensor,
    k: int,
    timesteps: int,
    rate: float = 0.3,
    steps: int = 20_000,
    chains: int = 32,
    noise_chains: int = 256,
    seed: int = 0,
    burn_in: int = 100,
    chunk: int = 1000,
    group: Optional[int] = None,
) -> Fidelity:
    """Long-run KL against the target ``[2**k]`` (or ``[B, 2**k]``, row 0) and the noise floor at T.

    ``steps``, ``chains``, ``burn_in``, ``chunk`` and ``group`` are those of :func:`long_run_distribution`;
    ``noise_chains`` = 0 skips the noise floor (reported as nan)."""
    require_model(model)
    k = require_readout_size(k, model.neurons)
    p_target = _reference_table("p_target", p_target, k, model.input_weights.device)
    timesteps = require_positive_int("timesteps", timesteps)
    noise_chains = require_non_negative_int("noise_chains", noise_chains)
    seed = require_int("seed", seed, minimum=0, maximum=2**64 - 1)
    generator = torch.Generator(device=model.input_weights.device).manual_seed(seed)
    p_long_run = long_run_distribution(model, k, rate, steps, chains, generator, burn_in, chunk, group)
    long_run_kl = kl_per_chain(p_long_run.unsqueeze(0), p_target).item()
    if noise_chains == 0:
        return Fidelity(p_long_run, long_run_kl, math.nan, math.nan)
    floor = noise_floor(model, k, timesteps, p_long_run, rate, noise_chains, generator)
    return Fidelity(p_long_run, long_run_kl, floor.mean, floor.std)
