"""Argument checks that fail early with a ``ValueError`` naming the parameter and what is allowed.

Every check returns the parsed value as a plain Python value (``int``, ``float``, ``str``), which is
what the caller then uses. A number may be given as a Python or numpy scalar, a 0-d tensor or array,
or a numeric string: papermill hands ``-y "learning_rate: 2e-3"`` over as the string ``'2e-3'``
(YAML 1.1). A bool is never a number.
"""

import functools
import math
import numbers
import os
from typing import Iterable, List, Optional, Sequence

import numpy as np
import torch

SEED_LIMIT = 2**63  # seeds lie in [0, 2**63): torch.Generator.manual_seed takes up to 2**64 - 1


def _number(name: str, value, allowed: str):
    """``value`` as a Python int or float, or a ValueError saying that ``name`` must be ``allowed``."""
    shown = value
    if isinstance(value, torch.Tensor) and value.dim() == 0:
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]  # the numpy scalar
    if isinstance(value, np.floating) and value.dtype.itemsize < 8:
        value = float(str(value))  # the decimal it was written as: np.float32(0.3) is 0.3, not 0.30000001192...
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            pass
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{name} must be {allowed}, got the string {shown!r}") from None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be {allowed}, got {type(shown).__name__} {shown!r}")
    return int(value) if isinstance(value, numbers.Integral) else float(value)


def require_int(name: str, value, minimum: Optional[int] = None, maximum: Optional[int] = None) -> int:
    """Return ``value`` as an int in [minimum, maximum]; a float or string must be a whole number."""
    low = "" if minimum is None else f" >= {minimum}"
    high = "" if maximum is None else f" <= {maximum}"
    allowed = f"an integer{low}{' and' if low and high else ''}{high}"
    number = _number(name, value, allowed)
    if isinstance(number, float):
        if not (math.isfinite(number) and number.is_integer()):
            raise ValueError(f"{name} must be {allowed}, got {value!r}")
        number = int(number)
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return number


def require_positive_int(name: str, value) -> int:
    """Return ``value`` as an int, or raise if it is not an integer >= 1."""
    return require_int(name, value, minimum=1)


def require_non_negative_int(name: str, value) -> int:
    """Return ``value`` as an int, or raise if it is not an integer >= 0."""
    return require_int(name, value, minimum=0)


def require_seed(name: str, value) -> int:
    """Return a seed: an integer in [0, 2**63)."""
    return require_int(name, value, minimum=0, maximum=SEED_LIMIT - 1)


def require_float(name: str, value, minimum: float = -math.inf, maximum: float = math.inf,
                  include_minimum: bool = True) -> float:
    """Return ``value`` as a finite float in [minimum, maximum] (or (minimum, maximum])."""
    opening = "[" if include_minimum else "("
    allowed = "a finite number" + (f" in {opening}{minimum:g}, {maximum:g}]" if (minimum, maximum) != (-math.inf, math.inf) else "")
    number = float(_number(name, value, allowed))
    if not (math.isfinite(number) and number <= maximum and (number >= minimum if include_minimum else number > minimum)):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return number


def require_probability(name: str, value) -> float:
    """Return ``value`` as a float, or raise if it lies outside [0, 1]."""
    return require_float(name, value, 0.0, 1.0)


def require_positive_float(name: str, value) -> float:
    """Return ``value`` as a float, or raise if it is not a finite number > 0."""
    return require_float(name, value, 0.0, include_minimum=False)


def require_choice(name: str, value, allowed: Iterable):
    """Return the element of ``allowed`` equal to ``value`` (of the same type), or raise."""
    allowed = tuple(allowed)
    for option in allowed:
        if isinstance(value, type(option)) and value == option:
            return option
    raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def require_readout_size(k, neurons: int) -> int:
    """Return the number of readout variables ``k``; it must satisfy 1 <= k <= neurons."""
    try:
        return require_int("k", k, minimum=1, maximum=neurons)
    except ValueError:
        raise ValueError(
            f"k (number of readout variables) must be an integer with 1 <= k <= N = {neurons}, got {k!r}"
        ) from None


def require_shape(name: str, tensor: torch.Tensor, expected: Sequence) -> None:
    """Raise unless ``tensor`` has ``len(expected)`` dimensions and matches every int size.

    ``expected`` holds ints or strings (a string names a free dimension, e.g. ``"T"``).
    """
    layout = "[" + ", ".join(str(size) for size in expected) + "]"
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape {layout}, got {type(tensor).__name__}")
    if tensor.dim() != len(expected) or any(
        isinstance(size, int) and actual != size for actual, size in zip(tensor.shape, expected)
    ):
        raise ValueError(f"{name} must have shape {layout}, got {list(tensor.shape)}")


