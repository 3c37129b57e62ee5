"""Training a population so that its refractory states sample a target distribution (BPTT, KL loss)."""

import dataclasses
import math
import time
import warnings
from dataclasses import dataclass
from typing import List, NamedTuple, Optional, Tuple

import numpy as np
import torch

from .checks import (
    require_choice,
    require_device,
    require_distribution,
    require_float,
    require_float_tensor,
    require_int,
    require_memory,
    require_non_negative_int,
    require_positive_float,
    require_positive_int,
    require_probability,
    require_readout_size,
    require_seed,
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
FLOAT32_MAX = float(torch.finfo(torch.float32).max)
# The largest learning rate accepted: SGD trains at up to 10 here (exercise 9), and far larger rates
# only overflow: Adam's first step scales the rate by 1 / (1 - beta1) = 10, and beyond 3.4e37 torch
# cannot even convert it to float32 (a RuntimeError from inside Adam instead of a clear error).
MAX_LEARNING_RATE = 1e3


# Configurations that cannot train, measured on the recipe's network (N = 32, H = 1024, B = 32, k = 3,
# Adam 2e-3, seeds 0-2; benchmarks/training_limits.py): the largest |gradient| of the first epochs.
# "tanh" and "heavi_erfc" explode through time for alpha <= 20 (1e4 to 1e25 at T = 1000, NaN at
# T = 4000 for alpha <= 15), sit at the edge at alpha = 30 (up to 3.6, a hundred times the usual)
# and stay near 0.01 from alpha = 50 on, at T = 1000 and 4000: alpha >= 50 trains.
MIN_TRAINING_ALPHA = 50.0
# Norse 1.1.0's "super" ignores alpha: its largest |gradient| grows a hundredfold with each doubling
# of T (0.25-1.2 at T = 25, 1e9-1e12 at T = 200, NaN at T = 1000).
TRAINABLE_SURROGATES = ("tanh", "heavi_erfc")
# The input's drive, 0.1 x rate x H input spikes per step reaching each neuron: with too little the
# neurons wait just below threshold (v_leak = v_th), where the surrogate is steepest, and the
# gradients explode through time. At H = 1024, T = 1000: NaN at a drive of 0.01, 1e15 at 0.03, up to
# 0.16 at 0.1 (7.7 at T = 4000), near 0.03 from 0.3 on; H = 32 and 256 behave alike. A rate of 0
# gives no spike and no gradient at all.
MIN_INPUT_DRIVE = 0.3
# the 4-byte numbers that training holds per step and chain, beyond the [T, B, H] input and [T, B, 2**k] readout
RECORDS_PER_NEURON = 6


class NonFiniteTrainingError(FloatingPointError):
    """Training produced a NaN or an infinity: ``what`` (the loss, a gradient, weights) at ``epoch``.

    Raised by :func:`training_step` and :func:`train` before anything non-finite is returned or saved."""

    def __init__(self, message: str, what: str, epoch: Optional[int]):
        super().__init__(message)
        self.what, self.epoch = what, epoch


@dataclass(frozen=True)
class ExperimentConfig:
    """Every parameter of one training run. The defaults are the workshop's recipe; the original
    notebook had H = 256 inputs, 40 epochs and a constant learning rate of 1e-3 (notebook 10 compares).

    Each field is checked and stored as a plain Python value: numbers may be given as numpy scalars
    or numeric strings (papermill's YAML hands ``2e-3`` over as a string), the device as a string or
    ``torch.device`` (stored as torch names it, ``"cuda"`` as ``"cuda:0"``). A ValueError names the
    field and what is allowed. Configurations that cannot train are refused with the reason: the
    ``"super"`` surrogate, ``alpha`` below :data:`MIN_TRAINING_ALPHA`, an input too weak to drive the
    neurons (``rate`` x H below :data:`MIN_INPUT_DRIVE` / 0.1), and sizes whose training cannot fit in
    the device's memory.
    """

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
        fields = {name: require_positive_int(name, getattr(self, name))
                  for name in ("neurons", "input_features", "batch_size", "timesteps", "epochs")}
        fields.update(
            k=require_readout_size(self.k, fields["neurons"]),
            # float32 weights: torch's optimisers cannot use a step size beyond float32's range
            learning_rate=require_float("learning_rate", self.learning_rate, 0.0, MAX_LEARNING_RATE,
                                        include_minimum=False),
            rate=require_probability("rate", self.rate),
            seed=require_seed("seed", self.seed),
            target_seed=require_seed("target_seed", self.target_seed),
            device=require_device(self.device),
            backend=require_choice("backend", self.backend, BACKENDS),
            method=require_choice("method", self.method, SURROGATES),
            alpha=require_positive_float("alpha", self.alpha),
            optimizer=require_choice("optimizer", self.optimizer, tuple(OPTIMIZERS)),
            lr_schedule=require_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES),
            final_timesteps=None if self.final_timesteps is None
            else require_positive_int("final_timesteps", self.final_timesteps),
        )
        for name, value in fields.items():
            object.__setattr__(self, name, value)  # frozen: the checked, normalised value replaces the given one
        _check_trainable(self)

    def replace(self, **changes) -> "ExperimentConfig":
        """A copy with some fields changed (and checked again)."""
        return dataclasses.replace(self, **changes)

    def timesteps_at(self, epoch: int) -> int:
        """T of epoch ``epoch`` (0-based): ``timesteps``, or a geometric ramp to ``final_timesteps``."""
        epoch = require_int("epoch", epoch, minimum=0, maximum=self.epochs - 1)
        if self.final_timesteps is None or self.epochs == 1:
            return self.timesteps
        growth = (self.final_timesteps / self.timesteps) ** (epoch / (self.epochs - 1))
        return int(round(self.timesteps * growth))

    @property
    def longest_timesteps(self) -> int:
        """The largest T of any epoch: the ramp is monotone, so one of its two ends."""
        return max(self.timesteps, self.final_timesteps or self.timesteps)


