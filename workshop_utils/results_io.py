"""Saving and loading a training run: five arrays, the trained weights and a JSON record.

A save never changes a run that readers can see. It writes a fresh hidden directory beside the
run's path, ``.<name>.run-XXXXXXXX``, and then points the path, a symbolic link ``<name>``, at it
with one atomic rename (``os.replace`` of a link). A reader resolves the link once and reads every
file from that directory, so it gets one complete run, old or new, and the path is never missing
once a run exists, whenever a save is interrupted (Ctrl-C, a crash, a killed process). Each save
then deletes what earlier or killed saves left (hidden directories the link does not point to);
saves to one path take turns (a lock file ``.<name>.lock``, POSIX only).

On a file system without symbolic links the run is saved as a plain directory that is swapped into
place by two renames instead (with a warning: a crash between them leaves the path missing).
A plain directory saved by an older version of this module is replaced by a link the same way, once.
"""

import dataclasses
import json
import math
import os
import platform
import re
import secrets
import shutil
import tempfile
import warnings
from contextlib import ExitStack
from importlib import metadata
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch

from .paths import current_umask, file_lock
from .training import ExperimentConfig, TrainingResult, build_model

ARRAYS = ("refrac", "p_target", "p_f", "losses", "voltages")
WEIGHTS_FILE = "weights.pt"
RECORD_FILE = "run.json"
FILES = tuple(f"{name}.npy" for name in ARRAYS) + (WEIGHTS_FILE, RECORD_FILE)
LOAD_ATTEMPTS = 50  # a reader starts again when a save replaced the run it was reading


def package_versions() -> Dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in ("torch", "norse", "numpy", "numba", "workshop-utils"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _plain_number(value):
    """A numpy scalar in ``extra`` as the plain number JSON takes (np.float64 is a float already)."""
    if isinstance(value, np.generic) and np.ndim(value) == 0:
        return value.item()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _run_path(directory, name: str = "directory") -> Path:
    """``directory`` as a Path whose last part can name a run, or a ValueError."""
    if not isinstance(directory, (str, os.PathLike)) or isinstance(directory, bytes):
        raise ValueError(f"{name} must be a path (a string or pathlib.Path), got {type(directory).__name__}")
    text = os.fspath(directory)
    if not text.strip() or "\0" in text:
        raise ValueError(f"{name} must be a non-empty path, got {directory!r}")
    path = Path(text).expanduser()  # "~/results/run" means the home directory, as in a shell
    if path.name in ("", ".", "..") or path.resolve() == path.resolve().parent:
        raise ValueError(f"{name} must end in the run's own name (e.g. results/my-run), got {directory!r}")
    return path


def _hidden(directory: Path, kind: str) -> re.Pattern:
    """Names of the hidden entries of ``directory``'s runs: ``.<name>.run-XXXXXXXX`` and ``.<name>.link-XXXXXXXX``."""
    return re.compile(rf"\.{re.escape(directory.name)}\.{kind}-[a-z0-9_]{{8}}")


def _fresh_name(directory: Path, kind: str) -> Path:
    """A new hidden name beside ``directory`` that :func:`_hidden` matches."""
    return directory.parent / f".{directory.name}.{kind}-{secrets.token_hex(4)}"


def _is_our_link(directory: Path) -> bool:
    target = os.readlink(directory)
    return os.path.dirname(target) == "" and _hidden(directory, "run").fullmatch(target) is not None


def _check_destination(directory: Path) -> None:
    """Refuse a path that is not, and cannot become, a run's directory, before anything is written."""
    if directory.is_symlink():
        if not _is_our_link(directory):
            raise ValueError(f"directory {str(directory)!r} is a symbolic link that save_results did not make "
                             f"(to {os.readlink(directory)!r}); refusing to replace it")
    elif directory.is_dir():
        if not (directory / RECORD_FILE).is_file():
            raise ValueError(f"directory {str(directory)!r} exists and holds no saved run ({RECORD_FILE}); "
                             "refusing to replace it: choose a new path, or remove it first")
    elif directory.exists():
        raise ValueError(f"directory {str(directory)!r} is an existing file, not a run's directory")
    for parent in directory.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"directory {str(directory)!r} lies under {str(parent)!r}, which is a file")
            break


def _check_result(result) -> Dict[str, torch.Tensor]:
    """The arrays of ``result`` by file stem; raise unless it is a finite TrainingResult."""
    if not isinstance(result, TrainingResult) or not isinstance(result.config, ExperimentConfig):
        raise ValueError(f"result must be a TrainingResult (what train returns), got {type(result).__name__}")
    if len(result.losses) == 0:
        raise ValueError("result.losses must hold the loss of at least one epoch")
    arrays = {
        "refrac": result.refractory,
        "p_target": result.p_target,
        "p_f": result.p_sampled,
        "losses": torch.tensor(result.losses, dtype=torch.float64),
        "voltages": result.voltages,
    }
    tensors = {**arrays, **{f"weights {key}": value for key, value in result.model.state_dict().items()}}
    for name, tensor in tensors.items():
        if not isinstance(tensor, torch.Tensor) or not torch.isfinite(tensor).all():
            raise ValueError(f"result holds a non-finite or missing {name}: a run with NaN or inf is never saved")
    if not math.isfinite(result.seconds):
        raise ValueError(f"result.seconds must be finite, got {result.seconds!r}")
    return arrays


