import copy
import pickle

import numpy as np
import pytest

from nimare_mnm.results import LevelMaps


@pytest.fixture
def maps():
    z = np.array([1.0, 2.0, 3.0, -1.0, 5.0, 5.0, 0.5], dtype=np.float32)
    labels = np.array([0, 0, 0, 1, 2, 2, -1])
    mean = np.array([z[labels == r].mean() for r in range(3)])
    sd = np.array([z[labels == r].std() for r in range(3)])
    return LevelMaps(z, {"net": (labels, mean, sd)}), z, labels


def test_level_map_is_computed_on_first_read(maps):
    lazy, z, labels = maps
    assert list(lazy) == ["z", "z_level-net"] and len(lazy) == 2
    assert "not computed" in repr(lazy)
    out = lazy["z_level-net"]
    expected = [-1.2247449, 0.0, 1.2247449, 0.0, 0.0, 0.0, 0.0]  # one-voxel and flat -> 0
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert out.dtype == np.float32
    assert lazy["z_level-net"] is out  # kept, not recomputed
    assert "not computed" not in repr(lazy)
    assert lazy.get("missing") is None and "z_level-net" in lazy


def test_assignment_deletion_and_copies(maps):
    lazy, z, _ = maps
    for clone in (copy.deepcopy(lazy), pickle.loads(pickle.dumps(lazy))):
        assert type(clone) is dict and list(clone) == ["z", "z_level-net"]
        np.testing.assert_array_equal(clone["z"], z)
    lazy["z_level-net"] = None  # NiMARE may blank a map
    assert lazy["z_level-net"] is None
    lazy.update({"extra": z})
    del lazy["z_level-net"]
    assert list(lazy) == ["z", "extra"]
    with pytest.raises(KeyError):
        lazy["z_level-net"]
