"""Shared fixtures: the real-data tier and small synthetic studysets."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _data_dir():
    candidates = [os.environ.get("NIMARE_MNM_DATA"), REPO.parent / "shared" / "data"]
    for cand in candidates:
        if cand and (Path(cand) / "neuroquery").is_dir():
            return Path(cand)
    return None


DATA_DIR = _data_dir()
requires_data = pytest.mark.skipif(
    DATA_DIR is None,
    reason="real data absent: set NIMARE_MNM_DATA to a folder with neuroquery/, neurosynth/ "
    "and atlases/ (../shared/data in this project)",
)


@pytest.fixture(scope="session")
def data_dir():
    if DATA_DIR is None:
        pytest.skip("real data absent (set NIMARE_MNM_DATA)")
    return DATA_DIR


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("nimare_mnm_cache")


@pytest.fixture(scope="session")
def neuroquery(data_dir, cache_dir):
    from nimare_mnm import load_neuroquery

    return load_neuroquery(data_dir, cache_dir=cache_dir)


@pytest.fixture(scope="session")
def levels(data_dir):
    from nimare_mnm.atlases import BrainLevels

    return BrainLevels(data_dir).fit()


@pytest.fixture(scope="session")
def vectorizer(data_dir, levels):
    from nimare_mnm.vectorizer import BrainVectorizer

    return BrainVectorizer(data_dir=data_dir).fit(levels)


def make_studyset(peaks_by_study, texts=None, abstracts=None):
    """A NIMADS Studyset with one analysis per study and the given peaks (MNI mm)."""
    from nimare.nimads import Studyset

    studies = []
    for i, (sid, peaks) in enumerate(peaks_by_study.items()):
        study = {
            "id": sid,
            "name": f"Study {sid}",
            "analyses": [
                {
                    "id": f"{sid}a",
                    "name": "contrast",
                    "points": [
                        {"coordinates": list(map(float, p)), "space": "MNI"} for p in peaks
                    ],
                }
            ],
        }
        if abstracts is not None:
            study["description"] = abstracts[i]
        studies.append(study)
    return Studyset({"id": "synthetic", "name": "synthetic", "studies": studies})


@pytest.fixture(scope="session")
def pretrained_decoder():
    """The shipped model, loaded once for the tests that only read it."""
    from nimare_mnm import MNMDecoder

    return MNMDecoder.load_pretrained(device="cpu")