def _save_lock(directory: Path):
    """Saves to ``directory`` one at a time (released by the system if the process dies)."""
    return file_lock(directory.parent / f".{directory.name}.lock")


def _write(path: Path, write) -> None:
    with open(path, "wb") as file:
        write(file)
        file.flush()
        os.fsync(file.fileno())  # on disk before the link points at it, should the machine stop


def _sync_directory(path: Path) -> None:
    if hasattr(os, "O_DIRECTORY"):
        descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def save_results(result, directory, extra: Optional[Dict] = None) -> Path:
    """Write a :class:`~workshop_utils.training.TrainingResult` to ``directory`` and return its path.

    Files: ``refrac.npy`` ``[T, B, N]``, ``p_target.npy`` and ``p_f.npy`` ``[B, 2**k]``,
    ``losses.npy`` ``[epochs]``, ``voltages.npy`` ``[T, B, N]``, ``weights.pt`` (state dict) and
    ``run.json`` (parameters, seed, package versions, final loss and the entries of ``extra``).
    The run replaces an earlier one at ``directory`` as a whole (see the module's docstring).

    Raises a ValueError, before anything is written, for a result that is not a finite
    ``TrainingResult``, an ``extra`` that is not JSON or reuses a record key, and a ``directory`` that is
    empty, an existing file, or an existing directory or link that holds no run saved here.
    """
    directory = _run_path(directory)
    arrays = _check_result(result)
    record = {
        "parameters": dataclasses.asdict(result.config),
        "seed": result.config.seed,
        "final_loss": result.losses[-1],
        "training_seconds": result.seconds,
        "versions": package_versions(),
    }
    if extra is not None:
        if not isinstance(extra, dict) or not all(isinstance(key, str) for key in extra):
            raise ValueError(f"extra must be a dict with string keys, got {extra!r}")
        if set(extra) & set(record):
            raise ValueError(f"extra must not replace the record's own entries {sorted(set(extra) & set(record))}")
        record.update(extra)
    try:
        text = json.dumps(record, indent=2, allow_nan=False, default=_plain_number) + "\n"
    except (TypeError, ValueError) as error:
        raise ValueError(f"extra must hold JSON values (finite numbers, strings, lists, dicts): {error}") from None
    weights = {key: value.detach().cpu() for key, value in result.model.state_dict().items()}
    _check_destination(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)

    with _save_lock(directory):
        _check_destination(directory)  # again: another save may have run while this one waited
        staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.run-", dir=directory.parent))
        try:
            os.chmod(staging, 0o777 & ~current_umask())  # mkdtemp makes it private
            for name, tensor in arrays.items():
                _write(staging / f"{name}.npy", lambda file: np.save(file, tensor.detach().cpu().numpy()))
            _write(staging / WEIGHTS_FILE, lambda file: torch.save(weights, file))
            _write(staging / RECORD_FILE, lambda file: file.write(text.encode()))
            _sync_directory(staging)
            _publish(staging, directory)
        except BaseException:
            if not (directory.is_symlink() and os.readlink(directory) == staging.name):
                shutil.rmtree(staging, ignore_errors=True)  # not published (else the next save cleans up)
            raise
        _sync_directory(directory.parent)
        _remove_leftovers(directory)
    return directory


def _publish(staging: Path, directory: Path) -> None:
    """Point ``directory`` at the complete run in ``staging``: one atomic rename of a link."""
    link = _fresh_name(directory, "link")
    try:
        os.symlink(staging.name, link)
    except FileExistsError:
        raise
    except (OSError, NotImplementedError) as error:  # no symbolic links on this file system or system
        warnings.warn(f"cannot make a symbolic link in {directory.parent} ({error}): the run is swapped into "
                      "place by two renames instead, and a crash between them leaves the path missing", RuntimeWarning)
        if directory.is_dir() or directory.is_symlink():
            os.replace(directory, _fresh_name(directory, "run"))
        os.replace(staging, directory)
        return
    if directory.is_dir() and not directory.is_symlink():  # a plain directory (older version): moved aside once
        os.replace(directory, _fresh_name(directory, "run"))
    os.replace(link, directory)


def _remove_leftovers(directory: Path) -> None:
    """Delete every hidden run directory and link of ``directory`` but the run it points to."""
    current = os.readlink(directory) if directory.is_symlink() else None
    runs, links = _hidden(directory, "run"), _hidden(directory, "link")
    for entry in os.scandir(directory.parent):
        if entry.name == current:
            continue
        if runs.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        elif links.fullmatch(entry.name) or (runs.fullmatch(entry.name) and entry.is_symlink()):
            os.unlink(entry.path)


