"""Runs every notebook top to bottom, with tiny settings."""

import os
import pathlib
import sys

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((pathlib.Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))
TINY = {
    "LSTM_STN_NB_TRAIN_SIZE": "200",
    "LSTM_STN_NB_EVAL_SIZE": "100",
    "LSTM_STN_NB_EPOCHS": "1",
    "TF_CPP_MIN_LOG_LEVEL": "2",
}


def test_notebooks_are_committed_without_outputs():
    assert NOTEBOOKS
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{path.name} has outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_runs(path, tmp_path, monkeypatch):
    for name, value in TINY.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # where the notebooks write their figures
    # The kernel spec starts `python`: make that this interpreter (and its packages).
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    notebook = nbformat.read(path, as_version=4)
    # The notebook's own folder is the working directory, as in Jupyter.
    client = NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()
