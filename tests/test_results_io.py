import json
import os

import numpy as np
import pytest
import torch

from workshop_utils import ExperimentConfig, load_results, model_from_results, save_results, train
from workshop_utils.results_io import FILES

SMALL = dict(neurons=6, input_features=10, batch_size=3, timesteps=40, epochs=2, backend="norse")


@pytest.fixture(scope="module")
def result():
    return train(ExperimentConfig(**SMALL), progress=False)


@pytest.fixture(scope="module")
def other_result():
    """A run for another N and H, to mix files with."""
    return train(ExperimentConfig(**{**SMALL, "neurons": 7, "input_features": 12}), progress=False)


def layout(parent):
    """The entries of a results folder: the link, the hidden runs and the lock file, by kind."""
    names = sorted(path.name for path in parent.iterdir())
    return {
        "links": [name for name in names if (parent / name).is_symlink()],
        "runs": [name for name in names if ".run-" in name],
        "other": [name for name in names if not (parent / name).is_symlink() and ".run-" not in name
                  and not name.endswith(".lock")],
    }


def test_round_trip(tmp_path, result):
    directory = save_results(result, tmp_path / "stochastic")
    names = sorted(path.name for path in directory.iterdir())
    assert names == ["losses.npy", "p_f.npy", "p_target.npy", "refrac.npy", "run.json", "voltages.npy", "weights.pt"]
    loaded = load_results(directory)
    assert torch.equal(loaded["refrac"], result.refractory)
    assert torch.equal(loaded["voltages"], result.voltages)
    assert torch.equal(loaded["p_f"], result.p_sampled)
    assert torch.equal(loaded["p_target"], result.p_target)
    assert np.allclose(loaded["losses"].numpy(), result.losses)
    assert {key.split(".")[-1] for key in loaded["weights"]} == {"input_weights", "recurrent_weights"}
    assert torch.equal(loaded["weights"]["cell.input_weights"], result.model.input_weights.detach())


def test_record_holds_parameters_seed_versions_and_loss(tmp_path, result):
    record = json.loads((save_results(result, tmp_path / "run", extra={"note": "first"}) / "run.json").read_text())
    assert record["parameters"]["timesteps"] == 40 and record["parameters"]["k"] == 3
    assert record["seed"] == result.config.seed and record["note"] == "first"
    assert record["final_loss"] == result.losses[-1]
    assert {"python", "torch", "norse", "numpy"} <= set(record["versions"])


def test_saved_model_is_rebuilt(tmp_path, result):
    model, config = model_from_results(load_results(save_results(result, tmp_path / "run")))
    assert config == result.config
    assert torch.equal(model.recurrent_weights, result.model.recurrent_weights)
    assert torch.equal(model.input_weights, result.model.input_weights)


def test_the_path_is_a_link_to_one_complete_run(tmp_path, result, other_result):
    """The path is a symbolic link to a hidden run directory; a new save points it at a new one and
    deletes the old one: one link, one run, a lock file, nothing else."""
    directory = save_results(result, tmp_path / "run")
    first = os.readlink(directory)
    save_results(other_result, directory)
    assert os.readlink(directory) != first
    assert load_results(directory)["record"]["parameters"]["neurons"] == 7
    assert layout(tmp_path) == {"links": ["run"], "runs": [os.readlink(directory)], "other": []}


def test_leftovers_of_killed_saves_are_removed_by_the_next_save(tmp_path, result):
    directory = save_results(result, tmp_path / "run")
    for name in (".run.run-deadbeef", ".run.run-0badc0de"):  # as a killed save leaves them
        (tmp_path / name).mkdir()
        (tmp_path / name / "refrac.npy").write_bytes(b"half")
    os.symlink(".run.run-deadbeef", tmp_path / ".run.link-12345678")
    (tmp_path / ".other.run-deadbeef").mkdir()  # another run's: left alone
    save_results(result, directory)
    assert layout(tmp_path) == {"links": ["run"], "runs": [".other.run-deadbeef", os.readlink(directory)],
                                "other": []}


def test_a_plain_directory_from_an_older_version_is_replaced(tmp_path, result, other_result):
    old = tmp_path / "run"
    old.mkdir()
    save_results(result, tmp_path / "tmp")
    for name in FILES:
        (old / name).write_bytes((tmp_path / "tmp" / name).read_bytes())
    assert load_results(old)["record"]["parameters"]["neurons"] == 6
    save_results(other_result, old)
    assert old.is_symlink() and load_results(old)["record"]["parameters"]["neurons"] == 7


def test_failed_save_keeps_the_previous_results(tmp_path, result, monkeypatch):
    directory = save_results(result, tmp_path / "run")
    before = {path.name: path.read_bytes() for path in directory.iterdir()}

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_results(result, directory)
    assert {path.name: path.read_bytes() for path in directory.iterdir()} == before
    assert layout(tmp_path)["runs"] == [os.readlink(directory)], "the failed save's directory is removed"


def test_without_symbolic_links_the_run_is_swapped_in_with_a_warning(tmp_path, result, other_result, monkeypatch):
    def no_links(*args, **kwargs):
        raise OSError("symbolic links are not supported here")

    monkeypatch.setattr(os, "symlink", no_links)
    with pytest.warns(RuntimeWarning, match="two renames"):
        directory = save_results(result, tmp_path / "run")
    with pytest.warns(RuntimeWarning, match="two renames"):
        save_results(other_result, directory)
    assert directory.is_dir() and not directory.is_symlink()
    assert load_results(directory)["record"]["parameters"]["neurons"] == 7
    assert [path.name for path in tmp_path.iterdir() if not path.name.endswith(".lock")] == ["run"]