def training_memory(config: ExperimentConfig) -> int:
    """Bytes that training ``config`` needs at least: the ``[T, B, H]`` input, the ``[T, B, N]`` records
    of the simulation and its backward pass, the ``[T, B, 2**k]`` products of the joint distribution
    (three, with autograd's), and the weights with their gradients and two optimiser moments."""
    T, B = config.longest_timesteps, config.batch_size
    N, H = config.neurons, config.input_features
    return 4 * (T * B * (H + RECORDS_PER_NEURON * N + 3 * 2**config.k) + 4 * N * (H + N))


def _check_trainable(config: ExperimentConfig) -> None:
    """Refuse, with the reason, a configuration whose training cannot work (see the module's constants)."""
    if config.method not in TRAINABLE_SURROGATES:
        raise ValueError(
            f"method {config.method!r} cannot train: Norse's 'super' surrogate ignores alpha and its gradients "
            f"grow a hundredfold with each doubling of T (NaN by T = 1000); use one of {TRAINABLE_SURROGATES}")
    if config.alpha < MIN_TRAINING_ALPHA:
        raise ValueError(
            f"alpha must be at least {MIN_TRAINING_ALPHA:g} to train, got {config.alpha:g}: with a wider surrogate "
            f"the gradients explode through time (alpha = 20 gives 1e4 to 1e25 at T = 1000, alpha <= 15 NaN)")
    drive = 0.1 * config.rate * config.input_features
    if drive < MIN_INPUT_DRIVE:
        raise ValueError(
            f"rate must be at least {MIN_INPUT_DRIVE / (0.1 * config.input_features):.3g} for H = "
            f"{config.input_features} inputs, got {config.rate:g}: the input brings {drive:.3g} spikes per step "
            f"to each neuron (at least {MIN_INPUT_DRIVE:g} needed); with less the neurons wait just below "
            f"threshold and the surrogate gradients explode through time (a rate of 0 gives no gradient at all)")
    require_memory(f"training with neurons = {config.neurons}, input_features = {config.input_features}, "
                   f"batch_size = {config.batch_size}, timesteps = {config.timesteps}"
                   + ("" if config.final_timesteps is None else f", final_timesteps = {config.final_timesteps}")
                   + f", k = {config.k}", training_memory(config), config.device)


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


