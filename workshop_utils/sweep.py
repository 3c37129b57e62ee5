"""Run a grid of training configurations from a YAML file: here, on a Dask ``LocalCluster`` or on a cluster.

``python -m workshop_utils.sweep GRID.yaml [--workers N | --scheduler ADDRESS]`` (``make sweep
GRID=...``). Every finished configuration is written to ``results/sweeps/<name>/`` at once, so the
same command resumes an interrupted sweep. A grid file (``sweeps/*.yaml`` are examples)::

    name: network_size          # results/sweeps/<name>/; default: the file's name without .yaml
    config:                     # ExperimentConfig fields shared by every configuration
      epochs: 80
    grid:                       # field: [values]; every combination (a list of such mappings: their union)
      neurons: [8, 16, 32]
    seeds: 3                    # seeds 0, 1, 2; or a list [0, 5]; default: config's seed
    target: {}                  # optional: every run trains on the target of config + these fields;
                                # without it each configuration trains on its own (train's default)
    evaluation:                 # train_and_evaluate's settings
      steps: 10000
      noise_chains: 0
"""

import argparse
import dataclasses
import itertools
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional

import yaml

from .experiments import evaluation_settings, format_summary, summarize, sweep
from .paths import workshop_root
from .training import ExperimentConfig, target_for

SECTIONS = ("name", "config", "grid", "seeds", "target", "evaluation")
MAX_SEEDS = 100_000  # a seed count beyond this is a typo: each seed is a whole training
EVALUATION = ("steps", "chains", "noise_chains", "burn_in", "chunk", "group")
FIELDS = tuple(field.name for field in dataclasses.fields(ExperimentConfig))

THREADS = """\
Threads: the fast path parallelises each training over its batch with torch's threads, so a
machine runs workers x threads <= cores. --workers N starts N worker processes with one task at a
time each (threads_per_worker=1) and cores // N torch threads per task. A cluster's workers are
started with `dask worker ADDRESS --nworkers W --nthreads 1`; Dask starts them with OMP_NUM_THREADS=1,
so torch uses one thread per task there unless --threads T says otherwise (choose W x T <= cores).
Without --workers or --scheduler the grid runs here, at torch's thread count.

Workers are new processes (spawn: forking after torch has used OpenMP can hang). A worker that dies
loses only its task, which Dask runs again elsewhere (up to distributed.scheduler.allowed-failures
times).
"""


@dataclass(frozen=True)
class Grid:
    """A grid file, read and checked: the configurations to run and how to evaluate them."""

    name: str
    configs: List[ExperimentConfig]
    labels: List[str]  # the grid fields' values of each configuration, e.g. "neurons=8 input_features=64"
    evaluation: Dict  # steps, chains, noise_chains, burn_in, chunk, group
    target: Optional[ExperimentConfig]  # every run trains on this configuration's target, or None: its own

    def p_target(self):
        """The shared target ``[2**k]`` (computed here, may take seconds), or None."""
        return None if self.target is None else target_for(self.target)[0]


def read_grid(path) -> Grid:
    """:func:`parse_grid` of a YAML file; the file's name (without ``.yaml``) is the default name."""
    path = Path(path)
    try:
        spec = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"{path}: cannot be read as YAML ({error})") from None
    try:
        return parse_grid(spec, default_name=path.stem)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def parse_grid(spec: Mapping, default_name: str = "sweep") -> Grid:
    """The configurations of a grid (the mapping a grid file holds; see the module's docstring), in
    order: each grid mapping's combinations in the order of its fields, seeds innermost; a
    configuration that two grid mappings share comes once. A ``ValueError`` names what is wrong."""
    if not isinstance(spec, Mapping):
        raise ValueError(f"a grid file holds a mapping with the sections {SECTIONS}, got {type(spec).__name__}")
    unknown = [name for name in spec if name not in SECTIONS]
    if unknown:
        raise ValueError(f"unknown section {unknown[0]!r}; the sections are {SECTIONS}")
    name = str(spec.get("name") or default_name)
    if not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise ValueError(f"name must be letters, digits, '-', '_' or '.', got {name!r}")
    fixed = _fields("config", spec.get("config") or {})
    grids = spec.get("grid") or [{}]
    grids = [grids] if isinstance(grids, Mapping) else grids
    if not isinstance(grids, list):
        raise ValueError(f"grid must be a mapping of field: [values] or a list of such mappings, got {grids!r}")
    grids = [_fields("grid", grid, lists=True) for grid in grids]
    varied = list(dict.fromkeys(field for grid in grids for field in grid))
    seeds = _seeds(spec.get("seeds"), fixed, varied)

    configs: Dict[ExperimentConfig, str] = {}
    for grid in grids:
        for values in itertools.product(*grid.values()):
            combination = dict(zip(grid, values))
            for seed in seeds:
                fields = {**fixed, **combination, **({} if seed is None else {"seed": seed})}
                try:
                    config = ExperimentConfig(**fields)
                except ValueError as error:
                    raise ValueError(f"configuration {combination}: {error}") from None
                configs.setdefault(config, " ".join(f"{field}={getattr(config, field)}" for field in varied) or "all")

    target = spec.get("target")
    if target is not None:
        try:
            target = ExperimentConfig(**{**fixed, **_fields("target", target)})
        except ValueError as error:
            raise ValueError(f"target: {error}") from None
        other_k = sorted({config.k for config in configs} - {target.k})
        if other_k:
            raise ValueError(f"target: its k = {target.k}, but the grid also has k = {other_k}; one target needs one k")
    evaluation = spec.get("evaluation") or {}
    if not isinstance(evaluation, Mapping) or any(setting not in EVALUATION for setting in evaluation):
        raise ValueError(f"evaluation must be a mapping with settings among {EVALUATION}, got {evaluation!r}")
    try:
        evaluation = evaluation_settings(**evaluation)
    except ValueError as error:
        raise ValueError(f"evaluation: {error}") from None
    return Grid(name, list(configs), list(configs.values()), dict(evaluation), target)