def require_float_tensor(name: str, tensor, expected: Sequence) -> torch.Tensor:
    """``tensor`` (a tensor, array or nested list) as a floating-point tensor of shape ``expected``
    (see :func:`require_shape`) with no empty dimension; integers and bools become float32."""
    if isinstance(tensor, (np.ndarray, list, tuple)):
        try:
            tensor = torch.as_tensor(np.asarray(tensor))
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"{name} must be a tensor of numbers, got {type(tensor).__name__}") from None
    require_shape(name, tensor, expected)
    if tensor.is_complex():
        raise ValueError(f"{name} must hold real numbers, got {tensor.dtype}")
    if not tensor.is_floating_point():
        tensor = tensor.float()
    if tensor.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {list(tensor.shape)}")
    return tensor


def require_distribution(name: str, table: torch.Tensor, atol: float = 1e-3) -> None:
    """Raise unless every row of ``table`` (last dimension) is a probability distribution: finite,
    non-negative and summing to 1 within ``atol``."""
    if not torch.isfinite(table).all():
        raise ValueError(f"{name} must hold finite probabilities, got NaN or inf")
    if (table < 0).any():
        raise ValueError(f"{name} must hold non-negative probabilities, got a minimum of {table.min().item():g}")
    sums = table.sum(dim=-1, dtype=torch.float64)
    if not torch.allclose(sums, torch.ones_like(sums), atol=atol, rtol=0):
        worst = sums.flatten()[(sums - 1).abs().flatten().argmax()].item()
        raise ValueError(f"each row of {name} must sum to 1, got a row summing to {worst:.6g}")


# Devices ------------------------------------------------------------------------------------------


def available_devices() -> List[str]:
    """The devices this torch can use, as torch names a tensor's device: ``'cpu'``, ``'cuda:0'`` ..."""
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps:0")
    return devices


def _default_index(kind: str) -> int:
    """The index torch gives a tensor made with device ``kind`` alone (e.g. ``"cuda"``)."""
    if kind == "cuda":
        try:
            return torch.cuda.current_device()
        except (AssertionError, RuntimeError):  # no usable CUDA: the device is refused below anyway
            return 0
    return 0


def require_device(device, name: str = "device") -> str:
    """Return ``device`` (a string or ``torch.device``) in the form torch reports for a tensor on it
    (``"cuda"`` becomes ``"cuda:0"``, ``"cpu:0"`` becomes ``"cpu"``), or raise a ValueError that lists
    the devices this torch can use."""
    available = available_devices()
    listing = ", ".join(repr(option) for option in available)
    if isinstance(device, torch.device):
        parsed = device
    elif isinstance(device, str):
        try:
            parsed = torch.device(device.strip())
        except RuntimeError:
            raise ValueError(f"{name} must be one of the devices available here ({listing}), got {device!r}") from None
    else:
        raise ValueError(f"{name} must be a device name such as {listing}, got {type(device).__name__} {device!r}")
    if parsed.type == "cpu":
        return "cpu"
    normalised = f"{parsed.type}:{parsed.index if parsed.index is not None else _default_index(parsed.type)}"
    if normalised not in available:
        reason = ""
        if parsed.type == "cuda":
            reason = (" (this torch is built without CUDA)" if torch.version.cuda is None
                      else " (no such CUDA device here)")
        raise ValueError(f"{name} {device!r} cannot be used by this torch{reason}; devices available: {listing}")
    return normalised


def require_generator(name: str, generator, device: str):
    """Return ``generator``: None or a ``torch.Generator`` for ``device`` (as :func:`require_device` gives it)."""
    if generator is None:
        return None
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"{name} must be a torch.Generator or None, got {type(generator).__name__}")
    if generator.device.type != torch.device(device).type:
        raise ValueError(f"{name} must be a generator on {device}, got one on {generator.device}")
    return generator


# Memory -------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _physical_memory() -> int:
    """Bytes of memory of this machine, or of its container if that has a lower limit."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not POSIX: assume a large machine
        total = 2**40
    try:
        with open("/sys/fs/cgroup/memory.max") as limit:
            text = limit.read().strip()
        if text.isdigit():
            total = min(total, int(text))
    except OSError:
        pass
    return total


def device_memory(device: str) -> int:
    """Bytes of memory of a device given as :func:`require_device` returns it."""
    if device.startswith("cuda:"):
        return torch.cuda.get_device_properties(int(device.split(":")[1])).total_memory
    return _physical_memory()  # the CPU, and Apple's unified memory


def format_bytes(count: int) -> str:
    if count.bit_length() > 1000:  # beyond a float
        return f"about 2**{count.bit_length() - 1} bytes"
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= size:
            return f"{count / size:.3g} {unit}"
    return f"{count} bytes"


def require_memory(what: str, nbytes: int, device: str = "cpu") -> None:
    """Raise a ValueError if ``what`` needs more than the ``device``'s memory (``nbytes`` at least)."""
    total = device_memory(device)
    if nbytes > total:
        raise ValueError(f"{what} needs at least {format_bytes(nbytes)} of memory, more than the "
                         f"{format_bytes(total)} that {device} has")
