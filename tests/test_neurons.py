import numpy as np
import pytest
import torch

from workshop_utils import RefractoryLIFNetwork, encoding, joint_distribution, notebook_parameters, poisson_input


def norse_network(method="tanh", H=16, N=8, seed=0):
    torch.manual_seed(seed)
    return RefractoryLIFNetwork(H, N, notebook_parameters(method), backend="norse")


def test_shapes_names_and_no_autapses(generator):
    network = norse_network()
    assert network.input_weights.shape == (8, 16)
    assert network.recurrent_weights.shape == (8, 8)
    assert torch.all(network.recurrent_weights.diagonal() == 0)
    keys = list(network.state_dict())
    assert any(key.endswith("input_weights") for key in keys)
    assert any(key.endswith("recurrent_weights") for key in keys)
    refractory, voltages = network(poisson_input(0.3, 50, 3, 16, generator))
    assert refractory.shape == voltages.shape == (50, 3, 8)


def test_initial_state_is_the_notebooks():
    state = norse_network().initial_state(2, "cpu")
    assert torch.all(state.lif.v == 0.9)
    assert torch.all(state.lif.z == 0) and torch.all(state.lif.i == 0) and torch.all(state.rho == 0)


def test_refractory_dynamics(generator):
    """A spike clamps the neuron for rho_reset = 10 steps: rho counts 10, 9, ..., 1, then 0."""
    trace = norse_network().trace(poisson_input(0.3, 400, 4, 16, generator))
    spikes, rho = trace.spikes, trace.rho.detach()
    assert spikes.sum() > 10, "the population should be active"
    t, b, n = (int(index) for index in spikes.nonzero()[0])
    assert rho[t, b, n] == 10
    following = rho[t + 1 : t + 11, b, n]
    assert torch.equal(following, torch.arange(9.0, -1.0, -1.0)), following
    assert torch.equal(trace.refractory.detach(), (rho > 0).float())
    # no neuron spikes while refractory
    assert not torch.any((spikes[1:] > 0) & (rho[:-1] > 0))


def test_parameters_are_the_notebooks():
    p = notebook_parameters()
    assert float(p.lif.v_leak) == 1.0 and float(p.lif.v_th) == 1.0 and float(p.rho_reset) == 10.0
    assert float(p.lif.tau_mem_inv) == 100.0 and float(p.lif.tau_syn_inv) == 200.0
    assert p.lif.method == "tanh" and float(p.lif.alpha) == 100.0


def gradient_after(method, T, generator):
    network = norse_network(method, H=256, N=32, seed=3)
    refractory, _ = network(poisson_input(0.3, T, 4, 256, generator))
    p = joint_distribution(refractory[:, :, :3])
    torch.nn.functional.kl_div(torch.log(p.clamp(min=1e-7)), torch.full_like(p, 1 / 8), reduction="batchmean").backward()
    return network.input_weights.grad, network.recurrent_weights.grad


@pytest.mark.parametrize("method", ["tanh", "heavi_erfc"])
def test_gradients_stay_finite_over_1000_steps(method, generator):
    grad_in, grad_rec = gradient_after(method, 1000, generator)
    assert torch.isfinite(grad_in).all() and torch.isfinite(grad_rec).all()
    assert grad_in.abs().sum() > 0, "the loss must reach the input weights"
    assert grad_in.norm() < 1e3
    assert torch.all(grad_rec.diagonal() == 0)


def test_norse_super_surrogate_explodes(generator):
    """Documents why the notebook no longer uses "super": in Norse 1.1.0 it ignores alpha and its
    gradient grows by orders of magnitude over a few hundred steps, while "tanh" stays bounded."""
    tanh, _ = gradient_after("tanh", 300, generator)
    generator.manual_seed(1234)
    super_, _ = gradient_after("super", 300, generator)
    assert not torch.isfinite(super_).all() or super_.norm() > 1e3 * tanh.norm()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"input_features": 0, "neurons": 4}, "H"),
        ({"input_features": 4, "neurons": -1}, "N"),
        ({"input_features": 4, "neurons": 4, "backend": "jax"}, "backend"),
    ],
)
def test_rejects_bad_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RefractoryLIFNetwork(**kwargs)


