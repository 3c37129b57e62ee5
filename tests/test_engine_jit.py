"""numba's on-disk cache never breaks the fast path, and a missing numba is reported with its cost and fix.

Each case runs in a fresh Python process, because the kernels are decorated when the package is
imported and compiled at the first call: that is where a missing cache location used to raise
("cannot cache function '_cutoff': no locator available"), which killed ``import workshop_utils``
or the first training step.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# trains two epochs of a small network and reports what happened, as JSON on the last line
TRAIN = """
import json, warnings
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    import workshop_utils as wu
    config = wu.ExperimentConfig(neurons=8, input_features=16, batch_size=4, timesteps=50, epochs=2, k=2)
    result = wu.train(config, p_target=[0.1, 0.2, 0.3, 0.4], progress=False)
    trace = result.model.trace(wu.poisson_input(0.3, 10, 2, 16))
print(json.dumps(dict(
    fast=wu.engine.fast_path_available(), backward=type(trace.rho.grad_fn).__name__,
    losses=result.losses, warnings=[str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)])))
"""


def run(code: str, env: dict, cwd: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def environment(**changes) -> dict:
    env = {key: value for key, value in os.environ.items() if not key.startswith("NUMBA_")}
    env.update(changes)
    return env


def cache_warnings(report: dict) -> list:
    return [message for message in report["warnings"] if "on-disk cache" in message]


def test_without_any_cache_location_the_kernels_compile_in_memory(tmp_path):
    """The package copied where numba finds no writable place: ``__pycache__`` cannot be created
    beside the source (a file of that name is in the way, as a read-only install would be to
    another user) and the home directory cannot be written (it lies under /proc). Importing and
    training work on the fast path, with one warning that says how to keep a cache."""
    copy = tmp_path / "site"
    shutil.copytree(ROOT / "workshop_utils", copy / "workshop_utils", ignore=shutil.ignore_patterns("__pycache__"))
    for package in (copy / "workshop_utils", copy / "workshop_utils" / "engine"):
        (package / "__pycache__").write_text("not a directory")
    home = "/proc/no-home-here"
    report = run(TRAIN, environment(HOME=home, PYTHONPATH=str(copy), PYTHONDONTWRITEBYTECODE="1",
                                    XDG_CACHE_HOME=f"{home}/.cache"), cwd=tmp_path)
    assert report["fast"] and report["backward"] == "_LIFRefracNumbaBackward"
    assert len(cache_warnings(report)) == 1 and "NUMBA_CACHE_DIR" in cache_warnings(report)[0]
    assert not [message for message in report["warnings"] if "Norse's loop" in message]
    assert all(loss == loss for loss in report["losses"])  # finite numbers came out


def test_a_cache_that_cannot_be_written_is_given_up(tmp_path):
    """numba finds a cache directory, but saving into it fails at the first compilation (a full
    disk, a permission changed meanwhile): the kernels compile without it, with one warning."""
    code = ("import numba.core.caching as caching\n"
            "def refuse(self, key, data):\n"
            "    raise OSError(28, 'No space left on device')\n"
            "caching.IndexDataCacheFile.save = refuse\n") + TRAIN
    report = run(code, environment(NUMBA_CACHE_DIR=str(tmp_path / "cache")), cwd=tmp_path)
    assert report["fast"] and report["backward"] == "_LIFRefracNumbaBackward"
    assert len(cache_warnings(report)) == 1 and "No space left" in cache_warnings(report)[0]


def test_without_numba_the_warning_says_what_it_costs_and_how_to_fix_it(tmp_path):
    code = "import sys\nsys.modules['numba'] = None  # import numba raises ImportError\n" + TRAIN
    report = run(code, environment(), cwd=ROOT)
    assert not report["fast"] and report["backward"] != "_LIFRefracNumbaBackward"
    fallbacks = [message for message in report["warnings"] if "Norse's loop" in message]
    assert len(fallbacks) == 1
    assert "numba cannot be imported" in fallbacks[0] and "slower" in fallbacks[0]
    assert "pip install numba" in fallbacks[0]