def seeded_generators(seed: int, stream: str, device="cpu") -> Tuple[torch.Generator, torch.Generator]:
    """Two generators seeded from (seed, stream), one for initial weights (on the CPU, where they are
    drawn) and one for Poisson noise (on ``device``): the target and the training never share random
    numbers, and no run draws from torch's global generator, so a seed gives the same numbers
    whatever runs beside it (threads, a sweep)."""
    seed = require_seed("seed", seed)
    entropy = [seed, {"target": 0, "training": 1}[require_choice("stream", stream, ("target", "training"))]]
    derived = int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0] >> 1)
    weights = torch.Generator().manual_seed(derived)
    return weights, torch.Generator(device=require_device(device)).manual_seed(derived)


def _require_config(config) -> ExperimentConfig:
    if not isinstance(config, ExperimentConfig):
        raise ValueError(f"config must be an ExperimentConfig, got {type(config).__name__}")
    return config


def target_for(config: ExperimentConfig) -> torch.Tensor:
    """The notebook's target for ``config``, ``[B, 2**k]`` (one table per chain, all equal): the
    stationary distribution of a random population of the configuration's size drawn from
    ``config.target_seed`` (:func:`~workshop_utils.targets.generate_target_distribution`)."""
    config = _require_config(config)
    weights, noise = seeded_generators(config.target_seed, "target", config.device)
    # the fast path computes the same numbers as Norse's loop, so the target does not depend on the backend
    p_target = generate_target_distribution(
        config.k, config.input_features, config.neurons, config.rate, noise, device=config.device,
        weight_generator=weights,
    )
    return expand_target(p_target, config.k, config.batch_size, config.device)


def build_model(config: ExperimentConfig, generator: Optional[torch.Generator] = None) -> RefractoryLIFNetwork:
    """The population described by ``config``, on its device, with initial weights drawn from
    ``generator`` (a CPU generator; default: the one :func:`train` draws them from for ``config.seed``)."""
    config = _require_config(config)
    if generator is None:
        generator, _ = seeded_generators(config.seed, "training")
    parameters = notebook_parameters(config.method, config.alpha)
    return RefractoryLIFNetwork(
        config.input_features, config.neurons, parameters, backend=config.backend, generator=generator
    ).to(config.device)


def _largest_gradient(model: torch.nn.Module) -> float:
    """max |gradient| over the model's parameters (NaN if any is NaN: torch's max propagates it)."""
    return torch.stack([p.grad.abs().max() for p in model.parameters() if p.grad is not None]).max().item()


def _stop(what: str, epoch: Optional[int], model, optimizer, input_spikes) -> NonFiniteTrainingError:
    where = f" at epoch {epoch}" if epoch is not None else ""
    drive = input_spikes.sum().item() / (input_spikes.shape[0] * input_spikes.shape[1])
    lr = optimizer.param_groups[0].get("lr", float("nan"))
    return NonFiniteTrainingError(
        f"training stopped{where}: {what} became non-finite (NaN or inf). Likely causes: the surrogate "
        f"gradient exploding through time (method={model.p.lif.method!r}, alpha={float(model.p.lif.alpha):g}; "
        f"{TRAINABLE_SURROGATES} with alpha >= {MIN_TRAINING_ALPHA:g} train), an input too weak to drive the "
        f"neurons ({drive:.3g} input spikes per step and neuron; the rate sets it), or a learning rate too "
        f"high (lr={lr:g}). Nothing of this run was kept.", what, epoch)


def training_step(model, optimizer, input_spikes, p_target, k, epoch: Optional[int] = None) -> StepResult:
    """One epoch: simulate ``[T, B, H]`` input, read out the first k refractory states, take the KL
    between target and sampled distribution ``[B, 2**k]``, back-propagate through time and update the
    weights.

    Raises :class:`NonFiniteTrainingError` (``epoch`` goes into its message) if the loss or a gradient is
    not finite, before the update, or if the updated weights are not; warns if the largest |gradient|
    exceeds 1e6 (a gradient exploding through time, a thousand times and more what training sees)."""
    if not isinstance(model, RefractoryLIFNetwork):
        raise ValueError(f"model must be a RefractoryLIFNetwork, got {type(model).__name__}")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ValueError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    k = require_readout_size(k, model.neurons)
    epoch = None if epoch is None else require_non_negative_int("epoch", epoch)
    optimizer.zero_grad()
    refractory, voltages = model(input_spikes)
    p_sampled = joint_distribution(refractory[:, :, :k])
    loss = kl_loss(p_sampled, p_target)
    loss.backward()
    if not torch.isfinite(loss):
        raise _stop("the loss", epoch, model, optimizer, input_spikes)
    largest = _largest_gradient(model)
    if not math.isfinite(largest):
        raise _stop("the gradient of the weights", epoch, model, optimizer, input_spikes)
    if largest > 1e6:
        warnings.warn(f"the largest |gradient| is {largest:.3g} at epoch {epoch}: the surrogate gradient "
                      f"explodes through time", RuntimeWarning, stacklevel=2)
    optimizer.step()
    if not all(torch.isfinite(parameter).all() for parameter in model.parameters()):
        raise _stop("the weights (after the optimiser's step)", epoch, model, optimizer, input_spikes)
    return StepResult(loss.detach(), p_sampled.detach(), refractory.detach(), voltages.detach())