def test_rejects_bad_surrogate():
    with pytest.raises(ValueError, match="method"):
        notebook_parameters("sigmoid")


@pytest.mark.parametrize("shape", [(10, 16), (10, 2, 15), (0, 2, 16), (10, 0, 16)])
def test_rejects_bad_input_shape(shape):
    with pytest.raises(ValueError, match="input_spikes"):
        norse_network().trace(torch.zeros(shape))


@pytest.mark.parametrize(
    "args, match",
    [((1.5, 10, 2, 3), "rate"), ((-0.1, 10, 2, 3), "rate"), ((0.3, 0, 2, 3), "T"), ((0.3, 10, 0, 3), "B"), ((0.3, 10, 2, 0), "H")],
)
def test_poisson_input_rejects_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        poisson_input(*args)


def test_poisson_input_rate_and_seed():
    spikes = poisson_input(0.3, 2000, 4, 50, torch.Generator().manual_seed(0))
    assert spikes.shape == (2000, 4, 50)
    assert abs(spikes.mean().item() - 0.03) < 0.002  # 30 Hz at dt = 1 ms
    assert torch.equal(spikes, poisson_input(0.3, 2000, 4, 50, torch.Generator().manual_seed(0)))
    assert not torch.equal(spikes, poisson_input(0.3, 2000, 4, 50, torch.Generator().manual_seed(1)))
    torch.manual_seed(3)  # without a generator, torch's global one seeds the spikes
    first = poisson_input(0.3, 100, 2, 8)
    torch.manual_seed(3)
    assert torch.equal(first, poisson_input(0.3, 100, 2, 8))


def test_poisson_input_fills_a_reused_buffer_like_a_fresh_tensor():
    fresh = poisson_input(0.3, 200, 4, 50, torch.Generator().manual_seed(2))
    buffer = torch.ones(300, 4, 50)  # stale contents must not survive
    filled = poisson_input(0.3, 200, 4, 50, torch.Generator().manual_seed(2), out=buffer[:200])
    assert torch.equal(filled, fresh) and filled.data_ptr() == buffer.data_ptr()
    with pytest.raises(ValueError, match="out must be a contiguous float32 tensor of shape \\[200, 4, 50\\]"):
        poisson_input(0.3, 200, 4, 50, out=torch.zeros(200, 4, 49))


def test_poisson_input_is_bernoulli_independently_per_entry():
    """Counts per (chain, input) have the binomial mean and variance, consecutive steps are
    uncorrelated, and the extreme rates give no spikes and 10 % (100 Hz) spikes."""
    T, p = 4000, 0.03
    spikes = poisson_input(0.3, T, 8, 64, torch.Generator().manual_seed(5)).double()
    counts = spikes.sum(dim=0).flatten()  # [B * H]
    assert abs(counts.mean().item() - T * p) < 3 * (T * p * (1 - p) / len(counts)) ** 0.5
    assert 0.8 < counts.var().item() / (T * p * (1 - p)) < 1.25
    centred = spikes - spikes.mean()
    correlation = (centred[1:] * centred[:-1]).mean() / centred.pow(2).mean()
    assert abs(correlation.item()) < 0.01
    assert poisson_input(0.0, 50, 2, 8).sum() == 0
    assert abs(poisson_input(1.0, 2000, 4, 50, torch.Generator().manual_seed(0)).mean().item() - 0.1) < 0.005


@pytest.mark.parametrize("p", [1e-3, 0.03, 0.1, 0.5])
def test_geometric_gaps_are_numpys_own_draws(p):
    """The vectorised inversion gives exactly numpy's ``geometric`` and leaves the stream where
    numpy would (p = 0.5 takes numpy's own path), so the input does not depend on which ran."""
    ours, numpys = np.random.default_rng(7), np.random.default_rng(7)
    assert np.array_equal(encoding._geometric(ours, p, 50_000), numpys.geometric(p, 50_000))
    assert ours.random() == numpys.random()
