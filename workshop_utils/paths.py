"""Where the workshop keeps its results and images, seen from a notebook or a script."""

import os
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

try:
    import fcntl
except ImportError:  # not POSIX (Windows): no locks, one writer at a time is then the user's job
    fcntl = None


def workshop_root(start=None) -> Path:
    """The repository root when run from it or from ``notebooks/``; otherwise (Colab) the working directory."""
    if start is not None and (not isinstance(start, (str, os.PathLike)) or not str(start).strip()):
        raise ValueError(f"start must be None or a directory path, got {start!r}")
    here = Path(start) if start is not None else Path.cwd()
    return here.parent if here.name == "notebooks" else here


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's file-creation mask (files made by tempfile are private until chmod-ed with it).

    Read from /proc/self/status where Linux gives it: setting the mask to read it (``os.umask``)
    would, for that moment, let files that other threads create come out world-writable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:  # elsewhere: set and restore it, at least one thread of ours at a time
        mask = os.umask(0o077)  # 077 while it is changed: at worst too private, never too open
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


@contextmanager
def file_lock(path: Path, wait: bool = True):
    """Holds an exclusive lock on the file ``path`` (created if missing) for the ``with`` block; the
    system releases it if the process dies. ``wait=False``: raises ``BlockingIOError`` at once if
    another process holds it. Without ``fcntl`` (not POSIX) it locks nothing."""
    if fcntl is None:
        yield
        return
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield
