"""Every notebook in notebooks/ runs from top to bottom on tiny settings (a real kernel, via nbclient).

Notebooks read ``LIT_SR_NOTEBOOK_SMOKE=1`` (set here) to shrink datasets and training to seconds; the
committed copies hold the outputs (pictures) of a full run.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    monkeypatch.setenv("LIT_SR_NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("LIT_SR_ROOT", str(tmp_path))  # data and outputs of the notebook go to a temp folder
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors
