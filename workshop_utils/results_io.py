"""Saving and loading a training run: five arrays, the trained weights and a JSON record.

A run directory is replaced as a whole: everything is written into a temporary sibling directory,
which is then renamed into place, so a reader sees the old run or the new one, never half a file.
"""

import dataclasses
import json
import os
import platform
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Dict

import numpy as np
import torch

from .paths import current_umask

ARRAYS = ("refrac", "p_target", "p_f", "losses", "voltages")
WEIGHTS_FILE = "weights.pt"
RECORD_FILE = "run.json"


def package_versions() -> Dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in ("torch", "norse", "numpy", "numba", "workshop-utils"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def save_results(result, directory, extra: Dict = None) -> Path:
    """Write a :class:`~workshop_utils.training.TrainingResult` to ``directory``.

    Files: ``refrac.npy`` ``[T, B, N]``, ``p_target.npy`` and ``p_f.npy`` ``[B, 2**k]``,
    ``losses.npy`` ``[epochs]``, ``voltages.npy`` ``[T, B, N]``, ``weights.pt`` (state dict) and
    ``run.json`` (parameters, seed, package versions, final loss and anything in ``extra``).
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "parameters": dataclasses.asdict(result.config),
        "seed": result.config.seed,
        "final_loss": result.losses[-1],
        "training_seconds": result.seconds,
        "versions": package_versions(),
        **(extra or {}),
    }
    arrays = {
        "refrac": result.refractory,
        "p_target": result.p_target,
        "p_f": result.p_sampled,
        "losses": torch.tensor(result.losses),
        "voltages": result.voltages,
    }
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        os.chmod(staging, 0o777 & ~current_umask())  # mkdtemp makes it private
        for name, tensor in arrays.items():
            np.save(staging / f"{name}.npy", tensor.detach().cpu().numpy())
        torch.save({key: value.cpu() for key, value in result.model.state_dict().items()}, staging / WEIGHTS_FILE)
        (staging / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
        _swap_into_place(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def _swap_into_place(staging: Path, directory: Path) -> None:
    if not directory.exists():
        os.replace(staging, directory)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{directory.name}.old.", dir=directory.parent))
    os.replace(directory, retired / directory.name)
    os.replace(staging, directory)
    shutil.rmtree(retired, ignore_errors=True)


def load_results(directory, produced_by: str = "notebooks/03_training.ipynb") -> Dict:
    """Read what :func:`save_results` wrote: the five arrays as tensors, ``weights`` and ``record``."""
    directory = Path(directory)
    missing = [f"{name}.npy" for name in ARRAYS if not (directory / f"{name}.npy").exists()]
    missing += [name for name in (WEIGHTS_FILE, RECORD_FILE) if not (directory / name).exists()]
    if missing:
        raise FileNotFoundError(
            f"No complete results in {directory} (missing {', '.join(missing)}). "
            f"Run {produced_by} first (or `make run`)."
        )
    loaded = {name: torch.from_numpy(np.load(directory / f"{name}.npy")) for name in ARRAYS}
    loaded["weights"] = torch.load(directory / WEIGHTS_FILE, weights_only=True)
    loaded["record"] = json.loads((directory / RECORD_FILE).read_text())
    return loaded


def model_from_results(saved: Dict, device="cpu"):
    """The trained network and its config, rebuilt from what :func:`load_results` returned."""
    from .training import ExperimentConfig, build_model

    config = ExperimentConfig(**{**saved["record"]["parameters"], "device": str(device)})
    model = build_model(config)
    model.load_state_dict(saved["weights"])
    return model, config
