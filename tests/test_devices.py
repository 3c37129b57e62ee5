"""Devices are normalised once, as torch names a tensor's device, and refused with the list of those
available. CUDA is simulated (torch.cuda's queries patched), so these tests run on any machine; the
last test runs on a real GPU only."""

import types

import pytest
import torch

import workshop_utils as wu
from workshop_utils.checks import available_devices, require_device


@pytest.fixture
def two_gpus(monkeypatch):
    """A torch that reports two CUDA devices of 80 GiB, the current one being cuda:0."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: types.SimpleNamespace(total_memory=80 * 2**30))


@pytest.mark.parametrize("given, normalised", [
    ("cuda", "cuda:0"), (torch.device("cuda"), "cuda:0"), ("cuda:1", "cuda:1"), (" cuda:0 ", "cuda:0"),
    ("cpu", "cpu"), ("cpu:0", "cpu"), (torch.device("cpu"), "cpu"),
])
def test_devices_are_named_as_torch_names_a_tensors_device(two_gpus, given, normalised):
    assert require_device(given) == normalised
    assert wu.ExperimentConfig(device=given).device == normalised


def test_cuda_means_the_current_device(two_gpus, monkeypatch):
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert require_device("cuda") == "cuda:1"


@pytest.mark.parametrize("device", ["cuda:2", "mps", "gpu0", "meta", "", 0, None])
def test_devices_this_torch_cannot_use_are_refused_with_the_list(two_gpus, device):
    with pytest.raises(ValueError, match=r"device .*'cpu', 'cuda:0', 'cuda:1'"):
        wu.ExperimentConfig(device=device)


def test_without_cuda_the_error_says_so(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)
    assert available_devices() == ["cpu"] or available_devices() == ["cpu", "mps:0"]
    with pytest.raises(ValueError, match=r"device 'cuda' cannot be used by this torch \(this torch is built without "
                                         r"CUDA\); devices available: 'cpu'"):
        wu.ExperimentConfig(device="cuda")
    with pytest.raises(ValueError, match="device"):
        wu.poisson_input(0.3, 5, 2, 4, device="cuda")


def test_a_training_that_cannot_fit_on_the_gpu_is_refused_with_its_memory(two_gpus):
    with pytest.raises(ValueError, match=r"needs at least .* more than the 80 GiB that cuda:0 has"):
        wu.ExperimentConfig(device="cuda", timesteps=10**6, batch_size=1024)


def test_the_input_buffer_on_a_normalised_device_is_accepted():
    """The check compares torch's name of ``out``'s device with the normalised one (``"cpu:0"`` is
    ``"cpu"`` as ``"cuda"`` is ``"cuda:0"``: comparing torch.device("cuda") with a tensor's cuda:0
    refused every CUDA training)."""
    out = torch.empty(5, 2, 4)
    assert wu.poisson_input(0.3, 5, 2, 4, torch.Generator().manual_seed(0), "cpu:0", out=out) is out


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_training_on_cuda_runs_and_keeps_its_tensors_there(tmp_path):
    config = wu.ExperimentConfig(neurons=8, input_features=32, batch_size=4, timesteps=100, epochs=2, device="cuda")
    assert config.device == f"cuda:{torch.cuda.current_device()}"
    out = torch.empty(100, 4, 32, device="cuda")
    assert wu.poisson_input(0.3, 100, 4, 32, torch.Generator(device="cuda").manual_seed(0), "cuda", out=out) is out
    result = wu.train(config, progress=False)
    assert str(result.p_sampled.device) == config.device and str(result.model.input_weights.device) == config.device
    model, loaded = wu.model_from_results(wu.load_results(wu.save_results(result, tmp_path / "run")), "cuda")
    assert torch.equal(model.input_weights, result.model.input_weights)
