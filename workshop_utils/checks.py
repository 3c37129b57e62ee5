"""Argument checks that fail early with a message naming the parameter and what is allowed."""

from typing import Iterable, Sequence

import torch


def require_positive_int(name: str, value) -> int:
    """Return ``value`` as an int, or raise if it is not an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer (>= 1), got {value!r}")
    return value


def require_non_negative_int(name: str, value) -> int:
    """Return ``value`` as an int, or raise if it is not an integer >= 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return value


def require_probability(name: str, value) -> float:
    """Return ``value`` as a float, or raise if it lies outside [0, 1]."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}") from None
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
    return number


def require_positive_float(name: str, value) -> float:
    """Return ``value`` as a float, or raise if it is not a finite number > 0."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}") from None
    if not number > 0.0 or number == float("inf"):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return number


def require_choice(name: str, value, allowed: Iterable):
    """Return ``value``, or raise if it is not one of ``allowed``."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return value


def require_readout_size(k, neurons: int) -> int:
    """Return the number of readout variables ``k``; it must satisfy 1 <= k <= neurons."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= neurons:
        raise ValueError(
            f"k (number of readout variables) must be an integer with 1 <= k <= N = {neurons}, got {k!r}"
        )
    return k


def require_shape(name: str, tensor: torch.Tensor, expected: Sequence) -> None:
    """Raise unless ``tensor`` has ``len(expected)`` dimensions and matches every non-None size.

    ``expected`` holds ints or strings (a string names a free dimension, e.g. ``"T"``).
    """
    layout = "[" + ", ".join(str(size) for size in expected) + "]"
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape {layout}, got {type(tensor).__name__}")
    if tensor.dim() != len(expected) or any(
        isinstance(size, int) and actual != size for actual, size in zip(tensor.shape, expected)
    ):
        raise ValueError(f"{name} must have shape {layout}, got {list(tensor.shape)}")
