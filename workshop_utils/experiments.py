"""Sweeps for the exercises: train a configuration over several seeds and measure its real fidelity."""

import hashlib
import sys
from concurrent.futures import Executor, as_completed
from contextlib import ExitStack
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

import numpy as np
import torch

from .checks import require_non_negative_int, require_positive_int
from .evaluation import evaluate_fidelity
from .paths import file_lock
from .row_files import read_row_file, remove_leftovers, row_path, run_description, run_key, write_row_file
from .progress import progress_bar
from .training import ExperimentConfig, train

LONG_RUN_SETTINGS = ("burn_in", "chunk", "group")


def evaluation_settings(**settings) -> Dict:
    """``train_and_evaluate``'s evaluation settings (steps, chains, noise_chains and the long-run
    settings burn_in, chunk, group), checked and normalised, so that a wrong one stops a run or a
    sweep before anything trains; raises a ``ValueError`` naming it."""
    unknown = sorted(set(settings) - {"steps", "chains", "noise_chains", *LONG_RUN_SETTINGS})
    if unknown:
        raise ValueError(f"train_and_evaluate takes steps, chains, noise_chains and the long-run settings "
                         f"{LONG_RUN_SETTINGS}, got {unknown}")
    checks = dict(steps=require_positive_int, chains=require_positive_int, noise_chains=require_non_negative_int,
                  burn_in=require_non_negative_int, chunk=require_positive_int, group=require_positive_int)
    return {name: value if value is None and name == "group" else checks[name](name, value)
            for name, value in settings.items()}


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
    fraction of time the N neurons spent refractory in the last epoch, the training time, and
    ``weights_sha256``, a digest of the trained weights (equal digests: the same network, bit for bit).

    ``long_run`` (burn_in, chunk, group) goes to :func:`~workshop_utils.evaluation.long_run_distribution`."""
    settings = evaluation_settings(steps=steps, chains=chains, noise_chains=noise_chains, **long_run)
    steps, chains, noise_chains = settings.pop("steps"), settings.pop("chains"), settings.pop("noise_chains")
    long_run = settings
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
        "weights_sha256": weights_digest(result.model),
    }


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 of a model's parameters and buffers (names, dtypes, shapes and bytes), as hex."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{tensor.dtype}:{list(tensor.shape)}".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def sweep(
    configs: Iterable[ExperimentConfig],
    progress: bool = True,
    executor: Optional[Executor] = None,
    results_dir=None,
    threads: Optional[int] = None,
    **evaluation,
) -> List[Dict]:
    """:func:`train_and_evaluate` ``(config, **evaluation)`` for each configuration; one row each, in
    the order of ``configs`` (a configuration given twice is run once).

    - ``executor``: None runs the configurations here, one after the other. Any
      :class:`concurrent.futures.Executor` gets one task per configuration: a Dask client's
      ``get_executor()`` (a ``LocalCluster`` or a cluster; see ``python -m workshop_utils.sweep``) or a
      ``ProcessPoolExecutor`` with ``mp_context=multiprocessing.get_context("spawn")`` (``fork`` can hang
      once torch has used OpenMP). Each task seeds its own training from its configuration, so a row
      does not depend on the worker that ran it nor on what ran before it there. Tasks must not share
      a process concurrently: one thread per Dask worker (``threads_per_worker=1``).
    - ``results_dir``: each row is written, as soon as it is done, to its own file there
      (:mod:`~workshop_utils.row_files`); configurations whose file exists are read back instead of run,
      and a file that cannot be read raises a ``ValueError`` naming it before anything runs.
    - ``threads``: torch's thread count inside each task (restored afterwards); None leaves the
      process's own. Choose workers x threads <= cores.
    - ``progress``: a progress bar of finished configurations.

    If tasks fail, the others still run (and are written); then a ``RuntimeError`` names the failed
    configurations, raised from the first error.
    """
    if isinstance(configs, (str, bytes, ExperimentConfig)) or not hasattr(configs, "__iter__"):
        raise ValueError(f"configs must be an iterable of ExperimentConfig objects, got {type(configs).__name__}")
    if not isinstance(progress, (bool, np.bool_)):
        raise ValueError(f"progress must be True or False, got {progress!r}")
    configs = list(configs)
    for index, config in enumerate(configs):
        if not isinstance(config, ExperimentConfig):
            raise ValueError(f"configs must hold ExperimentConfig objects, got {type(config).__name__} at index {index}")
    if threads is not None:
        threads = require_positive_int("threads", threads)
    evaluation = {**evaluation,
                  **evaluation_settings(**{name: value for name, value in evaluation.items() if name != "p_target"})}
    descriptions = [run_description(config, evaluation) for config in configs]
    keys = [run_key(description) for description in descriptions]
    runs = {key: (config, description) for key, config, description in zip(keys, configs, descriptions)}
    directory = None if results_dir is None else Path(results_dir)
    if directory is None:
        return _sweep(runs, keys, {}, {}, None, evaluation, threads, executor, progress)
    directory.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        try:  # one sweep per directory: a second one would train every configuration again
            stack.enter_context(file_lock(directory / ".sweep.lock", wait=False))
        except BlockingIOError:
            raise ValueError(f"results_dir {directory} is in use by another sweep (one sweep per directory at "
                             "a time): wait for it to finish, or give another directory") from None
        paths = {key: row_path(directory, config, key) for key, (config, _) in runs.items()}
        rows = _rows_on_disk(directory, runs, paths)
        return _sweep(runs, keys, rows, paths, directory, evaluation, threads, executor, progress)


def _sweep(runs, keys, rows, paths, directory, evaluation, threads, executor, progress) -> List[Dict]:
    """The rest of :func:`sweep`: run what is not in ``rows``, write each row, return all in order."""
    todo = {key: config for key, (config, _) in runs.items() if key not in rows}
    failures = {}
    with progress_bar(None, total=len(todo), desc="sweep", disable=not progress, mininterval=1.0) as bar:
        for key, row, error in _run_tasks(todo, evaluation, threads, executor):
            if error is not None:
                failures[key] = error
            else:
                rows[key] = row
                if directory is not None:
                    write_row_file(paths[key], runs[key][1], key, row)
            bar.update()
    if failures:
        listed = [f"{todo[key]}: {error!r}" for key, error in failures.items()]
        listed = "; ".join(listed[:5] + (["..."] if len(listed) > 5 else []))
        kept = f" The rows of the others are in {directory}." if directory is not None else ""
        raise RuntimeError(f"{len(failures)} of {len(todo)} configurations failed: {listed}.{kept}") from next(
            iter(failures.values())
        )
    return [dict(rows[key]) for key in keys]


def _rows_on_disk(directory: Path, runs: Dict, paths: Dict) -> Dict:
    """The rows already in ``directory``, by key; says how many it skips."""
    removed = remove_leftovers(directory)
    rows, unreadable = {}, []
    for key, (_, description) in runs.items():
        if paths[key].exists():
            try:
                rows[key] = read_row_file(paths[key], description, key)
            except ValueError as error:
                unreadable.append(str(error))
    if unreadable:
        raise ValueError(
            f"{len(unreadable)} row files in {directory} cannot be used; move or delete them to run their "
            "configurations again:\n" + "\n".join(unreadable)
        )
    if rows or removed:
        print(f"sweep: {len(rows)} of {len(runs)} configurations already done in {directory}, skipped"
              + (f"; {removed} unfinished temporary files removed" if removed else ""), file=sys.stderr)
    return rows


def _run_task(config: ExperimentConfig, evaluation: Dict, threads: Optional[int]) -> Dict:
    """One configuration's row, in whatever process runs it (module-level, so that it pickles).
    ``train`` and the evaluation seed every random number they draw from ``config`` alone, at the start
    of the task, so nothing that ran before in the process changes the row."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return train_and_evaluate(config, **evaluation)
    finally:
        if threads is not None:
            torch.set_num_threads(previous)


def _run_tasks(todo: Dict, evaluation: Dict, threads: Optional[int], executor: Optional[Executor]) -> Iterator:
    """``(key, row, None)`` or ``(key, None, error)`` for each configuration, as each finishes."""
    if executor is None:
        for key, config in todo.items():
            try:
                yield key, _run_task(config, evaluation, threads), None
            except Exception as error:
                yield key, None, error
        return
    futures = {executor.submit(_run_task, config, evaluation, threads): key for key, config in todo.items()}
    try:
        for future in as_completed(futures):
            error = future.exception()
            yield futures[future], (future.result() if error is None else None), error
    finally:  # interrupted (Ctrl-C) or done: nothing that has not started yet starts
        for future in futures:
            future.cancel()


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
