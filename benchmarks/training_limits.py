"""Which configurations cannot train: the largest |gradient| of the first epochs from fresh weights.

    python benchmarks/training_limits.py alpha   # "tanh" and "heavi_erfc" over alpha, T = 1000 and 4000
    python benchmarks/training_limits.py super   # Norse's "super" surrogate over T
    python benchmarks/training_limits.py drive   # the input's drive, 0.1 x rate x H, for H = 32, 256, 1024

The recipe's network (N = 32, H = 1024, B = 32, k = 3, Adam 2e-3, a uniform target), seeds 0, 1, 2,
over three epochs (alpha), two (drive) or one (super); "nan" marks a NaN or infinite loss or gradient. The bounds that ``ExperimentConfig`` enforces
(``MIN_TRAINING_ALPHA``, ``MIN_INPUT_DRIVE``, no ``"super"``) were chosen from this output, with a
margin; ``workshop_utils/training.py`` quotes the numbers.
"""

import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import workshop_utils as wu  # noqa: E402
from workshop_utils.distribution import joint_distribution, kl_loss  # noqa: E402


def largest_gradient(method, alpha, rate, T, seed, epochs=2, N=32, H=1024, B=32, k=3) -> float:
    """max |gradient| over ``epochs`` training steps (NaN if any loss or gradient is not finite)."""
    model = wu.RefractoryLIFNetwork(H, N, wu.notebook_parameters(method, alpha),
                                    generator=torch.Generator().manual_seed(seed))
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    noise = torch.Generator().manual_seed(seed + 100)
    p_target = torch.full((B, 2**k), 1 / 2**k)
    largest = 0.0
    for _ in range(epochs):
        optimizer.zero_grad()
        refractory, _ = model(wu.poisson_input(rate, T, B, H, noise))
        loss = kl_loss(joint_distribution(refractory[:, :, :k]), p_target)
        loss.backward()
        gradient = max(parameter.grad.abs().max().item() for parameter in model.parameters())
        if not (math.isfinite(gradient) and math.isfinite(loss.item())):
            return math.nan
        largest = max(largest, gradient)
        optimizer.step()
    return largest


def row(label, values) -> None:
    print(label, " ".join(f"{value:.3g}" for value in values), flush=True)


def main(what: str) -> None:
    seeds = range(3)
    if what == "alpha":
        for method in ("tanh", "heavi_erfc"):
            for T in (1000, 4000):
                for alpha in (1, 3, 5, 10, 15, 20, 30, 50, 100, 300, 1000):
                    row(f"{method} T {T} alpha {alpha}",
                        [largest_gradient(method, alpha, 0.3, T, s, epochs=3) for s in seeds])
    elif what == "super":
        for T in (25, 50, 100, 200, 400, 1000):
            row(f"super T {T}", [largest_gradient("super", 100.0, 0.3, T, s, epochs=1) for s in seeds])
    elif what == "drive":
        for H in (32, 256, 1024):
            for T in (1000, 4000):
                for drive in (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0):
                    rate = drive / (0.1 * H)
                    if rate <= 1:
                        row(f"H {H} T {T} rate {rate:.3g} drive {drive}",
                            [largest_gradient("tanh", 100.0, rate, T, s, H=H) for s in seeds])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "")
