"""Where the workshop keeps its results and images, seen from a notebook or a script."""

import os
import tempfile
from pathlib import Path
from typing import Callable


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


def replace_file(path: Path, write: Callable[[str], None], suffix: str = "") -> Path:
    """Write ``path`` as a whole: ``write(name)`` fills a temporary file beside it (named
    ``.<path's name>.XXXX<suffix>``), which is then flushed to disk and renamed onto ``path``
    (``os.replace``), so a reader finds the old file or the new one, never part of one. The new file
    gets the permissions the umask gives (tempfile makes it private). If anything fails, ``path`` is
    left as it was and the temporary file is removed."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(handle)
    try:
        write(temporary)
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.chmod(temporary, 0o666 & ~current_umask())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
