"""Training a population so that its refractory states sample a target distribution (BPTT, KL loss)."""

import dataclasses
import time
from dataclasses import dataclass
from typing import List, NamedTuple, Optional

import numpy as np
import torch

from .checks import (
    require_choice,
    require_non_negative_int,
    require_positive_float,
    require_positive_int,
    require_probability,
    require_readout_size,
)
from .distribution import joint_distribution, kl_loss
from .encoding import poisson_input
from .neurons import BACKENDS, SURROGATES, RefractoryLIFNetwork, notebook_parameters
from .progress import progress_bar
from .targets import generate_target_distribution

OPTIMIZERS = {
    "adam": lambda params, lr: torch.optim.Adam(params, lr=lr),
    "adamw": lambda params, lr: torch.optim.AdamW(params, lr=lr),
    "sgd": lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9),
    "rmsprop": lambda params, lr: torch.optim.RMSprop(params, lr=lr),
}
LR_SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class ExperimentConfig:
    """Every parameter of one training run. The defaults are the workshop's recipe; the original
    notebook had H = 256 inputs, 40 epochs and a constant learning rate of 1e-3 (notebook 10 compares)."""

    neurons: int = 32  # N, size of the recurrent population
    input_features: int = 1024  # H, Poisson noise sources
    batch_size: int = 32  # B, independent chains trained together
    timesteps: int = 1000  # T, steps per sample (1 ms each)
    epochs: int = 80
    k: int = 3  # readout variables: the refractory states of neurons 1..k
    learning_rate: float = 2e-3
    rate: float = 0.3  # Poisson rate as a fraction of 100 Hz (0.03 spikes per step)
    seed: int = 0  # the trained network's initial weights and its training noise
    target_seed: int = 0  # the random population that generates the target, and its noise
    device: str = "cpu"
    backend: str = "fast"
    method: str = "tanh"  # surrogate gradient of the Heaviside steps
    alpha: float = 100.0  # surrogate sharpness
    optimizer: str = "adam"
    lr_schedule: str = "cosine"  # decay to 5% of learning_rate over the epochs, or "constant"
    final_timesteps: Optional[int] = None  # if set, T grows geometrically to this by the last epoch

    def __post_init__(self):
        for name in ("neurons", "input_features", "batch_size", "timesteps", "epochs"):
            require_positive_int(name, getattr(self, name))
        require_readout_size(self.k, self.neurons)
        require_positive_float("learning_rate", self.learning_rate)
        require_probability("rate", self.rate)
        require_non_negative_int("seed", self.seed)
        require_non_negative_int("target_seed", self.target_seed)
        require_choice("backend", self.backend, BACKENDS)
        require_choice("method", self.method, SURROGATES)
        require_positive_float("alpha", self.alpha)
        require_choice("optimizer", self.optimizer, tuple(OPTIMIZERS))
        require_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        if self.final_timesteps is not None:
            require_positive_int("final_timesteps", self.final_timesteps)
        try:
            torch.device(self.device)
        except RuntimeError:
            raise ValueError(f"device must be a torch device such as 'cpu' or 'cuda', got {self.device!r}") from None

    def replace(self, **changes) -> "ExperimentConfig":
        """A copy with some fields changed (and checked again)."""
        return dataclasses.replace(self, **changes)

    def timesteps_at(self, epoch: int) -> int:
        """T of epoch ``epoch`` (0-based): ``timesteps``, or a geometric ramp to ``final_timesteps``."""
        if self.final_timesteps is None or self.epochs == 1:
            return self.timesteps
        growth = (self.final_timesteps / self.timesteps) ** (epoch / (self.epochs - 1))
        return int(round(self.timesteps * growth))


class StepResult(NamedTuple):
    loss: torch.Tensor  # scalar
    p_sampled: torch.Tensor  # [B, 2**k]
    refractory: torch.Tensor  # [T, B, N]
    voltages: torch.Tensor  # [T, B, N]


@dataclass
class TrainingResult:
    config: ExperimentConfig
    model: RefractoryLIFNetwork
    p_target: torch.Tensor  # [B, 2**k]
    losses: List[float]
    p_sampled: torch.Tensor  # [B, 2**k], last epoch
    refractory: torch.Tensor  # [T, B, N], last epoch
    voltages: torch.Tensor  # [T, B, N], last epoch
    seconds: float  # wall time of the training loop


def seeded_streams(seed: int, stream: str, device="cpu") -> torch.Generator:
    """Seed torch's global generator (Norse draws initial weights from it) and return a generator for
    Poisson noise, both from (seed, stream): the target and the training never share random numbers."""
    entropy = [seed, {"target": 0, "training": 1}[stream]]
    derived = int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0] >> 1)
    torch.manual_seed(derived)
    return torch.Generator(device=device).manual_seed(derived)


