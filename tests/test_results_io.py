import json
import os

import numpy as np
import pytest
import torch

from workshop_utils import ExperimentConfig, load_results, save_results, train


@pytest.fixture(scope="module")
def result():
    return train(ExperimentConfig(neurons=6, input_features=10, batch_size=3, timesteps=40, epochs=2, backend="norse"), progress=False)


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
    record = json.loads((save_results(result, tmp_path / "run") / "run.json").read_text())
    assert record["parameters"]["timesteps"] == 40 and record["parameters"]["k"] == 3
    assert record["seed"] == result.config.seed
    assert record["final_loss"] == result.losses[-1]
    assert {"python", "torch", "norse", "numpy"} <= set(record["versions"])


def test_saved_model_is_rebuilt(tmp_path, result):
    from workshop_utils import model_from_results

    model, config = model_from_results(load_results(save_results(result, tmp_path / "run")))
    assert config == result.config
    assert torch.equal(model.recurrent_weights, result.model.recurrent_weights)
    assert torch.equal(model.input_weights, result.model.input_weights)


def test_overwrite_replaces_everything(tmp_path, result):
    directory = tmp_path / "run"
    save_results(result, directory)
    (directory / "stale.txt").write_text("from an older run")
    save_results(result, directory)
    assert not (directory / "stale.txt").exists()
    assert [path.name for path in tmp_path.iterdir()] == ["run"], "no temporary directories may be left"


def test_failed_save_keeps_the_previous_results(tmp_path, result, monkeypatch):
    directory = save_results(result, tmp_path / "run")
    before = {path.name: path.read_bytes() for path in directory.iterdir()}

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_results(result, directory)
    assert {path.name: path.read_bytes() for path in directory.iterdir()} == before
    assert [path.name for path in tmp_path.iterdir()] == ["run"]


def test_missing_results_say_which_notebook_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="03_training"):
        load_results(tmp_path / "nothing-here")


def test_saved_files_are_readable_by_others(tmp_path, result):
    import stat

    directory = save_results(result, tmp_path / "run")
    assert directory.stat().st_mode & stat.S_IROTH or os.umask(os.umask(0)) & 0o004
    assert (directory / "run.json").stat().st_mode & stat.S_IRGRP or os.umask(os.umask(0)) & 0o040
