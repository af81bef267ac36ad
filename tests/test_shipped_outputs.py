"""The shipped model's outputs stay what they were when the reference was recorded.

``tests/reference/shipped_outputs.npz`` was written by ``make_shipped_outputs.py`` at the
commit named in ``shipped_outputs.json`` (before the restructure): a change of structure that
alters a map, a level table, a decoded term or a retrieval score fails here. When the
shipped weights change on purpose (a retrained model), the reference is recorded again at
that commit; the test refuses to compare outputs of other weights.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from nimare_mnm.encoder import PRETRAINED_DIR

REFERENCE = Path(__file__).parent / "reference"

pytestmark = pytest.mark.skipif(
    not (PRETRAINED_DIR / "config.json").exists(), reason="pretrained model not built"
)

#: Numerical tolerance: same weights, same arithmetic, possibly another BLAS.
ATOL = 2e-4


def _separated(scores: np.ndarray, gap: float = 1e-4) -> np.ndarray:
    """Positions of a ranked list whose score is apart from both neighbours (no near-tie)."""
    diff = np.abs(np.diff(scores))
    apart = np.r_[True, diff > gap] & np.r_[diff > gap, True]
    return apart


@pytest.fixture(scope="module")
def outputs():
    meta = json.loads((REFERENCE / "shipped_outputs.json").read_text())
    shipped = json.loads((PRETRAINED_DIR / "config.json").read_text())["sha256"]
    if meta["weights_sha256"] != shipped:
        pytest.fail(
            "The shipped weights changed since the reference outputs were recorded "
            f"(at {meta['commit'][:10]}): record them again with "
            "tests/reference/make_shipped_outputs.py at the commit that changes the model."
        )
    sys.path.insert(0, str(REFERENCE))
    try:
        from make_shipped_outputs import shipped_outputs
    finally:
        sys.path.remove(str(REFERENCE))
    reference = dict(np.load(REFERENCE / "shipped_outputs.npz"))
    return reference, shipped_outputs()


@pytest.mark.parametrize(
    "key",
    [
        "z",
        "z_level_yeo7",
        "z_level_subcortical",
        "levels_mean_z",
        "levels_peak_z",
        "radius",
        "confidence",
        "retrieval_scores",
        "decoded_score",
        "decoded_radius",
        "decoded_study_score",
    ],
)
def test_values_unchanged(outputs, key):
    reference, current = outputs
    assert current[key].shape == reference[key].shape
    np.testing.assert_allclose(current[key], reference[key], atol=ATOL, rtol=1e-4)


@pytest.mark.parametrize(
    ("ids", "scores"),
    [
        ("decoded_terms", "decoded_score"),
        ("decoded_study_ids", "decoded_study_score"),
        ("decoded_region", "decoded_score"),
    ],
)
def test_rankings_unchanged(outputs, ids, scores):
    reference, current = outputs
    keep = _separated(reference[scores])
    assert keep.sum() > len(keep) // 2  # the comparison covers most of the list
    np.testing.assert_array_equal(current[ids][keep], reference[ids][keep])


def test_retrieval_and_levels_unchanged(outputs):
    reference, current = outputs
    np.testing.assert_array_equal(current["levels_region"], reference["levels_region"])
    for row in range(len(reference["retrieval_ids"])):
        keep = _separated(reference["retrieval_scores"][row])
        np.testing.assert_array_equal(
            current["retrieval_ids"][row][keep], reference["retrieval_ids"][row][keep]
        )
