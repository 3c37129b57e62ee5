r"""The recurrent population of leaky integrate-and-fire neurons with an absolute refractory period.

One Euler step (dt = 1 ms) of Norse's ``lif_refrac_step``, for input spikes x, state (z, v, i, rho):

.. math::
    \begin{align*}
        j &= i + W_\text{in} x + W_\text{rec} z \\
        \tilde v &= v + dt\,\tau_\text{mem}^{-1} (v_\text{leak} - v + j), \qquad
        i' = j - dt\,\tau_\text{syn}^{-1} j \\
        \tilde z &= \Theta(\tilde v - v_\text{th}), \qquad m = \Theta(\rho) \quad\text{(refractory mask)} \\
        z' &= (1 - m)\,\tilde z, \qquad
        v' = (1 - m)\,[(1 - \tilde z)\,\tilde v + \tilde z\, v_\text{reset}] + m\, v \\
        \rho' &= (1 - z')\,\max(\rho - m, 0) + z' \rho_\text{reset}
    \end{align*}

A neuron that spikes is clamped for ``rho_reset`` steps. Its refractory state
:math:`\Theta(\rho')` is the binary variable the workshop reads out. In the backward pass
:math:`\Theta` is replaced by a smooth surrogate (``method``, ``alpha``).
"""

from typing import NamedTuple, Optional

import torch
from norse.torch.functional.lif import LIFParameters, LIFState
from norse.torch.functional.lif_refrac import LIFRefracParameters, LIFRefracState
from norse.torch.module.lif_refrac import LIFRefracRecurrentCell

from . import engine
from .checks import require_choice, require_float, require_memory, require_positive_float, require_positive_int, require_shape

BACKENDS = ("fast", "norse")
# Norse's surrogates whose backward pass the fast path reproduces. Norse 1.1.0's "super" ignores alpha
# and its gradients explode over long runs; it is kept only to show that failure.
SURROGATES = ("tanh", "heavi_erfc", "super")


def notebook_parameters(method: str = "tanh", alpha: float = 100.0) -> LIFRefracParameters:
    """The workshop's neuron parameters: v_leak = 1, v_th = 1, refractory reset 10 steps, Norse's taus."""
    method = require_choice("method", method, SURROGATES)
    alpha = require_positive_float("alpha", alpha)
    lif = LIFParameters(v_leak=torch.as_tensor(1.0), method=method, alpha=torch.as_tensor(alpha))
    return LIFRefracParameters(lif, rho_reset=torch.as_tensor(10.0))


class NetworkTrace(NamedTuple):
    """What a simulation records, every tensor ``[T, B, N]``, one row per step after the update."""

    spikes: torch.Tensor  # z', 0/1, carries no gradient
    rho: torch.Tensor  # refractory counter rho', 0 .. rho_reset
    refractory: torch.Tensor  # Theta(rho'), 0/1 with a surrogate gradient
    voltages: torch.Tensor  # v'
    final_state: LIFRefracState  # state after the last step, each field [B, N]; continues a run


def _initial_weights(input_features: int, neurons: int, generator: torch.Generator) -> dict:
    """Norse's ``SNNRecurrentCell`` initialisation, N(0, 2 / N) input and recurrent weights, drawn from
    ``generator`` in Norse's order."""
    if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
        raise ValueError(f"generator must be a CPU torch.Generator (the weights are drawn on the CPU), got {generator!r}")
    scale = torch.sqrt(2.0 / torch.as_tensor(neurons))
    input_weights = torch.randn(neurons, input_features, generator=generator) * scale
    recurrent_weights = torch.randn(neurons, neurons, generator=generator) * scale
    return {"input_weights": torch.nn.Parameter(input_weights), "recurrent_weights": torch.nn.Parameter(recurrent_weights)}


