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

import functools
import math
from typing import NamedTuple, Optional

import numpy as np
import torch
from norse.torch.functional.encode import poisson_encode
from norse.torch.functional.lif import LIFParameters, LIFState
from norse.torch.functional.lif_refrac import LIFRefracParameters, LIFRefracState
from norse.torch.functional.threshold import threshold
from norse.torch.module.lif_refrac import LIFRefracRecurrentCell

from .checks import (
    require_choice,
    require_positive_float,
    require_positive_int,
    require_probability,
    require_shape,
)

BACKENDS = ("fast", "norse")
# Norse's surrogates whose backward pass the fast path reproduces. Norse 1.1.0's "super" ignores alpha
# and its gradients explode over long runs; it is kept only to show that failure.
SURROGATES = ("tanh", "heavi_erfc", "super")


def notebook_parameters(method: str = "tanh", alpha: float = 100.0) -> LIFRefracParameters:
    """The workshop's neuron parameters: v_leak = 1, v_th = 1, refractory reset 10 steps, Norse's taus."""
    require_choice("method", method, SURROGATES)
    alpha = require_positive_float("alpha", alpha)
    lif = LIFParameters(v_leak=torch.as_tensor(1.0), method=method, alpha=torch.as_tensor(alpha))
    return LIFRefracParameters(lif, rho_reset=torch.as_tensor(10.0))


def poisson_input(
    rate: float,
    timesteps: int,
    batch_size: int,
    input_features: int,
    generator: Optional[torch.Generator] = None,
    device="cpu",
    out: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Independent Poisson spike trains ``[T, B, H]`` (0/1 floats).

    ``rate`` is a fraction of Norse's maximal rate of 100 Hz, as Norse's ``poisson_encode`` reads it:
    rate 0.3 means 30 Hz, i.e. a spike probability of 0.03 per 1 ms step, independently for every
    step, chain and input. On the CPU the spikes are placed by drawing the geometric gaps between
    them (numpy), about one random number per spike instead of one per entry, seeded from
    ``generator`` (default: torch's global generator, so ``torch.manual_seed`` reproduces them).
    On other devices ``poisson_encode`` draws them there.

    ``out``, a contiguous float32 ``[T, B, H]`` tensor on ``device``, is overwritten and returned
    instead of a new tensor: a training loop that reuses it saves allocating (and the operating
    system zeroing) T x B x H fresh floats every epoch.
    """
    rate = require_probability("rate", rate)
    timesteps = require_positive_int("T (timesteps)", timesteps)
    batch_size = require_positive_int("B (batch size)", batch_size)
    input_features = require_positive_int("H (input features)", input_features)
    shape = (timesteps, batch_size, input_features)
    if out is not None and (tuple(out.shape) != shape or out.dtype != torch.float32 or not out.is_contiguous()
                            or out.device != torch.device(device)):
        raise ValueError(f"out must be a contiguous float32 tensor of shape {list(shape)} on {device}, "
                         f"got {out.dtype} {list(out.shape)} on {out.device}")
    if torch.device(device).type != "cpu":
        values = torch.full((batch_size, input_features), rate, device=device)
        spikes = poisson_encode(values, timesteps, generator=generator)
        return spikes if out is None else out.copy_(spikes)
    p = 0.1 * rate  # dt * f_max * rate with dt = 1 ms, f_max = 100 Hz
    seed = int(torch.randint(2**62, (1,), generator=generator))
    if out is None:
        flat = np.zeros(math.prod(shape), np.float32)  # calloc: pages are zeroed as they are first written
    else:
        out.zero_()  # torch's fill runs on all its threads
        flat = out.numpy().reshape(-1)
    _place_bernoulli_spikes(flat, p, np.random.default_rng(seed))
    return torch.from_numpy(flat.reshape(shape)) if out is None else out


def _place_bernoulli_spikes(flat: np.ndarray, p: float, rng: np.random.Generator) -> None:
    """Set entries of the all-zero float32 array ``flat`` to 1 with probability p independently:
    the gaps between consecutive ones are geometric(p)."""
    n = flat.shape[0]
    position = -1  # the last spike placed
    while p > 0:
        expected = (n - position) * p
        positions = position + np.cumsum(_geometric(rng, p, int(expected + 5 * math.sqrt(expected) + 16)))
        # torch's index_fill_ writes the ones twice as fast as numpy's fancy indexing
        torch.from_numpy(flat).index_fill_(0, torch.from_numpy(positions[positions < n]), 1.0)
        if positions[-1] >= n:
            break
        position = int(positions[-1])


def _geometric(rng: np.random.Generator, p: float, size: int) -> np.ndarray:
    """``rng.geometric(p, size)``: the same numbers from the same random stream, twice as fast.

    For p < 1/3 numpy draws each one as ceil(-E / log1p(-p)) from a standard exponential E, one call
    at a time; here the same formula runs on an array of E. Used only where
    :func:`_geometric_by_inversion_is_numpys` has checked that the two agree for this numpy.
    """
    if p < 1 / 3 and _geometric_by_inversion_is_numpys():
        return np.ceil(-rng.standard_exponential(size) / math.log1p(-p)).astype(np.int64)
    return rng.geometric(p, size)


@functools.lru_cache(maxsize=None)
def _geometric_by_inversion_is_numpys() -> bool:
    """Whether this numpy's ``geometric`` is ceil(-E / log1p(-p)) and consumes the stream as
    ``standard_exponential`` does (numpy 1.x drew it from a uniform instead)."""
    for p in (1e-4, 0.003, 0.03, 0.1, 0.3):
        numpys, ours = np.random.default_rng(2024), np.random.default_rng(2024)
        expected = numpys.geometric(p, 20_000), numpys.random()
        inverted = np.ceil(-ours.standard_exponential(20_000) / math.log1p(-p)).astype(np.int64), ours.random()
        if not (np.array_equal(expected[0], inverted[0]) and expected[1] == inverted[1]):
            return False
    return True


class NetworkTrace(NamedTuple):
    """What a simulation records, every tensor ``[T, B, N]``, one row per step after the update."""

    spikes: torch.Tensor  # z', 0/1, carries no gradient
    rho: torch.Tensor  # refractory counter rho', 0 .. rho_reset
    refractory: torch.Tensor  # Theta(rho'), 0/1 with a surrogate gradient
    voltages: torch.Tensor  # v'
    final_state: LIFRefracState  # state after the last step, each field [B, N]; continues a run


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


class RefractoryLIFNetwork(torch.nn.Module):
    """N recurrently connected refractory LIF neurons driven by H input spike trains.

    ``input_weights`` is ``[N, H]`` and ``recurrent_weights`` ``[N, N]`` with a zero diagonal (no
    autapses), initialised and named as in Norse's ``LIFRefracRecurrentCell``, whose state-dict keys
    end in ``input_weights`` and ``recurrent_weights``.

    ``backend="fast"`` runs the fused kernel of :mod:`workshop_utils.fast_lif`, which computes the same
    numbers as ``backend="norse"``, Norse's cell called once per time step.
    """

    def __init__(
        self,
        input_features: int,
        neurons: int,
        parameters: Optional[LIFRefracParameters] = None,
        backend: str = "fast",
        v_init: float = 0.9,
        dt: float = 1e-3,
    ):
        super().__init__()
        self.input_features = require_positive_int("H (input features)", input_features)
        self.neurons = require_positive_int("N (neurons)", neurons)
        self.backend = require_choice("backend", backend, BACKENDS)
        self.p = parameters if parameters is not None else notebook_parameters()
        require_choice("method", self.p.lif.method, SURROGATES)
        self.v_init = float(v_init)
        self.dt = require_positive_float("dt", dt)
        self.cell = LIFRefracRecurrentCell(input_features, neurons, p=self.p, dt=dt, autapses=False)

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

        Every recorded field of the result is ``[T, B, N]``; ``final_state`` continues the run.
        """
        require_shape("input_spikes", input_spikes, ("T", "B", self.input_features))
        if input_spikes.shape[0] < 1 or input_spikes.shape[1] < 1:
            raise ValueError(f"input_spikes must have T >= 1 and B >= 1, got shape {list(input_spikes.shape)}")
        if state is None:
            state = self.initial_state(input_spikes.shape[1], input_spikes.device)
        if self.backend == "fast":
            from .fast_lif import lif_refrac_fast

            spikes, rho, refractory, voltages, final_state = lif_refrac_fast(
                input_spikes, self.input_weights, self.recurrent_weights, self.p, self.dt, state
            )
        else:
            spikes, rho, refractory, voltages, final_state = step_loop(self.cell, input_spikes, state, self.p)
        return NetworkTrace(spikes, rho, refractory, voltages, final_state)

    def forward(self, input_spikes: torch.Tensor):
        """``[T, B, H]`` input spikes -> (refractory states, voltages), both ``[T, B, N]``."""
        trace = self.trace(input_spikes)
        return trace.refractory, trace.voltages
