import itertools

import pytest
import torch

from workshop_utils import joint_distribution, kl_loss, state_labels


def three_point_correlations_func(rho):
    """The original notebook's k = 3 implementation, kept verbatim as the reference."""
    T, B, _ = rho.shape
    rb0 = torch.stack([1 - rho[:, :, 0], rho[:, :, 0]])
    rb1 = torch.stack([1 - rho[:, :, 1], rho[:, :, 1]])
    rb2 = torch.stack([1 - rho[:, :, 2], rho[:, :, 2]])
    return torch.einsum("atb,dtb,gtb -> badg", rb0, rb1, rb2) / T


def count_states(states):
    """Reference by counting: states [T, B, k] of 0/1 -> [B, 2**k] frequencies, z_1 most significant."""
    T, B, k = states.shape
    weights = 2 ** torch.arange(k - 1, -1, -1)
    index = (states.long() * weights).sum(dim=-1)  # [T, B]
    return torch.stack([torch.bincount(index[:, b], minlength=2**k) for b in range(B)]).float() / T


def test_equals_the_original_three_point_function(generator):
    states = (torch.rand(200, 4, 3, generator=generator) < 0.4).float()
    expected = three_point_correlations_func(states).flatten(start_dim=1)
    assert torch.allclose(joint_distribution(states), expected, atol=1e-7)


def test_soft_states_equal_the_original_too(generator):
    states = torch.rand(50, 3, 3, generator=generator)
    expected = three_point_correlations_func(states).flatten(start_dim=1)
    assert torch.allclose(joint_distribution(states), expected, atol=1e-6)


@pytest.mark.parametrize("k", [1, 2, 4, 5, 7])
def test_equals_counting_for_any_k(generator, k):
    states = (torch.rand(300, 3, k, generator=generator) < 0.3).float()
    p = joint_distribution(states)
    assert p.shape == (3, 2**k)
    assert torch.allclose(p, count_states(states), atol=1e-6)
    assert torch.allclose(p.sum(dim=1), torch.ones(3), atol=1e-6)


def test_bit_order_matches_labels():
    k = 3
    for index, bits in enumerate(itertools.product([0, 1], repeat=k)):
        states = torch.tensor(bits, dtype=torch.float32).view(1, 1, k)
        p = joint_distribution(states)[0]
        assert p[index] == 1.0 and p.sum() == 1.0
        assert state_labels(k)[index] == "".join(map(str, bits))


def test_is_differentiable(generator):
    states = torch.rand(20, 2, 3, generator=generator, requires_grad=True)
    joint_distribution(states)[:, 5].sum().backward()  # state 101
    z1, z2, z3 = states.detach().unbind(-1)
    expected = torch.stack([(1 - z2) * z3, -z1 * z3, z1 * (1 - z2)], dim=-1) / 20
    assert torch.allclose(states.grad, expected, atol=1e-6)


@pytest.mark.parametrize("shape", [(10, 3), (10, 2, 3, 1), (0, 2, 3), (10, 2, 0)])
def test_rejects_bad_shapes(shape):
    with pytest.raises(ValueError, match="states|T|k"):
        joint_distribution(torch.zeros(shape))


def test_kl_loss_is_kl_of_target_against_sampled():
    p_t = torch.tensor([[0.5, 0.25, 0.25, 0.0]])
    p_s = torch.tensor([[0.25, 0.25, 0.25, 0.25]])
    expected = 0.5 * torch.log(torch.tensor(2.0))  # sum p_t log(p_t / p_s)
    assert torch.allclose(kl_loss(p_s, p_t), expected)
    assert kl_loss(p_t, p_t) == 0


def test_kl_loss_clamps_unvisited_states():
    p_t = torch.tensor([[0.5, 0.5]])
    p_s = torch.tensor([[1.0, 0.0]])
    loss = kl_loss(p_s, p_t)
    assert torch.isfinite(loss)
    assert torch.allclose(loss, 0.5 * torch.log(torch.tensor(0.5)) + 0.5 * torch.log(torch.tensor(0.5 / 1e-7)))