class RefractoryLIFNetwork(torch.nn.Module):
    """N recurrently connected refractory LIF neurons driven by H input spike trains.

    ``input_weights`` is ``[N, H]`` and ``recurrent_weights`` ``[N, N]`` with a zero diagonal (no
    autapses), initialised and named as in Norse's ``LIFRefracRecurrentCell``, whose state-dict keys
    end in ``input_weights`` and ``recurrent_weights``.

    ``backend="fast"`` runs the fastest engine for the device (:mod:`workshop_utils.engine`: fused
    kernels on the CPU), which computes what ``backend="norse"``, Norse's step looped over time, does,
    up to float rounding (the two add the inputs in different orders).

    The initial weights are drawn from ``generator`` (a CPU ``torch.Generator``) as Norse draws them
    from torch's global generator, which is used when ``generator`` is None: ``torch.manual_seed(s)``
    without a generator and ``torch.Generator().manual_seed(s)`` give the same weights.
    """

    def __init__(
        self,
        input_features: int,
        neurons: int,
        parameters: Optional[LIFRefracParameters] = None,
        backend: str = "fast",
        v_init: float = 0.9,
        dt: float = 1e-3,
        generator: Optional[torch.Generator] = None,
    ):
        super().__init__()
        self.input_features = require_positive_int("H (input features)", input_features)
        self.neurons = require_positive_int("N (neurons)", neurons)
        self.backend = require_choice("backend", backend, BACKENDS)
        self.p = parameters if parameters is not None else notebook_parameters()
        require_choice("method", self.p.lif.method, SURROGATES)
        self.v_init = require_float("v_init", v_init)
        self.dt = require_positive_float("dt", dt)
        weight_count = self.neurons * (self.input_features + self.neurons)
        require_memory(f"the weights of N = {self.neurons} neurons with H = {self.input_features} inputs",
                       4 * weight_count)
        weights = {} if generator is None else _initial_weights(self.input_features, self.neurons, generator)
        self.cell = LIFRefracRecurrentCell(self.input_features, self.neurons, p=self.p, dt=self.dt, autapses=False,
                                           **weights)

    @property
    def input_weights(self) -> torch.Tensor:
        return self.cell.input_weights

    @property
    def recurrent_weights(self) -> torch.Tensor:
        return self.cell.recurrent_weights

    def initial_state(self, batch_size: int, device) -> LIFRefracState:
        """z = i = rho = 0 and v = v_init, each ``[B, N]``."""
        zeros = torch.zeros(batch_size, self.neurons, device=device)
        return LIFRefracState(LIFState(zeros, torch.full_like(zeros, self.v_init), zeros), zeros)

    def trace(self, input_spikes: torch.Tensor, state: Optional[LIFRefracState] = None) -> NetworkTrace:
        """Simulate ``[T, B, H]`` input spikes from ``state`` (default: :meth:`initial_state`).

        Every recorded field of the result is ``[T, B, N]``; ``final_state`` continues the run (and
        carries gradients back into it). A ``state`` whose fields are neither ``[B, N]`` nor broadcast
        to it (a state of one chain serves every chain, as in Norse) raises a ``ValueError``.
        """
        require_shape("input_spikes", input_spikes, ("T", "B", self.input_features))
        if input_spikes.shape[0] < 1 or input_spikes.shape[1] < 1:
            raise ValueError(f"input_spikes must have T >= 1 and B >= 1, got shape {list(input_spikes.shape)}")
        if state is None:
            state = self.initial_state(input_spikes.shape[1], input_spikes.device)
        spikes, rho, refractory, voltages, final_state = engine.lif_refrac_sequence(
            input_spikes, self.input_weights, self.recurrent_weights, self.p, self.dt, state,
            backend="auto" if self.backend == "fast" else "norse",
        )
        return NetworkTrace(spikes, rho, refractory, voltages, final_state)

    def forward(self, input_spikes: torch.Tensor):
        """``[T, B, H]`` input spikes -> (refractory states, voltages), both ``[T, B, N]``."""
        trace = self.trace(input_spikes)
        return trace.refractory, trace.voltages
