"""Target distributions for the sampling task."""

from typing import Optional

import torch

from .checks import (
    require_choice,
    require_device,
    require_memory,
    require_positive_int,
    require_probability,
    require_readout_size,
)
from .evaluation import long_run_distribution
from .neurons import BACKENDS, RefractoryLIFNetwork


def generate_target_distribution(
    k: int,
    input_features: int,
    neurons: int,
    rate: float = 0.3,
    generator: Optional[torch.Generator] = None,
    steps: int = 20_000,
    chains: int = 32,
    backend: str = "fast",
    device="cpu",
    weight_generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """A target the network can reach, ``[2**k]``: the stationary joint distribution of the first k
    refractory states of a randomly initialised population of the same size (H inputs, N neurons)
    driven by Poisson noise, estimated from ``chains`` runs of ``steps`` steps (640,000 samples).

    Draws the population's weights from ``weight_generator`` (a CPU generator; default: torch's global
    generator, as Norse initialises them) and the input spikes from ``generator`` (on ``device``).
    """
    neurons = require_positive_int("N (neurons)", neurons)
    k = require_readout_size(k, neurons)
    rate = require_probability("rate", rate)
    backend = require_choice("backend", backend, BACKENDS)
    input_features = require_positive_int("H (input features)", input_features)
    device = require_device(device)
    require_memory(f"a population of N = {neurons} neurons with H = {input_features} inputs",
                   4 * neurons * (input_features + neurons), device)
    population = RefractoryLIFNetwork(input_features, neurons, backend=backend, generator=weight_generator)
    return long_run_distribution(population.to(device), k, rate, steps, chains, generator)
