"""The same seed gives the same numbers at any thread count (on one CPU).

The CPU kernels split the batch into fixed gradient groups whatever the number of threads, and the
rest of a training step (torch's joint distribution, KL, their gradients, Adam) does not depend on
it either: a sweep whose workers run with other thread counts than a serial run reproduces it.
"""

import pytest
import torch

from workshop_utils import ExperimentConfig, RefractoryLIFNetwork, engine, notebook_parameters, poisson_input, train
from workshop_utils.training import training_step

requires_numba = pytest.mark.skipif(not engine.fast_path_available(), reason="numba kernels unavailable")


def at_threads(count, function):
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        return function()
    finally:
        torch.set_num_threads(before)


def three_training_steps():
    """Three steps of the workshop's network (N = 32, B = 32, T = 1000, H = 256, k = 3) from one seed."""
    torch.manual_seed(0)
    model = RefractoryLIFNetwork(256, 32, notebook_parameters())
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    target = torch.softmax(torch.randn(8, generator=torch.Generator().manual_seed(1)), 0).expand(32, -1)
    numbers = []
    for step in range(3):
        x = poisson_input(0.3, 1000, 32, 256, torch.Generator().manual_seed(step))
        result = training_step(model, optimizer, x, target, 3)
        numbers += [result.loss, result.p_sampled, result.voltages, model.input_weights.detach().clone(),
                    model.recurrent_weights.detach().clone()]
    return numbers


@requires_numba
def test_a_training_step_gives_the_same_numbers_at_1_2_and_4_threads():
    runs = [at_threads(count, three_training_steps) for count in (1, 2, 4)]
    for run in runs[1:]:
        for ours, theirs in zip(runs[0], run):
            assert torch.equal(ours, theirs)


@requires_numba
def test_train_gives_the_same_numbers_at_1_and_3_threads():
    """``train`` as a sweep runs it (target, Poisson input, cosine schedule), on 5 chains."""
    config = ExperimentConfig(neurons=12, input_features=40, batch_size=5, timesteps=200, epochs=3, k=2)
    runs = [at_threads(count, lambda: train(config, progress=False)) for count in (1, 3)]
    assert runs[0].losses == runs[1].losses
    assert torch.equal(runs[0].p_target, runs[1].p_target)
    assert torch.equal(runs[0].model.input_weights, runs[1].model.input_weights)
