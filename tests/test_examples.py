"""Run every example of the gallery (examples/NN_topic/NN_plot_*.py) as sphinx-gallery would.

Each example runs in this process (imports and the pretrained model load once for all of
them) from its own folder, with matplotlib's Agg backend. Examples that read the NeuroQuery
files (their source names ``NIMARE_MNM_DATA``) are skipped when the data is absent; the
others use only the pretrained model and always run. How long each takes (the issue asks
for two minutes at most) is measured by ``benchmarks/bench_examples.py``, not here.
"""

import os
import re
import runpy
from pathlib import Path

import pytest
from conftest import DATA_DIR, REPO

# Resolved now: each example runs from its own folder, and CI gives a relative path.
DATA = DATA_DIR.resolve() if DATA_DIR is not None else None
EXAMPLES = sorted((REPO / "examples").glob("[0-9][0-9]_*/[0-9][0-9]_plot_*.py"))


def _needs_data(path: Path) -> bool:
    return "NIMARE_MNM_DATA" in path.read_text(encoding="utf-8")


def test_examples_are_found():
    assert len(EXAMPLES) >= 6
    for path in EXAMPLES:
        assert (path.parent / "README.txt").is_file(), f"{path.parent} lacks a README.txt"
    assert (REPO / "examples" / "README.txt").is_file()


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_example_layout(path):
    """A titled docstring first, then cells split by lines of '#'."""
    source = path.read_text(encoding="utf-8")
    match = re.match(r'r?"""\n(?P<title>[^\n]+)\n(?P<rule>=+)\n', source)
    assert match, f"{path.name} must open with a docstring whose first line is a title"
    assert len(match["rule"]) >= len(match["title"]), f"{path.name}: title underline too short"
    assert re.search(r"^#{79}$", source, flags=re.M), f"{path.name} has no '####' cell blocks"


@pytest.mark.slow
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_example_runs(path, monkeypatch):
    if _needs_data(path):
        if DATA is None:
            pytest.skip("real data absent (set NIMARE_MNM_DATA)")
        monkeypatch.setenv("NIMARE_MNM_DATA", str(DATA))
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", os.environ.get("TOKENIZERS_PARALLELISM", "false"))
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.chdir(path.parent)  # sphinx-gallery runs each example from its folder
    try:
        runpy.run_path(str(path), run_name="__main__")
        n_figures = len(plt.get_fignums())
    finally:
        plt.close("all")
    assert n_figures >= 1, f"{path.name} draws no figure"
