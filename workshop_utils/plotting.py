"""Figures of the workshop: the target distribution and the three-panel result figure."""

import math
import numbers
import os
from pathlib import Path
from typing import Optional, Sequence, Tuple

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.collections import PatchCollection
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .checks import (
    require_distribution,
    require_float,
    require_float_tensor,
    require_int,
    require_non_negative_int,
    require_positive_float,
    require_readout_size,
)
from .distribution import state_labels
from .paths import replace_file

TRACE_SPACING = 1.2  # vertical offset between the membrane traces of panel A

STYLE = {
    "axes.spines.right": False,
    "axes.spines.top": False,
    "legend.frameon": False,
}


def _axes(ax) -> Axes:
    if not isinstance(ax, Axes):
        raise ValueError(f"ax must be a matplotlib Axes (e.g. from plt.subplots()), got {type(ax).__name__}")
    return ax


def _array(name: str, values, layout) -> np.ndarray:
    """``values`` (tensor, array or list) as a float numpy array of the given layout, finite."""
    values = require_float_tensor(name, values.detach() if isinstance(values, torch.Tensor) else values, layout)
    if not torch.isfinite(values).all():
        raise ValueError(f"{name} must be finite, got NaN or inf")
    return values.cpu().numpy()


def _table(name: str, values, layout=("B", "2**k"), batch_optional: bool = True) -> np.ndarray:
    """Distributions over 2**k states of the given layout; ``[2**k]`` is also taken for ``[B, 2**k]``
    where ``batch_optional``."""
    dims = values.dim() if isinstance(values, torch.Tensor) else np.ndim(values)
    table = _array(name, values, ("2**k",) if dims == 1 and batch_optional else layout)
    states = table.shape[-1]
    if states < 2 or states & (states - 1):
        raise ValueError(f"{name} must have 2**k states (2, 4, 8 ...), got {states}")
    require_distribution(name, torch.from_numpy(table))
    return table


def _states_axis(ax, states: int) -> np.ndarray:
    positions = np.arange(states)
    k = int(np.log2(states))
    ax.set_xticks(positions)
    ax.set_xticklabels(state_labels(k), rotation=90, fontsize="small" if k > 3 else None)
    ax.set_ylabel("$p(z)$")
    ax.set_xlabel("$z = (z_1 \\dots z_k)$")
    return positions


def target_plot(ax, p_target, width: float = 0.35) -> None:
    """Bars of the target distribution ``[B, 2**k]`` (row 0) or ``[2**k]``."""
    ax, width = _axes(ax), require_positive_float("width", width)
    p_target = _table("p_target", p_target)
    p_target = p_target[0] if p_target.ndim == 2 else p_target
    positions = _states_axis(ax, p_target.shape[0])
    ax.bar(positions, p_target, width, label="$p_t$", color="C1")
    ax.legend(loc="upper right")


def refractory_intervals(states: np.ndarray):
    """(start, length) of every run of ones in a 0/1 sequence ``[T]``."""
    states = _array("states", states, ("T",))
    padded = np.concatenate([[0], (states > 0.5).astype(np.int8), [0]])
    edges = np.diff(padded)
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return list(zip(starts, stops - starts))


def sampling_panel(ax, refractory, voltages, k: int, window: Tuple[int, int] = (200, 400), chain: int = 0):
    """Membrane traces of the k readout neurons with their refractory periods shaded.

    ``refractory`` and ``voltages`` are ``[T, B, N]``; the window is clipped to T.
    """
    ax = _axes(ax)
    refractory = _array("refractory", refractory, ("T", "B", "N"))
    voltages = _array("voltages", voltages, refractory.shape)
    k = require_readout_size(k, refractory.shape[2])
    chain = require_int("chain", chain, minimum=0, maximum=refractory.shape[1] - 1)
    if not isinstance(window, (tuple, list)) or len(window) != 2:
        raise ValueError(f"window must be (start, stop) in time steps, got {window!r}")
    window = (require_non_negative_int("window start", window[0]), require_non_negative_int("window stop", window[1]))
    if window[0] >= window[1]:
        raise ValueError(f"window must be (start, stop) with start < stop, got {window}")
    start = min(window[0], max(refractory.shape[0] - 1, 0))
    stop = min(window[1], refractory.shape[0])
    time = np.arange(start, stop)
    rectangles = []
    for j in range(k):
        offset = j * TRACE_SPACING
        for begin, length in refractory_intervals(refractory[start:stop, chain, j]):
            rectangles.append(Rectangle((start + begin - 0.5, offset), length, 1.0))
        ax.plot(time, voltages[start:stop, chain, j] + offset, color=f"C{j}", linewidth=1)
    ax.add_collection(PatchCollection(rectangles, facecolor="black", alpha=0.2, edgecolor="none"))
    ax.set_yticks(TRACE_SPACING * np.arange(k) + 0.5)
    ax.set_yticklabels([f"$z_{j + 1}$" for j in range(k)])
    ax.spines["left"].set_visible(False)
    ax.set_xlim(start, stop)
    ax.set_xlabel("t [ms]")
    ax.set_ylabel("readout neuron")
    ax.set_title("membrane voltage, refractory periods shaded ($z_j = 1$)", fontsize="medium")


