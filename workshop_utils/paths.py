"""Where the workshop keeps its results and images, seen from a notebook or a script."""

from pathlib import Path


def workshop_root(start=None) -> Path:
    """The repository root when run from it or from ``notebooks/``; otherwise (Colab) the working directory."""
    here = Path(start) if start is not None else Path.cwd()
    return here.parent if here.name == "notebooks" else here
