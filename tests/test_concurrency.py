"""Runs beside each other: a reader loading while another process saves, and training from threads."""

import json
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from counts import report
from workshop_utils import ExperimentConfig, build_model, save_results, train

pytestmark = pytest.mark.timeout(600)
SMALL = dict(neurons=6, input_features=10, batch_size=3, timesteps=40, epochs=2, backend="norse")

READER = textwrap.dedent("""
    import json, sys, time, torch
    from pathlib import Path
    from workshop_utils import load_results
    from workshop_utils.results_io import ARRAYS
    directory, ready, stop = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    references = [load_results(path) for path in sys.argv[4:]]
    by_seed = {reference["record"]["seed"]: reference for reference in references}

    def same(loaded, reference):
        return (loaded["record"] == reference["record"]
                and all(torch.equal(loaded[name], reference[name]) for name in ARRAYS)
                and all(torch.equal(loaded["weights"][key], value) for key, value in reference["weights"].items()))

    counts = {"complete": 0, "mixed": 0, "missing": 0}
    ready.touch()
    while not stop.exists():
        try:
            loaded = load_results(directory)
        except FileNotFoundError:
            counts["missing"] += 1
            continue
        reference = by_seed.get(loaded["record"]["seed"])
        counts["complete" if reference is not None and same(loaded, reference) else "mixed"] += 1
    print(json.dumps(counts))
""")


def test_a_reader_always_loads_one_complete_run_while_another_process_saves(tmp_path, request):
    """A reader process loads in a loop while this process saves two runs in turn: every load must
    be one complete run (the issue measured 1,978 mixed and 99 missing of 7,758 with the old save)."""
    runs = [train(ExperimentConfig(**SMALL, seed=seed), progress=False) for seed in (1, 2)]
    references = [save_results(run, tmp_path / f"reference-{index}") for index, run in enumerate(runs)]
    directory = save_results(runs[0], tmp_path / "shared")
    ready, stop = tmp_path / "ready", tmp_path / "stop"
    reader = subprocess.Popen([sys.executable, "-c", READER, str(directory), str(ready), str(stop),
                               *map(str, references)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not ready.exists():
            assert reader.poll() is None and time.monotonic() < deadline, reader.stderr.read() if reader.poll() else ""
            time.sleep(0.05)
        saves = 0
        started = time.monotonic()
        while saves < 100 or time.monotonic() - started < 5:
            save_results(runs[saves % 2], directory)
            saves += 1
        stop.touch()
        out, err = reader.communicate(timeout=120)
    finally:
        if reader.poll() is None:
            reader.kill()
    assert reader.returncode == 0, err
    counts = json.loads(out)
    report(request, f"concurrency test (load while saving): {saves} saves, {sum(counts.values())} loads: "
                    f"{counts['complete']} complete, {counts['mixed']} mixed, {counts['missing']} missing")
    assert counts["mixed"] == 0 and counts["missing"] == 0
    assert counts["complete"] >= 10, "the reader must have loaded while the saves ran"


@pytest.mark.parametrize("backend", ["fast", "norse"])
def test_training_from_several_threads_gives_each_seed_its_own_numbers(backend, request):
    """Eight runs, four threads at a time, each equal (losses, weights, target) to its seed's run alone.

    A run draws from its own generators only; the issue saw 4 of 100 models differ when runs shared
    torch's global generator. Bit-equality holds on any CPU: both sides run in this process, on
    this CPU, with the same number of torch threads."""
    configs = [ExperimentConfig(**{**SMALL, "backend": backend, "timesteps": 100, "epochs": 3}, seed=seed,
                                target_seed=seed % 3) for seed in range(8)]
    # the fast variant also draws each run's target (20,000 steps); Norse's loop is given a table
    table = None if backend == "fast" else torch.full((8,), 1 / 8)
    alone = [train(config, table, progress=False) for config in configs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(lambda config: train(config, table, progress=False), configs))
    differing = [config.seed for config, a, b in zip(configs, alone, together)
                 if not (a.losses == b.losses and torch.equal(a.p_target, b.p_target)
                         and torch.equal(a.model.input_weights, b.model.input_weights)
                         and torch.equal(a.model.recurrent_weights, b.model.recurrent_weights))]
    report(request, f"concurrency test (training, {backend}): {len(configs)} runs in 4 threads, "
                    f"{len(differing)} differ from their seed's run alone")
    assert differing == []


def test_models_built_from_several_threads_get_their_seeds_weights(request):
    """4 threads x 50 models (the issue's 4 x 200 with seeded_streams gave 64 of 800 other weights)."""
    configs = [ExperimentConfig(**SMALL, seed=seed) for seed in range(50)]
    alone = [build_model(config).input_weights.detach() for config in configs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        built = list(pool.map(lambda config: build_model(config).input_weights.detach(), configs * 4))
    differing = sum(not torch.equal(weights, alone[index % 50]) for index, weights in enumerate(built))
    report(request, f"concurrency test (build_model): {len(built)} models from 4 threads, {differing} with "
                    f"other weights than their seed's")
    assert differing == 0
