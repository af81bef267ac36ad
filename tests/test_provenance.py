"""Provenance of results files: the commit and whether the code differed from it."""

import subprocess

import pytest

from nimare_mnm.experiments.provenance import provenance


def _git(repo, *args):
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path):
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "code.py").write_text("x = 1\n")
    (tmp_path / "benchmarks" / "results" / "a.json").write_text("{}\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    return tmp_path


def test_rewritten_results_files_do_not_make_the_code_dirty(repo):
    clean = provenance(repo / "pkg")  # asked from a subfolder, as the package does
    assert clean["dirty"] is False and len(clean["commit"]) == 40
    (repo / "benchmarks" / "results" / "a.json").write_text('{"r": 1}\n')
    assert provenance(repo / "pkg")["dirty"] is False
    (repo / "pkg" / "code.py").write_text("x = 2\n")
    assert provenance(repo / "pkg")["dirty"] is True


def test_outside_a_checkout_nothing_is_claimed(tmp_path):
    out = provenance(tmp_path)
    assert out["commit"] is None and out["dirty"] is None and out["date"]
