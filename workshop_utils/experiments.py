"""Sweeps for the exercises: train a configuration over several seeds and measure its real fidelity."""

from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np
import torch
from tqdm.auto import tqdm

from .checks import require_non_negative_int, require_positive_int
from .evaluation import evaluate_fidelity
from .training import ExperimentConfig, train

LONG_RUN_SETTINGS = ("burn_in", "chunk", "group")


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
    unknown = sorted(set(long_run) - set(LONG_RUN_SETTINGS))
    if unknown:
        raise ValueError(f"train_and_evaluate takes the long-run settings {LONG_RUN_SETTINGS}, got {unknown}")
    steps, chains = require_positive_int("steps", steps), require_positive_int("chains", chains)
    noise_chains = require_non_negative_int("noise_chains", noise_chains)
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
    if isinstance(configs, (str, bytes, ExperimentConfig)) or not hasattr(configs, "__iter__"):
        raise ValueError(f"configs must be an iterable of ExperimentConfig objects, got {type(configs).__name__}")
    if not isinstance(progress, (bool, np.bool_)):
        raise ValueError(f"progress must be True or False, got {progress!r}")
    configs = list(configs)
    for index, config in enumerate(configs):
        if not isinstance(config, ExperimentConfig):
            raise ValueError(f"configs must hold ExperimentConfig objects, got {type(config).__name__} at index {index}")
    return [train_and_evaluate(config, **evaluation) for config in tqdm(configs, disable=not progress, mininterval=1.0)]


def seeds(config: ExperimentConfig, count: int = 3) -> List[ExperimentConfig]:
    """``config`` with seeds 0 .. count - 1."""
    if not isinstance(config, ExperimentConfig):
        raise ValueError(f"config must be an ExperimentConfig, got {type(config).__name__}")
    return [config.replace(seed=seed) for seed in range(require_positive_int("count", count))]


def mean_std(rows: List[Dict], metric: str, ddof: int = 1) -> Tuple[float, float]:
    """Mean and standard deviation of ``row[metric]`` over the rows (e.g. seeds); the sample standard
    deviation (``ddof=1``) by default, 0 for a single row. NaN (a metric not measured, such as a skipped
    noise floor) gives NaN."""
    column = _column(rows, metric)
    try:
        values = np.array(column, dtype=float)
    except (TypeError, ValueError) as error:
        raise ValueError(f"the rows' {metric!r} must be numbers ({error})") from None
    if values.ndim != 1:
        raise ValueError(f"the rows' {metric!r} must be numbers, got {column!r:.80}")
    ddof = require_non_negative_int("ddof", ddof)
    return float(values.mean()), float(values.std(ddof=ddof)) if len(values) > ddof else 0.0


def _column(rows: List[Dict], key: str) -> List:
    """``[row[key] for row in rows]``, checked: a non-empty list of dicts that all hold ``key``."""
    if not isinstance(rows, (list, tuple)) or not rows or not all(isinstance(row, dict) for row in rows):
        raise ValueError(f"rows must be a non-empty list of dicts (rows of train_and_evaluate), got {rows!r:.80}")
    missing = [index for index, row in enumerate(rows) if key not in row]
    if missing:
        raise ValueError(f"{key!r} is missing from rows {missing[:5]}; the rows hold {sorted(rows[missing[0]])}")
    return [row[key] for row in rows]


def summarize(rows: List[Dict], by: str, metrics=("long_run_kl", "final_loss", "noise_floor", "seconds"),
              ddof: int = 1) -> Dict:
    """:func:`mean_std` of each metric over the rows sharing ``row[by]``, in order of first appearance:
    ``{value: {metric: (mean, std)}}``."""
    _column(rows, by)
    for metric in metrics:
        _column(rows, metric)
    groups: Dict = {}
    for row in rows:
        groups.setdefault(row[by], []).append(row)
    return {value: {metric: mean_std(group, metric, ddof) for metric in metrics} for value, group in groups.items()}


def format_summary(summary: Dict, by: str) -> str:
    """A Markdown table of :func:`summarize`'s result: mean ± std of each metric."""
    if not isinstance(summary, dict) or not summary:
        raise ValueError(f"summary must be the non-empty dict that summarize returns, got {summary!r:.80}")
    metrics = list(next(iter(summary.values())))
    lines = [f"| {by} | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for value, numbers in summary.items():
        cells = [f"{mean:.4g} ± {std:.2g}" for mean, std in numbers.values()]
        lines.append(f"| {value} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