def target_for(config: ExperimentConfig) -> torch.Tensor:
    """The notebook's target for ``config``, ``[B, 2**k]`` (one table per chain, all equal): the
    stationary distribution of a random population of the configuration's size drawn from
    ``config.target_seed`` (:func:`~workshop_utils.targets.generate_target_distribution`)."""
    generator = seeded_streams(config.target_seed, "target", config.device)
    # the fast path computes the same numbers as Norse's loop, so the target does not depend on the backend
    p_target = generate_target_distribution(
        config.k, config.input_features, config.neurons, config.rate, generator, device=config.device
    )
    return expand_target(p_target, config.k, config.batch_size, config.device)


def build_model(config: ExperimentConfig) -> RefractoryLIFNetwork:
    """The population described by ``config``, weights drawn from torch's global generator."""
    parameters = notebook_parameters(config.method, config.alpha)
    return RefractoryLIFNetwork(
        config.input_features, config.neurons, parameters, backend=config.backend
    ).to(config.device)


def training_step(model, optimizer, input_spikes, p_target, k) -> StepResult:
    """One epoch: simulate ``[T, B, H]`` input, read out the first k refractory states, take the KL
    between target and sampled distribution, back-propagate through time and update the weights."""
    optimizer.zero_grad()
    refractory, voltages = model(input_spikes)
    p_sampled = joint_distribution(refractory[:, :, :k])
    loss = kl_loss(p_sampled, p_target)
    loss.backward()
    optimizer.step()
    return StepResult(loss.detach(), p_sampled.detach(), refractory.detach(), voltages.detach())


def expand_target(p_target, k: int, batch_size: int, device) -> torch.Tensor:
    """Check a target table of 2**k probabilities, ``[2**k]`` or ``[B, 2**k]``; return ``[B, 2**k]``."""
    p_target = torch.as_tensor(p_target, dtype=torch.float32, device=device)
    if p_target.dim() == 1:
        p_target = p_target.unsqueeze(0).expand(batch_size, -1)
    if p_target.dim() != 2 or p_target.shape != (batch_size, 2**k):
        raise ValueError(
            f"p_target must have shape [2**k] = [{2**k}] or [B, 2**k] = [{batch_size}, {2**k}], "
            f"got {list(p_target.shape)}"
        )
    if not torch.isfinite(p_target).all() or (p_target < 0).any():
        raise ValueError("p_target must hold finite, non-negative probabilities")
    if not torch.allclose(p_target.sum(dim=1), torch.ones(batch_size, device=device), atol=1e-4):
        raise ValueError(f"each row of p_target must sum to 1, got sums {p_target.sum(dim=1).tolist()}")
    return p_target.contiguous()


def train(
    config: ExperimentConfig, p_target: Optional[torch.Tensor] = None, progress: bool = True
) -> TrainingResult:
    """Train a fresh population for ``config.epochs`` epochs, a fresh Poisson sample each epoch.

    Without ``p_target`` the target is :func:`target_for` ``(config)``. The same config gives the same
    numbers on the same device with the same number of torch threads (the fast path splits the batch
    into one block per thread, and the blocks' gradients are summed in that order).
    """
    p_target = target_for(config) if p_target is None else p_target
    p_target = expand_target(p_target, config.k, config.batch_size, config.device)
    noise = seeded_streams(config.seed, "training", config.device)
    model = build_model(config)
    optimizer = OPTIMIZERS[config.optimizer](model.parameters(), config.learning_rate)
    schedule = None
    if config.lr_schedule == "cosine":
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=config.epochs, eta_min=0.05 * config.learning_rate
        )

    losses = []
    started = time.perf_counter()
    longest = max(config.timesteps_at(epoch) for epoch in range(config.epochs))
    buffer = torch.empty(longest, config.batch_size, config.input_features, device=config.device)
    bar = progress_bar(range(config.epochs), desc="training", disable=not progress, mininterval=0.5)
    for epoch in bar:
        T = config.timesteps_at(epoch)
        spikes = poisson_input(config.rate, T, config.batch_size, config.input_features, noise, config.device,
                               out=buffer[:T])  # one buffer for all epochs: no fresh [T, B, H] memory each time
        step = training_step(model, optimizer, spikes, p_target, config.k)
        if schedule is not None:
            schedule.step()
        losses.append(step.loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
    seconds = time.perf_counter() - started
    return TrainingResult(
        config, model, p_target, losses, step.p_sampled, step.refractory, step.voltages, seconds
    )
