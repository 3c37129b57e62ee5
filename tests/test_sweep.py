"""Sweeps: serial, on a Dask LocalCluster and resumed after a kill, with the same rows bit for bit.

Rows are compared as JSON text without the wall time ``seconds``: Python floats print exactly
(shortest repr that reads back the same), so equal text means equal bits; NaN prints as NaN; a row's
``weights_sha256`` makes equal rows mean equal trained networks. The serial rows run at the test
process's torch thread count and the Dask and process-pool workers at 1 thread each, so equality
needs a training that does not depend on torch's thread count; on any one CPU it does not depend on
the CPU's instruction set either, since both sides run on the same machine.
"""

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import Executor
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import yaml

import workshop_utils.experiments as experiments
from workshop_utils import ExperimentConfig
from workshop_utils.experiments import sweep
from workshop_utils.row_files import run_description, run_key
from workshop_utils.sweep import main, parse_grid, read_grid

distributed = pytest.importorskip("distributed")

ROOT = Path(__file__).resolve().parents[1]
# Large enough that the trained weights depend on the order in which a batch's gradients are summed
# (16 chains: the fast path's gradient groups hold one chain each), so that a row's weights_sha256
# would show any dependence on the worker or its thread count. Given a target (no per-configuration
# target run), a task takes about 0.1 s.
BASE = ExperimentConfig(neurons=16, input_features=64, batch_size=16, timesteps=200, epochs=2, k=2)
CONFIGS = [BASE.replace(neurons=n, seed=s) for n in (8, 16) for s in (0, 1)]
EVALUATION = dict(p_target=torch.tensor([0.1, 0.2, 0.3, 0.4]), steps=500, chains=4, noise_chains=8)


def numbers(rows) -> str:
    return json.dumps([{name: value for name, value in row.items() if name != "seconds"} for row in rows])


def assert_same_rows(rows, expected):
    """Rows equal bit for bit apart from ``seconds``; else say which fields of which rows differ."""
    if numbers(rows) == numbers(expected):
        return
    differing = [
        f"row {index} (N={row['neurons']} seed={row['seed']}): "
        + ", ".join(name for name in row if name != "seconds" and json.dumps(row[name]) != json.dumps(other.get(name)))
        for index, (row, other) in enumerate(zip(rows, expected))
        if numbers([row]) != numbers([other])
    ]
    pytest.fail(f"rows differ from the serial rows ({torch.get_num_threads()} torch threads here): "
                + "; ".join(differing))


