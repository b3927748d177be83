"""The notebooks (issue 24): committed without outputs, and run top to bottom in a kernel
started in notebooks/, as Jupyter starts it."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from taxi_model import SAMPLE_DATA_VARIABLE

NOTEBOOKS = Path(__file__).resolve().parents[1]
EDA = NOTEBOOKS / "eda.ipynb"
# CI's budget for one run of a notebook, all cells together.
BUDGET_S = 120


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_committed_without_outputs(path: Path) -> None:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    run = [
        i
        for i, cell in enumerate(cells)
        if cell["cell_type"] == "code" and (cell["outputs"] or cell["execution_count"] is not None)
    ]
    assert not run, (
        f"{path.name}: code cells {run} have outputs or an execution count; clear them "
        "(Jupyter: Edit > Clear Outputs of All Cells) before committing"
    )


def execute(path: Path) -> tuple[nbformat.NotebookNode, float]:
    """Run every cell in a kernel started in the notebook's folder; raises CellExecutionError,
    with the cell and its traceback, if one fails."""
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=BUDGET_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    started = time.perf_counter()
    client.execute()
    return notebook, time.perf_counter() - started


def printed(notebook: nbformat.NotebookNode) -> str:
    return "".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "stream"
    )


def figures(notebook: nbformat.NotebookNode) -> int:
    return sum(
        "image/png" in output.get("data", {})
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )


@pytest.mark.slow
def test_eda_runs_in_this_checkout() -> None:
    """On what this checkout has: data/train.csv or the real sample, and models/'s model."""
    notebook, seconds = execute(EDA)
    print(f"{EDA.name} in this checkout: {seconds:.1f} s")
    text = printed(notebook)
    assert "Data: " in text, "the notebook must say which trips it loaded"
    assert "Model: " in text, "the notebook must say which model it analysed"
    assert figures(notebook) == 8
    assert seconds < BUDGET_S, f"{EDA.name} took {seconds:.0f} s, over CI's {BUDGET_S} s"


@pytest.mark.slow
def test_eda_runs_in_a_clean_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As from a fresh clone without Kaggle's data, the sample or a trained model: on synthetic
    trips, with a model trained in the notebook. The notebook finds the repository by its
    pyproject.toml and libs/taxi_model/."""
    monkeypatch.delenv(SAMPLE_DATA_VARIABLE, raising=False)
    # As a user's shell may have it, and as importing streamlit leaves it in this process: the
    # notebook shows its figures inline all the same.
    monkeypatch.setenv("MPLBACKEND", "Agg")
    checkout = tmp_path / "ML-taxi"
    (checkout / "libs" / "taxi_model").mkdir(parents=True)
    (checkout / "notebooks").mkdir()
    shutil.copy(NOTEBOOKS.parent / "pyproject.toml", checkout)
    notebook, seconds = execute(Path(shutil.copy(EDA, checkout / "notebooks")))
    print(f"{EDA.name} in a clean checkout: {seconds:.1f} s")
    text = printed(notebook)
    assert "Data: synthetic trips" in text
    assert "Model: trained here" in text
    assert figures(notebook) == 8
    assert seconds < BUDGET_S, f"{EDA.name} took {seconds:.0f} s, over CI's {BUDGET_S} s"