def _fields(section: str, values, lists: bool = False) -> Dict:
    if not isinstance(values, Mapping):
        raise ValueError(f"{section} must be a mapping of ExperimentConfig fields, got {values!r}")
    for field, value in values.items():
        if field not in FIELDS:
            raise ValueError(f"{section}: unknown field {field!r}; ExperimentConfig's fields are {FIELDS}")
        if field == "seed" and section == "grid":
            raise ValueError("grid: seed is set by the section seeds (a count or a list)")
        if lists and (not isinstance(value, list) or not value):
            raise ValueError(f"grid: {field} must be a non-empty list of values, got {value!r}")
    return dict(values)


def _seeds(seeds, fixed: Dict, varied: List[str]) -> list:
    if seeds is None:
        return [None]  # the seed of `config` (or the default)
    if "seed" in fixed:
        raise ValueError("config: seed and the section seeds exclude each other; give seeds only")
    if isinstance(seeds, int) and not isinstance(seeds, bool) and 1 <= seeds <= MAX_SEEDS:
        return list(range(seeds))
    if isinstance(seeds, list) and seeds and all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        return list(dict.fromkeys(seeds))
    raise ValueError(f"seeds must be a count from 1 to {MAX_SEEDS:,} or a non-empty list of integer seeds, got {seeds!r}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m workshop_utils.sweep",
        description="Train and evaluate every configuration of a grid file; print mean ± std over seeds.",
        epilog=THREADS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("grid", type=Path, help="a YAML grid file, e.g. sweeps/quick.yaml")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, metavar="N", help="start a Dask LocalCluster of N worker processes")
    where.add_argument("--scheduler", metavar="ADDRESS", help="run on the Dask cluster at ADDRESS (tcp://host:8786)")
    parser.add_argument("--threads", type=int, metavar="T", help="torch threads per task (see below)")
    parser.add_argument("--results", type=Path, metavar="DIR", help="row files (default: results/sweeps/<name>)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    for option in ("workers", "threads"):
        if getattr(args, option) is not None and getattr(args, option) < 1:
            parser.error(f"--{option} must be at least 1, got {getattr(args, option)}")
    try:
        grid = read_grid(args.grid)
    except ValueError as error:
        parser.error(str(error))
    results_dir = args.results or workshop_root() / "results" / "sweeps" / grid.name
    print(f"{grid.name}: {len(grid.configs)} configurations; rows in {results_dir}", file=sys.stderr)

    with _Workers(args) as (executor, threads):
        try:
            rows = sweep(grid.configs, progress=not args.no_progress, executor=executor, results_dir=results_dir,
                         threads=threads, p_target=grid.p_target(), **grid.evaluation)
        except KeyboardInterrupt:
            print(f"interrupted: the finished rows are in {results_dir}; the same command resumes", file=sys.stderr)
            return 130
        except (RuntimeError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    labelled = [{"configuration": label, **row} for label, row in zip(grid.labels, rows)]
    metrics = [metric for metric in ("long_run_kl", "final_loss", "noise_floor", "seconds")
               if not all(math.isnan(row[metric]) for row in rows)]  # noise_chains: 0 gives no noise floor
    print(format_summary(summarize(labelled, by="configuration", metrics=metrics), by="configuration"))
    return 0


class _Workers:
    """``with _Workers(args) as (executor, torch threads per task)``: the command line's choice of
    where tasks run (None: here); closes the client and cluster it started."""

    def __init__(self, args):
        self.args, self.client, self.cluster = args, None, None

    def __enter__(self):
        args = self.args
        if args.workers is None and args.scheduler is None:
            return None, args.threads
        try:
            from dask.system import CPU_COUNT
            from distributed import Client, LocalCluster
        except ImportError:
            raise SystemExit("--workers and --scheduler need Dask: pip install 'workshop-utils[sweep]'") from None
        if args.scheduler is not None:
            try:
                self.client = Client(args.scheduler, timeout="30s")
            except OSError as error:  # refused, unknown host, timed out
                raise SystemExit(f"error: cannot reach the Dask scheduler at {args.scheduler}: {error}") from None
            return self.client.get_executor(), args.threads
        threads = args.threads or max(1, CPU_COUNT // args.workers)
        if args.workers * threads > CPU_COUNT:
            print(f"warning: {args.workers} workers x {threads} threads > {CPU_COUNT} cores: they will compete",
                  file=sys.stderr)
        self.cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True)
        self.client = Client(self.cluster)
        return self.client.get_executor(), threads

    def __exit__(self, *exc):
        for resource in (self.client, self.cluster):
            if resource is not None:
                resource.close()
        return False


if __name__ == "__main__":
    sys.exit(main())
