"""Where the workshop keeps its results and images, seen from a notebook or a script."""

import os
from pathlib import Path


def workshop_root(start=None) -> Path:
    """The repository root when run from it or from ``notebooks/``; otherwise (Colab) the working directory."""
    if start is not None and (not isinstance(start, (str, os.PathLike)) or not str(start).strip()):
        raise ValueError(f"start must be None or a directory path, got {start!r}")
    here = Path(start) if start is not None else Path.cwd()
    return here.parent if here.name == "notebooks" else here


def current_umask() -> int:
    """The process's file-creation mask (files made by tempfile are private until chmod-ed with it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask
