"""The notebooks as files: every .md/.ipynb pair in sync, no outputs committed, one parameters cell.

Outputs in the working tree are normal (JupyterLab saves them when a participant runs a notebook):
only the version that git would commit must carry none.
"""

import re
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
SOURCES = sorted(NOTEBOOKS.glob("*.md"))
REQUIRED_PARAMETERS = ("N", "H", "B", "T", "epochs", "k", "learning_rate", "seed", "device")


def cells(notebook):
    return [(cell.cell_type, cell.source.strip(), tuple(cell.metadata.get("tags", []))) for cell in notebook.cells]


def test_there_are_notebooks():
    assert len(SOURCES) >= 4


@pytest.mark.parametrize("source", SOURCES, ids=lambda path: path.name)
def test_pair_is_in_sync(source):
    paired = source.with_suffix(".ipynb")
    assert paired.exists(), f"{paired.name} is missing: run `make notebooks`"
    assert cells(jupytext.read(source)) == cells(jupytext.read(paired)), (
        f"{source.name} and {paired.name} differ: edit the .md, then run `make notebooks`"
    )


def committed_text(path):
    """The file as git would commit it (the index: HEAD unless staged), or None if git does not track it."""
    relative = path.relative_to(ROOT).as_posix()
    try:
        shown = subprocess.run(["git", "show", f":{relative}"], cwd=ROOT, capture_output=True, check=True)
    except FileNotFoundError:
        pytest.skip("git is not installed: the committed notebooks cannot be read")
    except subprocess.CalledProcessError:
        if not (ROOT / ".git").exists():
            pytest.skip("not a git checkout: the committed notebooks cannot be read")
        return None
    return shown.stdout.decode()


@pytest.mark.parametrize("source", SOURCES, ids=lambda path: path.name)
def test_committed_notebook_has_no_outputs(source, tmp_path):
    """nbstripout (the tool that strips them) judges; a notebook saved with outputs in the working
    tree is fine, as long as it is not committed that way."""
    paired = source.with_suffix(".ipynb")
    text = committed_text(paired)
    assert text is not None, f"{paired.name} is not in git: run `make notebooks`, then `git add` it"
    committed = tmp_path / paired.name
    committed.write_text(text)
    verify = subprocess.run(
        [sys.executable, "-m", "nbstripout", "--verify", "--keep-id", str(committed)], capture_output=True, text=True
    )
    assert verify.returncode == 0, (
        f"{paired.name} is staged or committed with outputs (or widget state). Strip them with `make notebooks` "
        f"(jupytext --sync, then nbstripout --keep-id), then `git add {paired.relative_to(ROOT)}`.\n"
        f"{verify.stdout}{verify.stderr}"
    )
    assert nbformat.reads(text, as_version=4).metadata["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("source", SOURCES, ids=lambda path: path.name)
def test_one_parameters_cell_with_the_workshop_parameters(source):
    notebook = jupytext.read(source)
    tagged = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1
    assigned = {line.split("=")[0].strip() for line in tagged[0].source.splitlines() if "=" in line}
    assert set(REQUIRED_PARAMETERS) <= assigned


@pytest.mark.parametrize("source", SOURCES, ids=lambda path: path.name)
def test_install_cell_comes_first_and_only_installs_on_colab(source):
    code = [cell.source for cell in jupytext.read(source).cells if cell.cell_type == "code"]
    assert "google.colab" in code[0] and "pip" in code[0]
    assert any("assert" in cell for cell in code), "each notebook checks what matters with assert cells"


EXERCISES = {int(path.name[:2]): path for path in SOURCES if "_exercise_" in path.name}


def test_exercises_are_numbered_by_their_notebook_everywhere():
    """Exercise N is notebook N, in its title and wherever a notebook or the README names it."""
    for number, source in EXERCISES.items():
        title = next(line for line in source.read_text().splitlines() if line.startswith("# "))
        assert f"Exercise {number}." in title, f"{source.name}: its title should say 'Exercise {number}.'"
    for document in [*SOURCES, ROOT / "README.md"]:
        for number in re.findall(r"\b[Ee]xercises? (\d+)", document.read_text()):
            assert int(number) in EXERCISES, f"{document.name} names exercise {number}; exercises are {sorted(EXERCISES)}"


@pytest.mark.parametrize("source", SOURCES, ids=lambda path: path.name)
def test_images_are_shipped_not_fetched(source):
    """A Markdown image loads offline: it is a file of the repository, not an address on the internet."""
    for address in re.findall(r"!\[[^\]]*\]\(([^)\s]+)", source.read_text()):
        assert "://" not in address, f"{source.name} fetches {address}: ship the image in images/ instead"
        assert (source.parent / address).is_file(), f"{source.name} shows {address}, which does not exist"