def probability_panel(ax, p_sampled, p_target, p_long_run=None, width: float = 0.35):
    """Sampled distribution ``[B, 2**k]`` (mean, whiskers min..max over the B chains) next to the target."""
    ax, width = _axes(ax), require_positive_float("width", width)
    p_sampled = _table("p_sampled", p_sampled, batch_optional=False)
    p_target = _table("p_target", p_target)
    if p_long_run is not None:
        p_long_run = _table("p_long_run", p_long_run, ("2**k",))
    for name, table in (("p_target", p_target), ("p_long_run", p_long_run)):
        if table is not None and table.shape[-1] != p_sampled.shape[-1]:
            raise ValueError(f"{name} must have the {p_sampled.shape[-1]} states of p_sampled, got {table.shape[-1]}")
    bars = 3 if p_long_run is not None else 2
    width = min(width, 0.8 / bars)
    positions = _states_axis(ax, p_target.shape[-1])
    mean, low, high = p_sampled.mean(axis=0), p_sampled.min(axis=0), p_sampled.max(axis=0)
    offsets = (np.arange(bars) - (bars - 1) / 2) * width
    ax.bar(positions + offsets[0], mean, width, label="$p_s$ (last epoch, min–max over chains)", color="C0")
    ax.errorbar(positions + offsets[0], mean, yerr=[mean - low, high - mean], fmt="none", ecolor="black", capsize=2)
    target = p_target[0] if p_target.ndim == 2 else p_target
    ax.bar(positions + offsets[1], target, width, label="$p_t$ (target)", color="C1")
    if p_long_run is not None:
        ax.bar(positions + offsets[2], p_long_run, width, label="$p_s$ (long run)", color="C2")
    tallest = max(float(high.max()), float(target.max()), 0.0 if p_long_run is None else float(p_long_run.max()))
    if math.isfinite(tallest) and tallest > 0:
        ax.set_ylim(0.0, 1.45 * tallest)  # room above the bars for the legend
    ax.legend(loc="upper right", fontsize="small")


def loss_panel(ax, losses: Sequence[float], noise_floor: Optional[float] = None):
    """The training loss ``[epochs]`` on a log scale, with the noise floor (None or NaN: not measured)."""
    ax = _axes(ax)
    losses = _array("losses", losses, ("epochs",))
    if isinstance(noise_floor, numbers.Real) and not isinstance(noise_floor, bool) and math.isnan(noise_floor):
        noise_floor = None  # not measured (evaluate_fidelity with noise_chains=0)
    if noise_floor is not None:
        noise_floor = require_float("noise_floor", noise_floor, 0.0)
    ax.semilogy(np.arange(1, len(losses) + 1), losses, label="training loss")
    if noise_floor is not None:
        ax.axhline(noise_floor, color="gray", linestyle="--", label=f"noise floor of a T-step sample ({noise_floor:.3f})")
        ax.legend(loc="upper right", fontsize="small")
    ax.set_ylabel("$KL(p_t \\,\\|\\, p_s)$")
    ax.set_xlabel("epoch")


def figure_stochastic_computing(
    p_sampled, p_target, losses, refractory, voltages, window=(200, 400), chain=0, p_long_run=None, noise_floor=None
):
    """The three-panel result figure: A traces, B distributions, C loss. Returns the figure.

    Shapes as in the panels: ``p_sampled`` ``[B, 2**k]``, ``p_target`` ``[B, 2**k]`` or ``[2**k]``,
    ``losses`` ``[epochs]``, ``refractory`` and ``voltages`` ``[T, B, N]``; every argument is checked
    before a figure is made."""
    states = _table("p_target", p_target).shape[-1]
    k = int(np.log2(states))
    with plt.rc_context(STYLE):
        fig = plt.figure(constrained_layout=True, figsize=(7, 9 + max(0, k - 3)))
        grid = fig.add_gridspec(nrows=3, ncols=1, height_ratios=[1 + 0.2 * k, 1, 1])
        axes = [fig.add_subplot(grid[row, 0]) for row in range(3)]
        sampling_panel(axes[0], refractory, voltages, k, window, chain)
        probability_panel(axes[1], p_sampled, p_target, p_long_run)
        loss_panel(axes[2], losses, noise_floor)
        for ax, letter in zip(axes, "ABC"):
            ax.text(-0.1, 1.05, letter, transform=ax.transAxes, size="large", weight="bold")
    return fig


def save_figure(fig, path, dpi: int = 150) -> Path:
    """Save ``fig`` as a whole: written to a temporary file, then renamed over ``path``, whose suffix
    names a format matplotlib writes (``.png``, ``.pdf``, ``.svg`` ...)."""
    if not isinstance(fig, Figure):
        raise ValueError(f"fig must be a matplotlib Figure, got {type(fig).__name__}")
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise ValueError(f"path must be a non-empty file path, got {path!r}")
    path = Path(path)
    formats = fig.canvas.get_supported_filetypes()
    if path.suffix[1:].lower() not in formats:
        raise ValueError(f"path must end in one of {sorted('.' + name for name in formats)}, got {str(path)!r}")
    if path.is_dir():
        raise ValueError(f"path {str(path)!r} is a directory, not a file")
    dpi = require_positive_float("dpi", dpi)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the temporary file ends in the suffix too: matplotlib chooses the format by it
    return replace_file(path, lambda name: fig.savefig(name, dpi=dpi, bbox_inches="tight"), suffix=path.suffix)
