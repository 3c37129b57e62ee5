"""The reference engine: Norse's ``lif_refrac_step`` called once per time step (plain PyTorch, any device).

Every other engine computes what this one does; the tests compare them with it.
"""

import torch
from norse.torch.functional.lif_refrac import LIFRefracParameters, LIFRefracState, lif_refrac_step
from norse.torch.functional.threshold import threshold


def step_loop(step, input_spikes: torch.Tensor, state: LIFRefracState, p: LIFRefracParameters):
    """Call ``step(x, state) -> (z, state)`` (Norse's cell or ``lif_refrac_step``) once per time step
    of ``[T, B, H]`` input; returns (spikes, rho, refractory, voltages), each ``[T, B, N]``, and the
    final state. Spikes are detached; refractory is Theta(rho) with the surrogate of ``p``."""
    spikes, rho, voltages = [], [], []
    for x in input_spikes:
        z, state = step(x, state)
        spikes.append(z.detach())
        rho.append(state.rho)
        voltages.append(state.lif.v)
    rho = torch.stack(rho)
    return torch.stack(spikes), rho, threshold(rho, p.lif.method, p.lif.alpha), torch.stack(voltages), state


def _zero_diagonal_gradient(recurrent_weights: torch.Tensor) -> torch.Tensor:
    """The same weights, whose gradient gets a zero diagonal like the fast path's (no autapses)."""
    weights = recurrent_weights.view_as(recurrent_weights)
    if weights.requires_grad:
        weights.register_hook(lambda gradient: gradient.clone().fill_diagonal_(0.0))
    return weights


def lif_refrac_loop(input_spikes, input_weights, recurrent_weights, p, dt, state):
    """Norse's ``lif_refrac_step`` once per step of ``[T, B, H]`` input, from ``state`` (fields ``[B, N]``);
    returns (spikes, rho, refractory, voltages), each ``[T, B, N]``, and the final state."""
    recurrent_weights = _zero_diagonal_gradient(recurrent_weights)
    step = lambda x, s: lif_refrac_step(x, s, input_weights, recurrent_weights, p, dt)  # noqa: E731
    return step_loop(step, input_spikes, state, p)
