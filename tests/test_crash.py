"""A save interrupted at any step leaves one complete run at the path, and the next save cleans up.

The interruptions are placed by a trace function at every line that ``results_io`` executes during a
save: a ``KeyboardInterrupt`` there (Ctrl-C: the save's own clean-up runs), or a simulated kill (from
that line on nothing more reaches the disk: the clean-up's file operations fail too), and, at a few
lines, a real SIGKILL of a process that saves.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections import Counter

import pytest
import torch

import workshop_utils.results_io as results_io
from counts import report
from workshop_utils import ExperimentConfig, load_results, save_results, train

pytestmark = pytest.mark.timeout(600)
SMALL = dict(neurons=6, input_features=10, batch_size=3, timesteps=40, epochs=2, backend="norse")


@pytest.fixture(scope="module")
def runs():
    """Two runs that differ in every file: 'old' (seed 1) and 'new' (seed 2)."""
    return {name: train(ExperimentConfig(**SMALL, seed=seed), progress=False) for name, seed in (("old", 1), ("new", 2))}


def which_run(directory, runs) -> str:
    """'old' or 'new': the complete run that ``load_results`` reads, every file of one run."""
    loaded = load_results(directory)
    for name, result in runs.items():
        if (loaded["record"]["seed"] == result.config.seed and torch.equal(loaded["refrac"], result.refractory)
                and torch.equal(loaded["voltages"], result.voltages) and torch.equal(loaded["p_f"], result.p_sampled)
                and loaded["losses"].tolist() == result.losses
                and torch.equal(loaded["weights"]["cell.input_weights"], result.model.input_weights.detach())):
            return name
    raise AssertionError(f"{directory} holds a mixture of runs or another run")


def assert_clean(parent, directory) -> None:
    """Only the link, the run it points to and the lock file remain."""
    expected = sorted([directory.name, os.readlink(directory), f".{directory.name}.lock"])
    assert sorted(os.listdir(parent)) == expected


class SimulatedKill(BaseException):
    pass


def interrupted_at(line: int, exception: type):
    """A trace function that raises ``exception`` at the ``line``-th line results_io executes."""
    executed = 0

    def local(frame, event, arg):
        nonlocal executed
        if event == "line":
            executed += 1
            if executed == line:
                raise exception(f"at line {line}")
        return local

    def tracer(frame, event, arg):
        return local if frame.f_code.co_filename == results_io.__file__ else None

    return tracer, lambda: executed


def lines_of_a_save(result, directory) -> int:
    tracer, executed = interrupted_at(0, SimulatedKill)
    sys.settrace(tracer)
    try:
        save_results(result, directory)
    finally:
        sys.settrace(None)
    return executed()


FILE_OPERATIONS = [(os, "replace"), (os, "rename"), (os, "symlink"), (os, "unlink"), (os, "rmdir"), (os, "mkdir"),
                   (os, "chmod"), (shutil, "rmtree")]


@pytest.mark.parametrize("mode", ["ctrl-c", "kill"])
def test_a_save_interrupted_at_every_line_leaves_a_complete_run(tmp_path, runs, mode, monkeypatch, request):
    directory = tmp_path / "results" / "run"
    save_results(runs["old"], directory)
    total = lines_of_a_save(runs["new"], tmp_path / "count" / "run")
    outcomes = Counter()
    for line in range(1, total + 1):
        exception = KeyboardInterrupt if mode == "ctrl-c" else SimulatedKill
        tracer, _ = interrupted_at(line, exception)
        with monkeypatch.context() as patch:
            if mode == "kill":  # once killed, nothing more reaches the disk
                killed = []
                for module, name in FILE_OPERATIONS:
                    original = getattr(module, name)

                    def after_the_kill(*args, _original=original, **kwargs):
                        if killed:
                            raise SimulatedKill("the process is dead")
                        return _original(*args, **kwargs)

                    patch.setattr(module, name, after_the_kill)
            sys.settrace(tracer)
            try:
                save_results(runs["new"], directory)
                outcomes["not interrupted"] += 1
            except (KeyboardInterrupt, SimulatedKill):
                if mode == "kill":
                    killed.append(True)
            finally:
                sys.settrace(None)
        outcomes[which_run(directory, runs)] += 1  # always one complete run, old or new
        save_results(runs["old"], directory)  # the next save cleans up whatever the interrupted one left
        assert_clean(directory.parent, directory)
        assert which_run(directory, runs) == "old"
    report(request, f"crash test ({mode}): interrupted a save at each of its {total} lines: readers found "
                    f"the old run {outcomes['old']} times, the new one {outcomes['new']} times, a mixture or "
                    f"nothing 0 times; the next save left only the link, one run and the lock each time")
    assert outcomes["old"] > 0 and outcomes["new"] > 0 and outcomes["not interrupted"] == 0


KILLED_SAVER = textwrap.dedent("""
    import os, signal, sys, json
    import workshop_utils.results_io as results_io
    from workshop_utils import ExperimentConfig, train
    result = train(ExperimentConfig(**json.loads(sys.argv[1])), progress=False)
    directory, line = sys.argv[2], int(sys.argv[3])
    executed = 0
    def local(frame, event, arg):
        global executed
        if event == "line":
            executed += 1
            if executed == line:
                os.kill(os.getpid(), signal.SIGKILL)
        return local
    sys.settrace(lambda frame, event, arg: local if frame.f_code.co_filename == results_io.__file__ else None)
    results_io.save_results(result, directory)
""")


def test_a_saving_process_killed_at_several_lines_leaves_a_complete_run(tmp_path, runs, request):
    """A real SIGKILL (no clean-up at all; the kernel releases the lock) at four lines spread over a save
    (each costs a fresh process: the simulated kill above covers every line)."""
    directory = tmp_path / "results" / "run"
    save_results(runs["old"], directory)
    total = lines_of_a_save(runs["new"], tmp_path / "count" / "run")
    new = json.dumps({**SMALL, "seed": runs["new"].config.seed})  # the child trains the same run
    outcomes = Counter()
    points = sorted({max(1, round(total * fraction)) for fraction in (0.2, 0.5, 0.8, 0.95)})
    for line in points:
        process = subprocess.run([sys.executable, "-c", KILLED_SAVER, new, str(directory),
                                  str(line)], capture_output=True, text=True, timeout=300)
        assert process.returncode == -signal.SIGKILL, process.stderr
        outcomes[which_run(directory, runs)] += 1
        save_results(runs["old"], directory)
        assert_clean(directory.parent, directory)
    report(request, f"crash test (SIGKILL): killed a saving process at {len(points)} of the save's {total} lines: "
                    f"old run {outcomes['old']}, new run {outcomes['new']}, mixture or nothing 0")
