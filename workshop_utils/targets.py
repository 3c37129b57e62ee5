"""Target distributions for the sampling task."""

from typing import Optional

import torch

from .checks import require_positive_int, require_probability, require_readout_size
from .evaluation import long_run_distribution
from .neurons import RefractoryLIFNetwork


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
) -> torch.Tensor:
    """A target the network can reach, ``[2**k]``: the stationary joint distribution of the first k
    refractory states of a randomly initialised population of the same size (H inputs, N neurons)
    driven by Poisson noise, estimated from ``chains`` runs of ``steps`` steps (640,000 samples).

    Draws the population's weights from ``torch``'s global generator (as Norse initialises them) and
    the input spikes from ``generator``.
    """
    require_readout_size(k, require_positive_int("N (neurons)", neurons))
    require_probability("rate", rate)
    population = RefractoryLIFNetwork(input_features, neurons, backend=backend).to(device)
    return long_run_distribution(population, k, rate, steps, chains, generator)