def expand_target(p_target, k: int, batch_size: int, device) -> torch.Tensor:
    """Check a target table of 2**k probabilities, ``[2**k]`` or ``[B, 2**k]``; return ``[B, 2**k]``."""
    device = require_device(device)
    states = 2 ** require_positive_int("k", k)
    batch_size = require_positive_int("batch_size", batch_size)
    dims = p_target.dim() if isinstance(p_target, torch.Tensor) else np.ndim(p_target)
    p_target = require_float_tensor("p_target", p_target, (states,) if dims == 1 else (batch_size, states)
                                    if dims == 2 else ("[2**k]", ))
    p_target = p_target.to(device=device, dtype=torch.float32)
    if p_target.dim() == 1:
        p_target = p_target.unsqueeze(0).expand(batch_size, -1)
    require_distribution("p_target", p_target, atol=1e-4)
    return p_target.contiguous()


def train(
    config: ExperimentConfig, p_target: Optional[torch.Tensor] = None, progress: bool = True
) -> TrainingResult:
    """Train a fresh population for ``config.epochs`` epochs, a fresh Poisson sample each epoch.

    Without ``p_target`` the target is :func:`target_for` ``(config)``. The initial weights and the
    noise come from generators of the run's own (:func:`seeded_generators`), so the same config gives
    the same numbers whatever runs beside it, on the same device with the same number of torch threads
    (the fast path splits the batch into one block per thread, and the blocks' gradients are summed in
    that order).

    The loss, the gradients and the weights are checked every epoch: the first NaN or infinity stops
    training with a :class:`NonFiniteTrainingError` that says what, at which epoch, and the likely cause.
    Runs from several processes must start them with ``spawn``, not ``fork``: a process forked after
    torch has used its OpenMP threads can hang (torch with GNU libgomp).
    """
    config = _require_config(config)
    if not isinstance(progress, (bool, np.bool_)):
        raise ValueError(f"progress must be True or False, got {progress!r}")
    p_target = target_for(config) if p_target is None else p_target
    p_target = expand_target(p_target, config.k, config.batch_size, config.device)
    weights, noise = seeded_generators(config.seed, "training", config.device)
    model = build_model(config, weights)
    optimizer = OPTIMIZERS[config.optimizer](model.parameters(), config.learning_rate)
    schedule = None
    if config.lr_schedule == "cosine":
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=config.epochs, eta_min=0.05 * config.learning_rate
        )

    losses = []
    started = time.perf_counter()
    buffer = torch.empty(config.longest_timesteps, config.batch_size, config.input_features, device=config.device)
    bar = progress_bar(None, total=config.epochs, desc="training", disable=not progress, mininterval=0.5)
    for epoch in range(config.epochs):  # a range of any length: tqdm(range(...)) needs len() < 2**63
        T = config.timesteps_at(epoch)
        spikes = poisson_input(config.rate, T, config.batch_size, config.input_features, noise, config.device,
                               out=buffer[:T])  # one buffer for all epochs: no fresh [T, B, H] memory each time
        step = training_step(model, optimizer, spikes, p_target, config.k, epoch=epoch)
        if schedule is not None:
            schedule.step()
        losses.append(step.loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
        bar.update()
    bar.close()
    seconds = time.perf_counter() - started
    return TrainingResult(
        config, model, p_target, losses, step.p_sampled, step.refractory, step.voltages, seconds
    )