@pytest.mark.parametrize("make, match", [
    (lambda tmp: "", "non-empty"),
    (lambda tmp: "   ", "non-empty"),
    (lambda tmp: tmp / "file.txt", "existing file"),
    (lambda tmp: tmp, "holds no saved run"),
    (lambda tmp: tmp / "file.txt" / "run", "is a file"),
    (lambda tmp: tmp / "..", "own name"),
    (lambda tmp: 42, "path"),
    (lambda tmp: tmp / "elsewhere", "did not make"),
])
def test_nonsense_paths_are_refused_before_anything_is_touched(tmp_path, result, make, match):
    (tmp_path / "file.txt").write_text("keep me")
    (tmp_path / "notes").mkdir()
    os.symlink("notes", tmp_path / "elsewhere")
    before = sorted(os.walk(tmp_path))
    cwd = sorted(os.listdir("."))
    with pytest.raises(ValueError, match=match):
        save_results(result, make(tmp_path))
    assert sorted(os.walk(tmp_path)) == before and sorted(os.listdir(".")) == cwd
    assert (tmp_path / "file.txt").read_text() == "keep me"


def test_results_with_nan_and_bad_extras_are_refused(tmp_path, result):
    import copy

    poisoned = copy.copy(result)
    poisoned.losses = result.losses[:-1] + [float("nan")]
    with pytest.raises(ValueError, match="non-finite"):
        save_results(poisoned, tmp_path / "run")
    for extra, match in [({"final_loss": 0.0}, "must not replace"), ({"x": object()}, "JSON"),
                         ({"x": float("nan")}, "JSON"), ([1], "dict")]:
        with pytest.raises(ValueError, match=match):
            save_results(result, tmp_path / "run", extra=extra)
    with pytest.raises(ValueError, match="TrainingResult"):
        save_results({"losses": [1.0]}, tmp_path / "run")
    assert list(tmp_path.iterdir()) == []


def edit_parameters(run, **changes):
    record = json.loads((run / "run.json").read_text())
    record["parameters"].update(changes)
    (run / "run.json").write_text(json.dumps(record))


def test_missing_results_say_which_notebook_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="03_training"):
        load_results(tmp_path / "nothing-here")


@pytest.mark.parametrize("damage, file, match", [
    (lambda run, other: (run / "losses.npy").write_bytes((run / "losses.npy").read_bytes()[:90]), "losses.npy",
     "not a complete .npy"),
    (lambda run, other: (run / "voltages.npy").write_bytes(b""), "voltages.npy", "not a complete .npy"),
    (lambda run, other: (run / "run.json").write_text("{parameters: 1"), "run.json", "not valid JSON"),
    (lambda run, other: (run / "run.json").write_text('{"seed": 1}'), "run.json", "parameters"),
    (lambda run, other: (run / "weights.pt").write_bytes((other / "weights.pt").read_bytes()), "weights.pt",
     r"N = 6, H = 10"),
    (lambda run, other: (run / "weights.pt").write_bytes(b"garbage"), "weights.pt", "not a readable"),
    (lambda run, other: (run / "refrac.npy").write_bytes((other / "refrac.npy").read_bytes()), "refrac.npy",
     "shape"),
    (lambda run, other: (run / "p_target.npy").unlink(), "p_target.npy", "missing"),
    # parameters that are no configuration: k = 1e10 made the loader compute 2**k for minutes
    (lambda run, other: edit_parameters(run, k=10**10), "run.json", "not a valid configuration.*k"),
    (lambda run, other: edit_parameters(run, k=-1), "run.json", "not a valid configuration.*k"),
    (lambda run, other: edit_parameters(run, neurons=True), "run.json", "integers"),
    (lambda run, other: edit_parameters(run, learning_rate="abc"), "run.json", "learning_rate"),
])
def test_every_load_error_names_the_file_and_what_is_wrong(tmp_path, result, other_result, damage, file, match):
    directory = save_results(result, tmp_path / "run")
    other = save_results(other_result, tmp_path / "other")
    damage(directory.resolve(), other.resolve())
    with pytest.raises((ValueError, FileNotFoundError)) as error:
        load_results(directory)
    assert file in str(error.value)
    assert error.match(match)


def test_saved_files_are_readable_by_others(tmp_path, result):
    import stat

    directory = save_results(result, tmp_path / "run")
    assert directory.resolve().stat().st_mode & stat.S_IROTH or os.umask(os.umask(0)) & 0o004
    assert (directory / "run.json").stat().st_mode & stat.S_IRGRP or os.umask(os.umask(0)) & 0o040


def test_reading_the_umask_never_changes_it(monkeypatch):
    """Saving reads the umask to give its files the usual permissions. Setting the umask to read it
    made files that other threads created meanwhile world-writable (169 of 347 in a review's 5 s
    test); on Linux it is read from /proc/self/status and never set."""
    import os
    import sys

    from workshop_utils.paths import current_umask

    if not sys.platform.startswith("linux"):
        pytest.skip("/proc/self/status is Linux's")
    expected = os.umask(0o022)
    os.umask(expected)

    def refuse(mask):
        raise AssertionError("current_umask changed the umask")

    monkeypatch.setattr(os, "umask", refuse)
    assert current_umask() == expected
