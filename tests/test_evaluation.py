import itertools
import math

import pytest
import torch

from workshop_utils import RefractoryLIFNetwork, joint_distribution, poisson_input
from workshop_utils.distribution import boltzmann_distribution, kl_per_chain
from workshop_utils.evaluation import evaluate_fidelity, long_run_distribution, noise_floor, state_counts


def small_network(seed=0, backend="norse"):
    torch.manual_seed(seed)
    return RefractoryLIFNetwork(32, 8, backend=backend)


def test_chunked_counts_equal_one_long_run():
    network = small_network()
    chunked = state_counts(network, 2, 0.3, 300, 3, torch.Generator().manual_seed(7), chunk=70)
    # the same input, drawn chunk by chunk, simulated in one go
    g = torch.Generator().manual_seed(7)
    spikes = torch.cat([poisson_input(0.3, n, 3, 32, g) for n in (70, 70, 70, 70, 20)])
    with torch.no_grad():
        refractory, _ = network(spikes)
    assert torch.allclose(chunked.float(), joint_distribution(refractory[:, :, :2]) * 300, atol=1e-3)


def test_burn_in_is_not_counted():
    counts = state_counts(small_network(), 3, 0.3, 200, 2, torch.Generator().manual_seed(0), chunk=64, burn_in=50)
    assert torch.allclose(counts.sum(dim=1), torch.full((2,), 200.0, dtype=torch.float64))


def test_long_run_is_a_distribution_and_converges():
    """Two independent 3000 x 8-step estimates differed by a KL of 0.0004 to 0.0026 over 12 seeds
    (AMD EPYC): the bound 0.01 is four times the largest."""
    network = small_network()
    p1 = long_run_distribution(network, 3, steps=3000, chains=8, generator=torch.Generator().manual_seed(1))
    p2 = long_run_distribution(network, 3, steps=3000, chains=8, generator=torch.Generator().manual_seed(2))
    assert p1.shape == (8,) and abs(p1.sum().item() - 1) < 1e-5
    # two independent long runs agree far better than single short chains do
    assert kl_per_chain(p2.unsqueeze(0), p1).item() < 0.01


def test_noise_floor_falls_like_one_over_t():
    """8x more steps: the KL of a T-step estimate falls by 8 (its variance, 1/T) to 64 (the squared
    bias of chains that all start from v_init, 1/T**2). Over 12 network and noise seeds (AMD EPYC) the
    ratio was 7.5 to 50: the bounds 3 and 150 leave a factor of 2.5 to 3 on either side for the
    trajectory another CPU's rounding gives."""
    network = small_network()
    reference = long_run_distribution(network, 2, steps=4000, chains=16, generator=torch.Generator().manual_seed(3))
    short = noise_floor(network, 2, 200, reference, chains=64, generator=torch.Generator().manual_seed(4))
    long = noise_floor(network, 2, 1600, reference, chains=64, generator=torch.Generator().manual_seed(5))
    assert short.per_chain.shape == (64,)
    assert long.mean < short.mean
    assert 3 < short.mean / long.mean < 150


def test_evaluation_rejects_bad_arguments():
    network = small_network()
    with pytest.raises(ValueError, match="k"):
        state_counts(network, 9, 0.3, 10, 2)
    with pytest.raises(ValueError, match="steps"):
        state_counts(network, 2, 0.3, 0, 2)
    with pytest.raises(ValueError, match="rate"):
        state_counts(network, 2, 2.0, 10, 2)
    with pytest.raises(ValueError, match="burn_in"):
        state_counts(network, 2, 0.3, 10, 2, burn_in=-1)


def test_boltzmann_is_exact():
    coupling = torch.tensor([[0.0, 1.0, -0.5], [1.0, 0.0, 0.3], [-0.5, 0.3, 0.0]])
    bias = torch.tensor([-1.0, 0.2, 0.5])
    p = boltzmann_distribution(coupling, bias)
    weights = []
    for bits in itertools.product([0, 1], repeat=3):
        z = torch.tensor(bits, dtype=torch.float32)
        weights.append(math.exp(0.5 * z @ coupling @ z + bias @ z))
    assert torch.allclose(p, torch.tensor(weights) / sum(weights), atol=1e-6)


def test_boltzmann_rejects_bad_input():
    with pytest.raises(ValueError, match="symmetric"):
        boltzmann_distribution(torch.tensor([[0.0, 1.0], [0.0, 0.0]]), torch.zeros(2))
    with pytest.raises(ValueError, match="coupling"):
        boltzmann_distribution(torch.zeros(3, 3), torch.zeros(2))


def test_long_run_in_groups_pools_the_groups():
    network = small_network()
    grouped = long_run_distribution(network, 2, steps=300, chains=5, generator=torch.Generator().manual_seed(9),
                                    burn_in=0, chunk=300, group=2)
    g = torch.Generator().manual_seed(9)
    counts = sum(state_counts(network, 2, 0.3, 300, n, g, chunk=300).sum(dim=0) for n in (2, 2, 1))
    assert torch.allclose(grouped, (counts / counts.sum()).float())
    with pytest.raises(ValueError, match="group"):
        long_run_distribution(network, 2, steps=10, chains=2, group=0)


def test_fidelity_checks_its_arguments_before_running():
    network = small_network()
    table = torch.full((4,), 0.25)
    for change, match in [({"chains": 0}, "chains"), ({"steps": -1}, "steps"), ({"noise_chains": -1}, "noise_chains"),
                          ({"seed": 2**64}, "seed"), ({"timesteps": 0}, "timesteps"), ({"k": 9}, "k"),
                          ({"p_target": torch.full((4,), 0.5)}, "p_target"), ({"p_target": torch.ones(3)}, "p_target"),
                          ({"rate": float("nan")}, "rate")]:
        arguments = {"model": network, "p_target": table, "k": 2, "timesteps": 100, "steps": 100, "chains": 2,
                     "noise_chains": 2, **change}
        with pytest.raises(ValueError, match=match):
            evaluate_fidelity(**arguments)
    with pytest.raises(ValueError, match="model"):
        evaluate_fidelity("network", table, 2, 100)
