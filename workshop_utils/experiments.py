"""Sweeps for the exercises: train a configuration over several seeds and measure its real fidelity."""

from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np
import torch

from .evaluation import evaluate_fidelity
from .progress import progress_bar
from .training import ExperimentConfig, train


def train_and_evaluate(
    config: ExperimentConfig,
    p_target: Optional[torch.Tensor] = None,
    steps: int = 20_000,
    chains: int = 32,
    noise_chains: int = 256,
    **long_run,
) -> Dict:
    """Train one configuration and return one row of numbers: the final training loss, the long-run
    KL(p_target || p_long_run), the noise floor at the training T (nan with ``noise_chains=0``), the
    fraction of time the N neurons spent refractory in the last epoch, and the training time.

    ``long_run`` (burn_in, chunk, group) goes to :func:`~workshop_utils.evaluation.long_run_distribution`."""
    result = train(config, p_target, progress=False)
    fidelity = evaluate_fidelity(
        result.model, result.p_target, config.k, config.timesteps_at(config.epochs - 1), config.rate,
        steps, chains, noise_chains, seed=config.seed + 10_000, **long_run,
    )
    return {
        **{name: getattr(config, name) for name in ("neurons", "input_features", "timesteps", "epochs", "rate",
                                                     "learning_rate", "optimizer", "k", "seed")},
        "final_loss": result.losses[-1],
        "long_run_kl": fidelity.long_run_kl,
        "noise_floor": fidelity.noise_floor,
        "refractory_fraction": result.refractory.mean().item(),
        "seconds": result.seconds,
        "losses": result.losses,
    }


def sweep(configs: Iterable[ExperimentConfig], progress: bool = True, **evaluation) -> List[Dict]:
    """:func:`train_and_evaluate` for each configuration, with a progress bar; one row each."""
    configs = list(configs)
    return [train_and_evaluate(config, **evaluation) for config in progress_bar(configs, disable=not progress, mininterval=1.0)]


def seeds(config: ExperimentConfig, count: int = 3) -> List[ExperimentConfig]:
    """``config`` with seeds 0 .. count - 1."""
    return [config.replace(seed=seed) for seed in range(count)]


def mean_std(rows: List[Dict], metric: str, ddof: int = 1) -> Tuple[float, float]:
    """Mean and standard deviation of ``row[metric]`` over the rows (e.g. seeds); the sample standard
    deviation (``ddof=1``) by default, 0 for a single row."""
    values = np.array([row[metric] for row in rows], dtype=float)
    return float(values.mean()), float(values.std(ddof=ddof)) if len(values) > ddof else 0.0


def summarize(rows: List[Dict], by: str, metrics=("long_run_kl", "final_loss", "noise_floor", "seconds"),
              ddof: int = 1) -> Dict:
    """:func:`mean_std` of each metric over the rows sharing ``row[by]``, in order of first appearance:
    ``{value: {metric: (mean, std)}}``."""
    groups: Dict = {}
    for row in rows:
        groups.setdefault(row[by], []).append(row)
    return {value: {metric: mean_std(group, metric, ddof) for metric in metrics} for value, group in groups.items()}


def format_summary(summary: Dict, by: str) -> str:
    """A Markdown table of :func:`summarize`'s result: mean ± std of each metric."""
    metrics = list(next(iter(summary.values())))
    lines = [f"| {by} | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for value, numbers in summary.items():
        cells = [f"{mean:.4g} ± {std:.2g}" for mean, std in numbers.values()]
        lines.append(f"| {value} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
