"""`make run` as an instructor runs it, in a copy of the repository: the executed notebooks hold their
figures and the training's final progress bar, and a `.md` edited without `make notebooks` is what
runs. Also checks the notebooks that a full `make run` left in results/executed/, if any.

Small parameters: these tests check what the outputs hold, not how well the recipe trains.
"""

import re

import nbformat
import pytest

from repository_copy import ROOT, copy_repository, make

RUN = ("01_neuron_model", "03_training")
PARAMS = "-p T 200 -p H 256 -p epochs 5 -p loss_bound 1"  # loss_bound: 5 epochs do not reach 0.05
EDIT = 'print("edited after the last make notebooks")'


def shows_a_figure(cell) -> bool:
    return cell.cell_type == "code" and "plt.show()" in cell.source


def images(cell) -> int:
    return sum("image/png" in output.get("data", {}) for output in cell.get("outputs", []))


def texts(cell) -> str:
    return "\n".join(output.get("text", "") + output.get("data", {}).get("text/plain", "")
                     for output in cell.get("outputs", []))


def failed(notebook) -> bool:
    return any(output.output_type == "error" for cell in notebook.cells for output in cell.get("outputs", []))


@pytest.fixture(scope="module")
def make_run(tmp_path_factory):
    """`make run` on notebooks 1 and 3 after an edit of notebook 1's .md that its .ipynb lacks."""
    copy = copy_repository(tmp_path_factory.mktemp("repository"))
    source = copy / "notebooks" / "01_neuron_model.md"
    source.write_text(source.read_text() + f"\n```python\n{EDIT}\n```\n")
    notebooks = " ".join(f"notebooks/{name}.md" for name in RUN)
    run = make(copy, "run", f"NOTEBOOKS={notebooks}", f"PARAMS={PARAMS}", timeout=900)
    assert run.returncode == 0, f"make run failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    executed = {name: nbformat.read(copy / "results" / "executed" / f"{name}.ipynb", as_version=4) for name in RUN}
    return executed, run.stdout + run.stderr


@pytest.mark.parametrize("name", RUN)
def test_make_run_keeps_every_figure(make_run, name):
    """Every cell that shows a figure holds it as a PNG (not `<Figure size ...>` under the Agg backend)."""
    notebook = make_run[0][name]
    cells = [cell for cell in notebook.cells if shows_a_figure(cell)]
    assert cells, f"{name} should show a figure"
    for cell in cells:
        assert images(cell) >= 1, f"{name}: no figure in the output of\n{cell.source[:200]}"


def test_make_run_keeps_the_final_progress_bar(make_run):
    """The training cell of notebook 3 shows the bar as it ended, `100% ... 5/5`, not the widget's first
    text `0%| | 0/5`, and no notebook warns that ipywidgets is missing."""
    notebook = make_run[0]["03_training"]
    training = next(cell for cell in notebook.cells if "wu.train(config" in cell.source)
    output = texts(training)
    assert "100%" in output and "5/5" in output, output
    assert not re.search(r"(?<![\d.])0/5\b", output), output
    for executed in make_run[0].values():
        assert "IProgress not found" not in "\n".join(texts(cell) for cell in executed.cells)


def test_make_run_brings_the_ipynb_up_to_date_first(make_run):
    """The .md was edited after `make notebooks`: `make run` says it updates the twin and runs the edit."""
    executed, log = make_run
    assert "Updating notebooks/01_neuron_model.ipynb" in log, log[-2000:]
    assert any(EDIT in cell.source and "edited after" in texts(cell) for cell in executed["01_neuron_model"].cells)


FULL_RUN = sorted((ROOT / "results" / "executed").glob("[0-9]*.ipynb"))


@pytest.mark.parametrize("path", FULL_RUN or [None], ids=lambda path: path.name if path else "none")
def test_a_full_make_run_kept_its_figures(path):
    """The notebooks of the last full `make run` here (if any) hold their figures."""
    if path is None:
        pytest.skip("results/executed/ holds no notebooks: `make run` has not run in this checkout")
    notebook = nbformat.read(path, as_version=4)
    if failed(notebook):
        pytest.skip(f"{path.name} stopped with an error in that run, so its later cells have no outputs")
    for cell in filter(shows_a_figure, notebook.cells):
        assert images(cell) >= 1, f"{path.name}: no figure in the output of\n{cell.source[:200]}\n(rerun `make run`)"
