"""Notebooks run as on Colab, each alone in a fresh runtime and an empty working directory, with the
package importable; and a run that fails its checks replaces no results.

papermill executes the committed ``.ipynb`` (test_notebooks.py checks that it has the cells of its
``.md``) with small parameters: these tests check what the notebooks do with their files, not how
well the recipe trains (nbval runs every notebook at its defaults for that).
"""

from pathlib import Path

import nbformat
import papermill
import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
SOURCES = sorted(NOTEBOOKS.glob("[0-9]*.md"))
READS_RESULTS = [source for source in SOURCES if "load_results(" in source.read_text()]
SAVES_RESULTS = [source for source in SOURCES if "save_results(" in source.read_text()]

# Small runs (seconds). Generous bounds where the run must pass, impossible ones where it must fail.
SMALL = {
    "03_training": dict(N=8, H=64, B=4, T=100, epochs=2),
    "04_evaluation": dict(N=16, H=256, B=16, T=500, epochs=20, long_run_steps=2000, kl_bound=1.0, loss_bound=1.0),
    "05_five_variables": dict(N=8, H=64, B=4, T=100, final_T=200, epochs=2, long_run_steps=500),
}
FAILING_CHECK = {
    "03_training": dict(loss_bound=0.0),
    "04_evaluation": dict(loss_bound=0.0),
    "05_five_variables": dict(kl_bound=0.0),
}
EARLIER_FILES = ("results/stochastic/run.json", "results/stochastic-5/run.json",
                 "images/stochastic_computing.png", "images/stochastic_computing_5.png")


def execute(source: Path, workdir: Path, output: Path, parameters: dict):
    return papermill.execute_notebook(
        str(source.with_suffix(".ipynb")), str(output), parameters=parameters, cwd=str(workdir),
        kernel_name="python3", progress_bar=False,
    )


def printed(notebook) -> str:
    """Everything the notebook's cells printed, displayed as text, or raised."""
    texts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            texts += [output.get("text", ""), output.get("data", {}).get("text/plain", ""), output.get("evalue", "")]
    return "\n".join(texts)


def test_the_notebooks_that_read_results_are_found():
    assert [source.stem for source in READS_RESULTS] == ["04_evaluation"]


@pytest.mark.parametrize("source", READS_RESULTS, ids=lambda path: path.stem)
def test_notebook_runs_alone_in_an_empty_directory(source, tmp_path):
    """Without the results it reads, the notebook trains them itself, says so, and saves them (and its
    figure) in its own working directory."""
    assert source.stem in SMALL, f"add small parameters for {source.stem} to SMALL"
    workdir = tmp_path / "content"  # Colab's working directory, empty
    workdir.mkdir()
    executed = execute(source, workdir, tmp_path / "executed.ipynb", SMALL[source.stem])
    assert "training its recipe here" in printed(executed)
    assert (workdir / "results" / "stochastic" / "run.json").is_file()
    assert (workdir / "images" / "stochastic_computing.png").is_file()


@pytest.mark.parametrize("source", SAVES_RESULTS, ids=lambda path: path.stem)
def test_a_run_that_fails_its_checks_replaces_no_results(source, tmp_path):
    """The issue's case: a short run fails its bound. Earlier results and figures stay as they were,
    byte for byte, and nothing else is saved."""
    assert source.stem in FAILING_CHECK, f"add {source.stem}'s check to FAILING_CHECK (and SMALL)"
    workdir = tmp_path / "content"
    for index, name in enumerate(EARLIER_FILES):
        (workdir / name).parent.mkdir(parents=True, exist_ok=True)
        (workdir / name).write_bytes(f"earlier result {index}".encode())
    before = sorted(path.relative_to(workdir) for path in workdir.rglob("*"))
    output = tmp_path / "executed.ipynb"
    with pytest.raises(papermill.PapermillExecutionError, match="AssertionError"):
        execute(source, workdir, output, {**SMALL[source.stem], **FAILING_CHECK[source.stem]})
    for index, name in enumerate(EARLIER_FILES):
        assert (workdir / name).read_bytes() == f"earlier result {index}".encode(), f"{name} was replaced"
    assert sorted(path.relative_to(workdir) for path in workdir.rglob("*")) == before
    assert "should be below" in printed(nbformat.read(output, as_version=4))
