import dataclasses

import pytest
import torch

from workshop_utils import ExperimentConfig, RefractoryLIFNetwork, generate_target_distribution, target_for, train
from workshop_utils.distribution import kl_per_chain
from workshop_utils.evaluation import long_run_distribution
from workshop_utils.training import OPTIMIZERS

SMALL = dict(neurons=8, input_features=32, batch_size=4, timesteps=100, epochs=3, backend="norse")


def test_same_seed_same_numbers():
    config = ExperimentConfig(**SMALL, seed=5)
    first, second = train(config, progress=False), train(config, progress=False)
    assert first.losses == second.losses
    assert torch.equal(first.model.input_weights, second.model.input_weights)
    assert torch.equal(first.p_target, second.p_target)


def test_other_seed_other_numbers():
    first = train(ExperimentConfig(**SMALL, seed=1), progress=False)
    second = train(ExperimentConfig(**SMALL, seed=2), progress=False)
    assert first.losses != second.losses


def test_training_reduces_the_loss():
    """Both refractory at once 70% of the time, far from the untrained network's 8%."""
    config = ExperimentConfig(neurons=8, input_features=32, batch_size=8, timesteps=500, epochs=30, k=2, learning_rate=1e-2)
    result = train(config, p_target=torch.tensor([0.1, 0.1, 0.1, 0.7]), progress=False)
    assert all(torch.isfinite(torch.tensor(result.losses)))
    assert sum(result.losses[-5:]) < 0.5 * sum(result.losses[:5]), result.losses


def test_result_shapes():
    result = train(ExperimentConfig(**SMALL, k=2), progress=False)
    assert len(result.losses) == 3
    assert result.p_target.shape == result.p_sampled.shape == (4, 4)
    assert result.refractory.shape == result.voltages.shape == (100, 4, 8)
    assert torch.allclose(result.p_sampled.sum(dim=1), torch.ones(4), atol=1e-5)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_trains(name):
    result = train(ExperimentConfig(**SMALL, optimizer=name), progress=False)
    assert len(result.losses) == 3 and all(torch.isfinite(torch.tensor(result.losses)))


def test_explicit_target_table_is_used():
    table = torch.tensor([0.1, 0.2, 0.3, 0.4])
    result = train(ExperimentConfig(**SMALL, k=2), p_target=table, progress=False)
    assert torch.equal(result.p_target, table.expand(4, 4))


@pytest.mark.parametrize(
    "table, match",
    [([0.5, 0.5], "shape"), ([0.5, 0.6, -0.1, 0.0], "non-negative"), ([0.3, 0.3, 0.3, 0.3], "sum to 1")],
)
def test_bad_target_tables_are_rejected(table, match):
    with pytest.raises(ValueError, match=match):
        train(ExperimentConfig(**SMALL, k=2), p_target=torch.tensor(table), progress=False)


@pytest.mark.parametrize(
    "change, match",
    [
        ({"timesteps": 0}, "timesteps"),
        ({"batch_size": -1}, "batch_size"),
        ({"input_features": 0}, "input_features"),
        ({"neurons": 0}, "neurons"),
        ({"epochs": 0}, "epochs"),
        ({"k": 0}, "k"),
        ({"k": 9}, "k"),
        ({"rate": 1.5}, "rate"),
        ({"rate": -0.2}, "rate"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"optimizer": "lbfgs"}, "optimizer"),
        ({"backend": "cuda"}, "backend"),
        ({"seed": -3}, "seed"),
        ({"device": "gpu0"}, "device"),
        ({"timesteps": 2.5}, "timesteps"),
    ],
)
def test_bad_parameters_name_the_parameter(change, match):
    with pytest.raises(ValueError, match=match):
        ExperimentConfig(**{**SMALL, **change})


def test_target_and_training_seeds_are_independent():
    base = ExperimentConfig(**SMALL)
    assert torch.equal(target_for(base), target_for(base.replace(seed=7)))
    assert not torch.equal(target_for(base), target_for(base.replace(target_seed=7)))
    table = torch.full((8,), 1 / 8)
    first = train(base, p_target=table, progress=False)
    second = train(base.replace(target_seed=7), p_target=table, progress=False)
    assert first.losses == second.losses, "the target seed must not change the training's random numbers"


def test_target_is_the_populations_stationary_distribution(generator):
    """The same population (same torch seed) pooled over many chains: every state seen, close to a
    separate long run of it, and one table repeated over the batch by target_for."""
    torch.manual_seed(0)
    p = generate_target_distribution(3, 32, 8, generator=generator, steps=4000, chains=8)
    assert p.shape == (8,) and torch.isclose(p.sum(), torch.tensor(1.0), atol=1e-6) and (p > 0).all()
    torch.manual_seed(0)
    population = RefractoryLIFNetwork(32, 8)
    p_again = long_run_distribution(population, 3, 0.3, 4000, 8, torch.Generator().manual_seed(99))
    assert kl_per_chain(p_again[None], p).item() < 0.01
    table = target_for(ExperimentConfig(**SMALL))
    assert table.shape == (SMALL["batch_size"], 2**3) and torch.equal(table, table[0].expand_as(table))


def test_target_rejects_k_larger_than_n(generator):
    with pytest.raises(ValueError, match="k"):
        generate_target_distribution(9, 4, 8, generator=generator)


def test_config_round_trips_through_a_dict():
    config = ExperimentConfig(**SMALL)
    assert ExperimentConfig(**dataclasses.asdict(config)) == config


def test_timesteps_ramp():
    config = ExperimentConfig(timesteps=1000, final_timesteps=4000, epochs=5)
    assert [config.timesteps_at(e) for e in range(5)] == [1000, 1414, 2000, 2828, 4000]
    assert ExperimentConfig(timesteps=300, epochs=5).timesteps_at(4) == 300


def test_ramped_training_ends_at_the_final_length():
    result = train(ExperimentConfig(**SMALL, final_timesteps=160, lr_schedule="cosine"), progress=False)
    assert result.refractory.shape[0] == 160 and len(result.losses) == 3


@pytest.mark.parametrize("change, match", [({"lr_schedule": "linear"}, "lr_schedule"), ({"final_timesteps": 0}, "final_timesteps")])
def test_bad_schedules_are_rejected(change, match):
    with pytest.raises(ValueError, match=match):
        ExperimentConfig(**SMALL, **change)
