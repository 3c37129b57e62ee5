"""The repository's files copied into a temporary directory, and `make` run there as a user runs it.

The tests that run `make run` or `make lab` work in such a copy, so that they never write into the
checkout (results/, images/, notebooks saved by JupyterLab). The copy uses the virtual environment
this test runs in (the one `make install` built), so nothing is installed again.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(sys.prefix)


def repository_files():
    """Tracked files and untracked ones that git does not ignore, relative to the repository root."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT, capture_output=True, check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout (or no git): the repository's files cannot be listed to copy them")
    return [name for name in listed.decode().split("\0") if name and (ROOT / name).is_file()]


def copy_repository(destination: Path) -> Path:
    """Copy the repository's files to ``destination``, keeping their modification times (so that
    `make` finds the virtual environment up to date and the notebook pairs as they are)."""
    if not (VENV / ".installed").exists():
        pytest.skip(f"these tests run `make` with the virtual environment that `make install` built; "
                    f"{VENV} is not one: run them with .venv/bin/python (as `make test` does)")
    for name in repository_files():
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    return destination


def make(copy: Path, *arguments, timeout: float, env=None):
    """Run ``make -C copy VENV=<this venv> arguments...`` to completion; return the CompletedProcess."""
    if shutil.which("make") is None:
        pytest.skip("`make` is not installed")
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(copy), f"VENV={VENV}", *arguments],
        capture_output=True, text=True, timeout=timeout, env=os.environ if env is None else env,
    )
