"""Encoding noise as spikes: independent Poisson (Bernoulli per 1 ms step) input trains ``[T, B, H]``."""

import functools
import math
from typing import Optional

import numpy as np
import torch
from norse.torch.functional.encode import poisson_encode

from .checks import require_device, require_generator, require_memory, require_positive_int, require_probability


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
    system zeroing) T x B x H fresh floats every epoch. ``device`` is checked and normalised as by
    :func:`~workshop_utils.checks.require_device` (``"cuda"`` is ``"cuda:0"``, where ``out`` lives).
    """
    rate = require_probability("rate", rate)
    timesteps = require_positive_int("T (timesteps)", timesteps)
    batch_size = require_positive_int("B (batch size)", batch_size)
    input_features = require_positive_int("H (input features)", input_features)
    device = require_device(device)
    generator = require_generator("generator", generator, device)
    shape = (timesteps, batch_size, input_features)
    if out is not None and (not isinstance(out, torch.Tensor) or tuple(out.shape) != shape or out.dtype != torch.float32
                            or not out.is_contiguous() or out.requires_grad or str(out.device) != device):
        got = f"{out.dtype} {list(out.shape)} on {out.device}" if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"out must be a contiguous float32 tensor of shape {list(shape)} on {device}, got {got}")
    if out is None:
        require_memory(f"poisson_input of [T, B, H] = {list(shape)}", 4 * math.prod(shape), device)
    if device != "cpu":
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
