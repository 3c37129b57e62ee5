"""The rows of a sweep on disk: one JSON file per configuration, written whole, named by what was run.

A row file holds the configuration, the evaluation settings and the row of numbers that
:func:`~workshop_utils.experiments.train_and_evaluate` returned for them. Its name is a readable
prefix and a hash of the configuration's fields and the evaluation settings, e.g.
``N32-H1024-seed0-3f2a9c1b7e4d5a60.json``: a restarted sweep finds what it has done already, and a
changed setting (or a changed target) gives a new name, never an old row. One sweep writes to a
directory at a time.
"""

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Dict, Mapping

import torch

from .paths import replace_file
from .results_io import package_versions

SUFFIX = ".json"
LEFTOVER_SUFFIX = ".tmp"  # a temporary file that a killed sweep did not rename into place


def run_description(config, evaluation: Mapping) -> Dict:
    """What decides a row, as plain JSON values: every field of the ``ExperimentConfig`` and every
    evaluation setting (``p_target`` as its float32 values, the precision training uses)."""
    settings = {}
    for name, value in sorted(evaluation.items()):
        if name == "p_target" and value is not None:
            value = torch.as_tensor(value).detach().to("cpu", torch.float32).tolist()
        elif hasattr(value, "item") and not isinstance(value, (list, dict)):  # a numpy or torch scalar
            value = value.item()
        elif not isinstance(value, (bool, int, float, str, type(None))):
            raise ValueError(f"evaluation setting {name} must be a number, a string or None, got {value!r}")
        settings[name] = value
    return {"config": dataclasses.asdict(config), "evaluation": settings}


def run_key(description: Dict) -> str:
    """A stable hash of :func:`run_description`'s result: 16 hex digits of its SHA-256."""
    text = json.dumps(description, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def row_path(directory, config, key: str) -> Path:
    """``directory/N{neurons}-H{input_features}-seed{seed}-{key}.json``."""
    return Path(directory) / f"N{config.neurons}-H{config.input_features}-seed{config.seed}-{key}{SUFFIX}"


def write_row_file(path: Path, description: Dict, key: str, row: Dict) -> None:
    """Write the row with what decided it, as a whole (:func:`~workshop_utils.paths.replace_file`)."""
    record = {"key": key, **description, "row": row, "versions": package_versions()}
    text = json.dumps(record, indent=1) + "\n"
    replace_file(path, lambda name: Path(name).write_text(text), suffix=LEFTOVER_SUFFIX)


def read_row_file(path: Path, description: Dict, key: str) -> Dict:
    """The row in ``path``; a ``ValueError`` naming the file if it cannot be read, is not a row file,
    or was written for another configuration or other evaluation settings."""
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: cannot be read as a row file ({error})") from None
    if not isinstance(record, dict) or not isinstance(record.get("row"), dict):
        raise ValueError(f"{path}: not a row file (no 'row' mapping)")
    for name, expected in (("key", key), ("config", description["config"]), ("evaluation", description["evaluation"])):
        if record.get(name) != expected:
            raise ValueError(f"{path}: its {name} is not that of the configuration it is named after")
    return record["row"]


def remove_leftovers(directory: Path) -> int:
    """Delete the temporary files that killed sweeps left in ``directory``; return how many."""
    leftovers = list(directory.glob(f".*{SUFFIX}.*{LEFTOVER_SUFFIX}"))
    for path in leftovers:
        path.unlink(missing_ok=True)
    return len(leftovers)