def load_results(directory, produced_by: str = "notebooks/03_training.ipynb") -> Dict:
    """Read what :func:`save_results` wrote: the five arrays as tensors, ``weights`` and ``record``.

    Always one complete run: the link is resolved once per attempt and every file read from the run it
    points to; if a save replaced that run meanwhile, reading starts again. Raises FileNotFoundError
    if there is no complete run (saying to run ``produced_by``), and a ValueError naming the file and
    what is wrong for a damaged one (a truncated array, a record that is not JSON, weights or arrays
    whose shapes do not match the record's parameters).
    """
    directory = _run_path(directory)
    for _ in range(LOAD_ATTEMPTS):
        run = directory.parent / os.readlink(directory) if directory.is_symlink() else directory
        with ExitStack() as stack:
            try:  # open every file first: a run deleted meanwhile stays readable through them
                files = {name: stack.enter_context(open(run / name, "rb")) for name in FILES}
            except FileNotFoundError:
                if directory.is_symlink() and directory.parent / os.readlink(directory) != run:
                    continue  # a save replaced the run between resolving and opening: read the new one
                missing = [name for name in FILES if not (run / name).exists()]
                raise FileNotFoundError(
                    f"No complete results in {directory} (missing {', '.join(missing) or 'the directory'}). "
                    f"Run {produced_by} first (or `make run`)."
                ) from None
            except (NotADirectoryError, IsADirectoryError):
                raise ValueError(f"{directory} is not a directory of saved results") from None
            return _read_run(run, files)
    raise RuntimeError(f"{directory} was replaced by {LOAD_ATTEMPTS} saves while it was being read; try again")


def _read_run(run: Path, files: Dict) -> Dict:
    def damaged(name, what):
        return ValueError(f"{run / name}: {what}")

    try:
        record = json.loads(files[RECORD_FILE].read().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise damaged(RECORD_FILE, f"not valid JSON ({error})") from None
    parameters = record.get("parameters") if isinstance(record, dict) else None
    sizes = ("neurons", "input_features", "batch_size", "epochs", "k")
    if not isinstance(parameters, dict) or not all(isinstance(parameters.get(name), int)
                                                   and not isinstance(parameters.get(name), bool) for name in sizes):
        raise damaged(RECORD_FILE, f"no 'parameters' with the integers {sizes}")
    fields = {field.name for field in dataclasses.fields(ExperimentConfig)}
    # the record's parameters pass ExperimentConfig's own checks (sizes that fit, k, rates, ...), but
    # for the device: a run saved on a GPU loads on a machine without one
    try:
        ExperimentConfig(**{name: value for name, value in parameters.items() if name in fields - {"device"}})
    except (ValueError, TypeError) as error:
        raise damaged(RECORD_FILE, f"its parameters are not a valid configuration ({error})") from None
    N, H, B = parameters["neurons"], parameters["input_features"], parameters["batch_size"]
    loaded = {}
    for name in ARRAYS:
        try:
            loaded[name] = torch.from_numpy(np.load(files[f"{name}.npy"], allow_pickle=False))
        except (ValueError, OSError, EOFError) as error:
            raise damaged(f"{name}.npy", f"not a complete .npy array ({error})") from None
    expected = {"p_target": [B, 2 ** parameters["k"]], "p_f": [B, 2 ** parameters["k"]],
                "losses": [parameters["epochs"]], "refrac": ["T", B, N], "voltages": ["T", B, N]}
    for name, shape in expected.items():
        actual = list(loaded[name].shape)
        if len(actual) != len(shape) or any(size != "T" and size != got for size, got in zip(shape, actual)):
            raise damaged(f"{name}.npy", f"has shape {actual}, the record's parameters give {shape}")
    try:
        weights = torch.load(files[WEIGHTS_FILE], weights_only=True)
    except Exception as error:  # torch raises several types for a damaged file
        raise damaged(WEIGHTS_FILE, f"not a readable state dict ({type(error).__name__}: {error})") from None
    shapes = {"input_weights": (N, H), "recurrent_weights": (N, N)}
    found = {key.split(".")[-1]: tuple(value.shape) for key, value in weights.items()} if isinstance(weights, dict) else {}
    if found != shapes:
        raise damaged(WEIGHTS_FILE, f"holds weights of shapes {found}, the record's parameters (N = {N}, H = {H}) "
                                    f"give {shapes}")
    loaded["weights"] = weights
    loaded["record"] = record
    return loaded


def model_from_results(saved: Dict, device="cpu"):
    """The trained network and its config, rebuilt from what :func:`load_results` returned."""
    if not isinstance(saved, dict) or not {"record", "weights"} <= set(saved):
        raise ValueError("saved must be what load_results returned (a dict with 'record' and 'weights')")
    try:
        config = ExperimentConfig(**{**saved["record"]["parameters"], "device": device})
    except TypeError as error:  # a parameter this version does not know
        raise ValueError(f"the saved run's parameters do not make an ExperimentConfig: {error}") from None
    model = build_model(config)
    model.load_state_dict(saved["weights"])
    return model, config
