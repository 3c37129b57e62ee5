"""Target distributions for the sampling task."""

from typing import Optional

import torch

from .checks import require_positive_int, require_probability, require_readout_size
from .distribution import joint_distribution
from .neurons import RefractoryLIFNetwork, poisson_input


def generate_target_distribution(
    k: int,
    timesteps: int,
    batch_size: int,
    input_features: int,
    neurons: int,
    rate: float = 0.3,
    generator: Optional[torch.Generator] = None,
    backend: str = "fast",
    device="cpu",
) -> torch.Tensor:
    """A target the network can reach: the joint distribution of the first k refractory states of a
    randomly initialised population driven by Poisson noise, taken from chain 0 and repeated over the
    batch. Returns ``[B, 2**k]``.

    Draws the population's weights from ``torch``'s global generator (as Norse initialises them) and
    the input spikes from ``generator``.
    """
    require_readout_size(k, require_positive_int("N (neurons)", neurons))
    require_probability("rate", rate)
    population = RefractoryLIFNetwork(input_features, neurons, backend=backend).to(device)
    spikes = poisson_input(rate, timesteps, batch_size, input_features, generator, device)
    with torch.no_grad():
        refractory, _ = population(spikes)
    p_target = joint_distribution(refractory[:, :, :k])
    return p_target[0].unsqueeze(0).repeat(batch_size, 1)
