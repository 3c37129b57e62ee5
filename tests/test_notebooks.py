"""The notebooks as files: every .md/.ipynb pair in sync, no outputs committed, one parameters cell."""

from pathlib import Path

import jupytext
import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
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


@pytest.mark.parametrize("source", SOURCES, ids=lambda path: path.name)
def test_committed_notebook_has_no_outputs(source):
    notebook = nbformat.read(source.with_suffix(".ipynb"), as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]
    assert "widgets" not in notebook.metadata
    assert notebook.metadata["kernelspec"]["name"] == "python3"


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