@contextmanager
def deadline(seconds: int):
    """Fail instead of hanging: a TimeoutError in the main thread after ``seconds``."""

    def expire(*_):
        raise TimeoutError(f"the test took longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def serial_rows():
    """At the test process's torch thread count (OMP_NUM_THREADS, or one per core)."""
    return sweep(CONFIGS, progress=False, **EVALUATION)


@pytest.fixture(scope="module")
def serial_rows_one_thread():
    """At one torch thread, as the workers run: for the tests of what is not the thread count."""
    return sweep(CONFIGS, progress=False, threads=1, **EVALUATION)


@pytest.fixture(scope="module")
def cluster():
    """Two worker processes (spawned, Dask's default), one task at a time each."""
    with deadline(120):
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
        client = distributed.Client(cluster)
    yield cluster, client
    client.close()
    cluster.close()


@pytest.fixture
def count_trainings(monkeypatch):
    """Count the trainings that run in this process (the serial path)."""
    calls = []
    real = experiments.train_and_evaluate

    def counted(config, **evaluation):
        calls.append(config)
        return real(config, **evaluation)

    monkeypatch.setattr(experiments, "train_and_evaluate", counted)
    return calls


def test_serial_rows_do_not_depend_on_what_ran_before(serial_rows):
    """Each task seeds itself: in reverse order, in the same process, every row is the same."""
    backwards = sweep(CONFIGS[::-1], progress=False, **EVALUATION)
    assert_same_rows(backwards[::-1], serial_rows)
    assert len({row["weights_sha256"] for row in serial_rows}) == len(CONFIGS)  # four different networks


def test_local_cluster_rows_equal_serial_rows_bit_for_bit(cluster, serial_rows, tmp_path):
    """Workers at 1 torch thread, the serial rows at this process's thread count: the same rows."""
    _, client = cluster
    with deadline(180):
        rows = sweep(CONFIGS, progress=False, executor=client.get_executor(), results_dir=tmp_path, threads=1,
                     **EVALUATION)
    # what was written is what was returned, and reads back bit for bit (the wall time too)
    assert len(list(tmp_path.glob("*.json"))) == len(CONFIGS)
    reread = sweep(CONFIGS, progress=False, results_dir=tmp_path, **EVALUATION)
    assert json.dumps(reread) == json.dumps(rows)
    assert_same_rows(rows, serial_rows)


def _record_and_kill_first(marker: str, attempts: str, function, *args):
    """Runs on a worker: log the attempt; the first attempt anywhere kills its own worker process."""
    with open(attempts, "a") as log:
        log.write(f"{os.getpid()}\n")
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return function(*args)
    os.kill(os.getpid(), signal.SIGKILL)


class KillFirstTask(Executor):
    """A Dask client's executor whose first task kills its worker while it runs."""

    def __init__(self, client, marker: Path, attempts: Path):
        self.inner, self.marker, self.attempts = client.get_executor(), str(marker), str(attempts)

    def submit(self, function, *args, **kwargs):
        return self.inner.submit(_record_and_kill_first, self.marker, self.attempts, function, *args, **kwargs)


def test_a_task_whose_worker_dies_runs_again(cluster, serial_rows_one_thread, tmp_path):
    _, client = cluster
    marker, attempts = tmp_path / "killed", tmp_path / "attempts"
    with deadline(180):
        rows = sweep(CONFIGS, progress=False, executor=KillFirstTask(client, marker, attempts),
                     results_dir=tmp_path / "rows", threads=1, **EVALUATION)
    assert marker.exists(), "no worker was killed"
    # four tasks, one of them twice: only the killed task ran again
    assert len(attempts.read_text().split()) == len(CONFIGS) + 1
    assert_same_rows(rows, serial_rows_one_thread)


TINY = ExperimentConfig(neurons=4, input_features=16, batch_size=4, timesteps=50, epochs=2, k=2)
LONGER = {**EVALUATION, "steps": 5000}  # a task takes about 0.1 s: the kill lands while the sweep runs
KILLED_SWEEP = """
import sys, torch
from workshop_utils import ExperimentConfig
from workshop_utils.experiments import sweep
configs = [{tiny}.replace(seed=seed) for seed in range(8)]
sweep(configs, progress=False, results_dir=sys.argv[1], p_target=torch.tensor({p_target}), steps={steps},
      chains={chains}, noise_chains={noise_chains})
""".format(tiny=repr(TINY), p_target=LONGER["p_target"].tolist(),
           **{name: value for name, value in LONGER.items() if name != "p_target"})


def test_a_killed_sweep_resumes_with_the_missing_configurations(tmp_path, count_trainings):
    """A sweep process killed (SIGKILL) once two row files exist; the restart runs only the rest, and
    its rows equal those of a sweep that was never interrupted."""
    script, rows_dir = tmp_path / "sweep.py", tmp_path / "rows"
    script.write_text(KILLED_SWEEP)
    process = subprocess.Popen([sys.executable, str(script), str(rows_dir)], stderr=subprocess.DEVNULL)
    try:
        with deadline(120):
            while len(list(rows_dir.glob("*.json"))) < 2 and process.poll() is None:
                time.sleep(0.01)
    finally:
        process.kill()
        process.wait()
    done = len(list(rows_dir.glob("*.json")))
    assert 2 <= done < 8, f"the kill should land while the sweep runs ({done} of 8 rows written)"

    configs = [TINY.replace(seed=seed) for seed in range(8)]
    with deadline(120):
        resumed = sweep(configs, progress=False, results_dir=rows_dir, **LONGER)
    assert len(count_trainings) == 8 - done
    assert [path.name for path in rows_dir.glob(".*")] == [".sweep.lock"], "no temporary file is left behind"
    assert_same_rows(resumed, sweep(configs, progress=False, **LONGER))


def test_a_second_sweep_into_the_same_directory_is_refused(tmp_path, count_trainings):
    """One sweep per directory: while another process's sweep holds the directory's lock (here: this
    test holds it), a sweep into it stops before training anything, saying so."""
    from workshop_utils.paths import file_lock

    with file_lock(tmp_path / ".sweep.lock"):
        with pytest.raises(ValueError, match="in use by another sweep"):
            sweep(CONFIGS[:2], progress=False, results_dir=tmp_path, **EVALUATION)
    assert count_trainings == [] and not list(tmp_path.glob("*.json"))
    assert len(sweep(CONFIGS[:1], progress=False, results_dir=tmp_path, **EVALUATION)) == 1  # free again


@pytest.mark.parametrize("setting", [{"burn_in": -5}, {"chunk": 0}, {"group": 0}, {"steps": 0}, {"noise_chains": -1}])
def test_a_bad_evaluation_setting_stops_the_sweep_before_any_training(setting, count_trainings):
    name = next(iter(setting))
    with pytest.raises(ValueError, match=f"^{name} must be"):
        sweep(CONFIGS[:2], progress=False, **{**EVALUATION, **setting})
    assert count_trainings == []


def test_an_unreadable_row_file_is_reported_and_kept(tmp_path, count_trainings):
    sweep(CONFIGS[:2], progress=False, results_dir=tmp_path, **EVALUATION)
    broken = sorted(tmp_path.glob("*.json"))[0]
    broken.write_text('{"key": "trunc')
    count_trainings.clear()
    with pytest.raises(ValueError, match=broken.name):
        sweep(CONFIGS[:2], progress=False, results_dir=tmp_path, **EVALUATION)
    assert count_trainings == [] and broken.read_text() == '{"key": "trunc'


def test_a_failed_configuration_does_not_stop_the_others(tmp_path, monkeypatch):
    real = experiments.train_and_evaluate

    def fails_for_seed_1(config, **evaluation):
        if config.seed == 1:
            raise FloatingPointError("non-finite gradient")
        return real(config, **evaluation)

    monkeypatch.setattr(experiments, "train_and_evaluate", fails_for_seed_1)
    with pytest.raises(RuntimeError, match="2 of 4 configurations failed.*seed=1") as raised:
        sweep(CONFIGS, progress=False, results_dir=tmp_path, **EVALUATION)
    assert isinstance(raised.value.__cause__, FloatingPointError)
    assert len(list(tmp_path.glob("*.json"))) == 2  # the two that worked are kept


def test_the_file_name_changes_with_any_setting():
    key = run_key(run_description(BASE, EVALUATION))
    assert key == run_key(run_description(BASE.replace(), {**EVALUATION, "p_target": [0.1, 0.2, 0.3, 0.4]}))
    changed = [
        run_description(BASE.replace(alpha=99.0), EVALUATION),
        run_description(BASE, {**EVALUATION, "steps": 501}),
        run_description(BASE, {**EVALUATION, "p_target": torch.tensor([0.4, 0.3, 0.2, 0.1])}),
        run_description(BASE, {name: value for name, value in EVALUATION.items() if name != "p_target"}),
    ]
    assert key not in {run_key(description) for description in changed}


GRID = """
name: tiny
config: {input_features: 16, batch_size: 4, timesteps: 50, epochs: 2, k: 2}
grid: {neurons: [4, 8]}
seeds: 2
target: {neurons: 4}
evaluation: {steps: 500, chains: 4, noise_chains: 0}
"""


def test_the_command_line_runs_a_grid_file_on_dask_and_resumes(cluster, tmp_path, capsys):
    """``--workers 2`` (a LocalCluster of its own) runs one seed; with two seeds, against a running
    cluster's address (``--scheduler``), it runs only the second seed's; without Dask, nothing."""
    local_cluster, _ = cluster
    grid = tmp_path / "tiny.yaml"
    grid.write_text(GRID.replace("seeds: 2", "seeds: 1"))
    arguments = [str(grid), "--results", str(tmp_path / "rows"), "--no-progress"]
    first = subprocess.run([sys.executable, "-m", "workshop_utils.sweep", *arguments, "--workers", "2"],
                           capture_output=True, text=True, timeout=240)
    assert first.returncode == 0, first.stderr
    assert len(list((tmp_path / "rows").glob("N*-H16-seed0-*.json"))) == 2 and "| neurons=8 |" in first.stdout

    grid.write_text(GRID)  # seeds: 2
    with deadline(180):
        assert main([*arguments, "--scheduler", local_cluster.scheduler_address]) == 0
    on_cluster = capsys.readouterr()
    assert "2 of 4 configurations already done" in on_cluster.err
    table = on_cluster.out.splitlines()
    assert table[0] == "| configuration | long_run_kl | final_loss | seconds |"  # no noise floor: noise_chains 0
    assert [line.split(" | ")[0] for line in table[2:]] == ["| neurons=4", "| neurons=8"]
    assert len(list((tmp_path / "rows").glob("*.json"))) == 4

    with deadline(60):
        assert main(arguments) == 0
    here = capsys.readouterr()
    assert "4 of 4 configurations already done" in here.err and here.out == on_cluster.out


@pytest.mark.parametrize("change, message", [
    ({"grid": {"neurons": 4}}, "grid: neurons must be a non-empty list"),
    ({"grid": {"neurons": []}}, "grid: neurons must be a non-empty list"),
    ({"grid": {"nerons": [4]}}, "grid: unknown field 'nerons'"),
    ({"grid": {"seed": [0, 1]}}, "grid: seed is set by the section seeds"),
    ({"grid": "neurons"}, "grid must be a mapping"),
    ({"config": {"batch": 4}}, "config: unknown field 'batch'"),
    ({"config": {"seed": 3}}, "config: seed and the section seeds exclude each other"),
    ({"grid": {"neurons": [4, 0]}}, "configuration {'neurons': 0}: .*neurons"),
    ({"grid": {"optimizer": ["adam", "lion"]}}, "configuration {'optimizer': 'lion'}: optimizer must be one of"),
    ({"seeds": 0}, "seeds must be a count from 1"),
    ({"seeds": "3"}, "seeds must be a count from 1"),
    ({"seeds": [0, True]}, "seeds must be a count from 1"),
    ({"seeds": 10**12}, "seeds must be a count from 1 to 100,000"),  # was a MemoryError after 370 MB
    ({"target": {"k": 3}}, "target: its k = 3, but the grid also has k = \\[2\\]"),
    ({"target": {"neuron": 4}}, "target: unknown field 'neuron'"),
    ({"evaluation": {"step": 10}}, "evaluation must be a mapping with settings among"),
    ({"evaluation": {"burn_in": -5}}, "evaluation: burn_in must be"),  # was found after every training
    ({"evaluation": {"chunk": 0}}, "evaluation: chunk must be"),
    ({"evaluation": {"group": 0}}, "evaluation: group must be"),
    ({"evaluation": {"steps": "abc"}}, "evaluation: steps must be"),
    ({"name": "../elsewhere"}, "name must be letters"),
    ({"epochs": 3}, "unknown section 'epochs'"),
])
def test_a_bad_grid_is_refused_naming_what_is_wrong(change, message):
    with pytest.raises(ValueError, match=message):
        parse_grid({**yaml.safe_load(GRID), **change})


def test_the_command_line_names_the_bad_field_of_a_grid_file(tmp_path, capsys):
    grid = tmp_path / "bad.yaml"
    grid.write_text(GRID.replace("neurons: [4, 8]", "neurons: [4, 8], epoch: [1]"))
    with pytest.raises(SystemExit) as exited:
        main([str(grid)])
    assert exited.value.code == 2 and "grid: unknown field 'epoch'" in capsys.readouterr().err


def test_grids_are_unions_of_products_in_order_with_seeds_innermost():
    grid = parse_grid({
        "config": {"neurons": 32, "input_features": 1024},
        "grid": [{"neurons": [8, 32]}, {"input_features": [64, 1024]}],
        "seeds": [2, 0],
    }, default_name="sizes")
    sizes = [(config.neurons, config.input_features, config.seed) for config in grid.configs]
    # (32, 1024) belongs to both one-dimensional grids and is run once
    assert sizes == [(8, 1024, 2), (8, 1024, 0), (32, 1024, 2), (32, 1024, 0), (32, 64, 2), (32, 64, 0)]
    assert grid.labels[0] == "neurons=8 input_features=1024" and grid.name == "sizes" and grid.target is None


@pytest.mark.parametrize("path", sorted((ROOT / "sweeps").glob("*.yaml")), ids=lambda path: path.name)
def test_the_example_grids_are_valid(path):
    grid = read_grid(path)
    assert grid.configs and grid.name == path.stem
    assert len(set(grid.configs)) == len(grid.configs)


def test_a_process_pool_with_spawn_gives_the_serial_rows(serial_rows_one_thread):
    """The same with the standard library's executor (spawn: fork can hang after torch used OpenMP)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with deadline(180), ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        rows = sweep(CONFIGS, progress=False, executor=pool, threads=1, **EVALUATION)
    assert_same_rows(rows, serial_rows_one_thread)


def test_threads_must_be_positive():
    with pytest.raises(ValueError, match="threads"):
        sweep(CONFIGS, progress=False, threads=0, **EVALUATION)
