import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from conftest import make_studyset, requires_data

from nimare_mnm.atlases import load_atlas, load_mask
from nimare_mnm.densities import PeakDensity, study_coordinates
from nimare_mnm.vectorizer import BrainVectorizer, smoothing_operator


def _world(ijk):
    return nib.affines.apply_affine(load_mask().affine, ijk)


def _argmax_xyz(density, values):
    mask = np.asanyarray(load_mask().dataobj) > 0
    return _world(np.argwhere(mask)[int(np.argmax(values))])


def test_density_maximum_lands_on_each_peak():
    peaks = {"s1": [(-40, -20, 50)], "s2": [(24, -4, -20)], "s3": [(0, -52, 26), (40, 20, 0)]}
    dens = PeakDensity(chunk_size=2)  # several chunks
    ids, maps = dens.transform(make_studyset(peaks))
    maps = maps.toarray()
    assert list(ids) == ["s1", "s2", "s3"]
    np.testing.assert_allclose(_argmax_xyz(dens, maps[0]), (-40, -20, 50))
    np.testing.assert_allclose(_argmax_xyz(dens, maps[1]), (24, -4, -20))
    # unit mass per peak: a deep peak keeps all its mass inside the mask
    assert maps[0].sum() == pytest.approx(1.0, abs=1e-4)
    assert maps[2].sum() == pytest.approx(2.0, abs=0.05)
    assert maps.dtype == np.float32 and np.isfinite(maps).all()


def test_density_matches_analytic_gaussian():
    dens = PeakDensity(fwhm=9.0)
    ids, maps = dens.transform(pd.DataFrame({"id": ["a"], "x": [0.0], "y": [-20.0], "z": [20.0]}))
    values = maps.toarray()[0]
    mask = np.asanyarray(load_mask().dataobj) > 0
    xyz = _world(np.argwhere(mask))
    d2 = ((xyz - [0, -20, 20]) ** 2).sum(1)
    sigma = 9.0 / np.sqrt(8 * np.log(2))
    # ratio between the values at 4 mm and at the peak follows the Gaussian
    at0, at4 = values[d2 == 0][0], values[d2 == 16][0]
    assert at4 / at0 == pytest.approx(np.exp(-16 / (2 * sigma**2)), rel=1e-5)
    assert values[d2 > (3 * sigma + 2) ** 2].max() == 0  # truncated support


def test_density_pools_analyses_of_a_study_and_keeps_empty_studies():
    frame = pd.DataFrame(
        {
            "study_id": ["a", "a", "b"],
            "x": [-40.0, 40.0, 0.0],
            "y": [0.0, 0.0, 0.0],
            "z": [40.0, 40.0, 40.0],
        }
    )
    ids, maps = PeakDensity().transform(frame)
    assert maps.shape[0] == 2 and maps[0].sum() == pytest.approx(2.0, abs=1e-3)


def test_density_rejects_bad_input():
    with pytest.raises(ValueError, match="kernel"):
        PeakDensity(kernel="box")
    with pytest.raises(ValueError, match="fwhm"):
        PeakDensity(fwhm=-1)
    bad = pd.DataFrame({"id": ["a"], "x": [np.nan], "y": [0.0], "z": [0.0]})
    with pytest.raises(ValueError, match="NaN"):
        PeakDensity().transform(bad)
    with pytest.raises(ValueError, match="columns"):
        study_coordinates(pd.DataFrame({"id": ["a"], "x": [0.0]}))
    wrong = nib.Nifti1Image(np.ones((10, 10, 10), np.int8), np.eye(4))
    with pytest.raises(ValueError, match="2 mm grid"):
        _ = PeakDensity(mask=wrong).n_voxels


def test_mkda_kernel_option_uses_nimare():
    ss = make_studyset({"s1": [(-40, -20, 50)], "s2": [(24, -4, -20)]})
    ids, maps = PeakDensity(kernel="mkda", r=6).transform(ss)
    maps = maps.toarray()
    assert set(np.unique(maps)) <= {0.0, 1.0}
    n_sphere = maps[0].sum()
    assert 100 < n_sphere < 130  # about 4/3 pi 3^3 voxels of 2 mm
    np.testing.assert_allclose(
        _argmax_xyz(None, maps[1] * (1 + 1e-3 * np.arange(maps.shape[1]) / maps.shape[1])),
        (24, -4, -20),
        atol=6,
    )


@requires_data
def test_default_levels_rebuild_the_shipped_supervoxels(levels, vectorizer):
    """The level specification gives the regions and supervoxels the shipped model has."""
    from nimare_mnm.checkpoint import load_checkpoint
    from nimare_mnm.encoder import PRETRAINED_DIR
    from nimare_mnm.levels import LEVELS

    if not (PRETRAINED_DIR / "config.json").exists():
        pytest.skip("pretrained model not built")
    _, config, arrays = load_checkpoint(PRETRAINED_DIR)
    for level in LEVELS:
        np.testing.assert_array_equal(levels.labels_[level.name], arrays[f"regions.{level.name}"])
        assert levels.names_[level.name] == config["region_names"][level.name]
    np.testing.assert_array_equal(vectorizer.assignment_, arrays["vectorizer.assignment"])


def test_levels_partition_the_mask(levels, data_dir):
    n = int((np.asanyarray(load_mask().dataobj) > 0).sum())
    assert len(levels.names_["yeo7"]) == 7 and len(levels.names_["yeo17"]) == 17
    assert len(levels.names_["subcortical"]) == 15
    for level, labels in levels.labels_.items():
        assert labels.shape == (n,)
        assert labels.max() == len(levels.names_[level]) - 1
        # each voxel in at most one region: region masks are disjoint
        assert levels.region_masks(level).sum(0).max() <= 1
    assert (levels.labels_["whole"] == 0).all()
    cortex7, cortex17 = levels.labels_["yeo7"] >= 0, levels.labels_["yeo17"] >= 0
    sub = levels.labels_["subcortical"] >= 0
    np.testing.assert_array_equal(cortex7, cortex17)
    assert not (cortex7 & sub).any()
    # each Yeo-17 network lies mostly in its Yeo-7 parent (Yeo et al. 2011); the two
    # clusterings are not strictly nested, and SalVentAttnB splits with frontoparietal
    parents = {
        "Vis": "Visual",
        "SomMot": "Somatomotor",
        "DorsAttn": "DorsalAttention",
        "SalVentAttnA": "VentralAttention",
        "Limbic": "Limbic",
        "Cont": "Frontoparietal",
        "Default": "Default",
        "TempPar": "Default",
    }
    for k, name in enumerate(levels.names_["yeo17"]):
        inside = np.bincount(levels.labels_["yeo7"][levels.labels_["yeo17"] == k], minlength=7)
        parent = next((p for key, p in parents.items() if name.startswith(key)), None)
        if parent is not None:
            assert levels.names_["yeo7"][inside.argmax()] == parent, name
    # labels agree with the atlas files where Harvard-Oxford does not override
    img, names = load_atlas("yeo7", data_dir)
    mask = np.asanyarray(load_mask().dataobj) > 0
    raw = np.asanyarray(img.dataobj)[mask] - 1
    np.testing.assert_array_equal(levels.labels_["yeo7"][~sub], raw[~sub])


@requires_data
def test_levels_keep_subcortical_structures(levels):
    mask = np.asanyarray(load_mask().dataobj) > 0
    inv = np.linalg.inv(load_mask().affine)
    index = -np.ones(mask.shape, dtype=int)
    index[mask] = np.arange(mask.sum())
    names = levels.names_["subcortical"]
    for xyz, name in [
        ((-24, -4, -20), "Left_Amygdala"),
        ((12, -18, 8), "Right_Thalamus"),
        ((-26, -22, -12), "Left_Hippocampus"),
        ((-24, 4, 2), "Left_Putamen"),
    ]:
        ijk = np.rint(inv[:3, :3] @ xyz + inv[:3, 3]).astype(int)
        region = levels.labels_["subcortical"][index[tuple(ijk)]]
        assert names[region] == name
        assert levels.labels_["yeo7"][index[tuple(ijk)]] == -1
    # motor cortex is in the somatomotor network
    ijk = np.rint(inv[:3, :3] @ (-38, -22, 56) + inv[:3, 3]).astype(int)
    assert levels.names_["yeo7"][levels.labels_["yeo7"][index[tuple(ijk)]]] == "Somatomotor"


@requires_data
def test_vectorizer_round_trip(vectorizer, levels):
    v = vectorizer
    rng = np.random.default_rng(0)
    # a map constant on each supervoxel is reproduced exactly without smoothing
    vec = rng.random((3, v.n_components_)).astype(np.float32)
    np.testing.assert_allclose(v.transform(v.inverse_transform(vec, smooth=False)), vec, rtol=1e-5)
    # supervoxels never straddle two regions of a level
    for level, labels in levels.labels_.items():
        np.testing.assert_array_equal(v.parcel_level_[level][v.assignment_], labels)
    # density maps are reconstructed well
    peaks = {f"s{i}": rng.uniform([-60, -90, -30], [60, 50, 60], (8, 3)) for i in range(10)}
    _, maps = PeakDensity().transform(make_studyset(peaks))
    maps = maps.toarray()
    rec = v.inverse_transform(v.transform(maps))
    r = [np.corrcoef(a, b)[0, 1] for a, b in zip(maps, rec)]
    assert np.mean(r) > 0.75
    img = v.to_img(v.transform(maps[0]))
    assert img.shape == (91, 109, 91) and np.isfinite(img.get_fdata()).all()
    with pytest.raises(ValueError, match="length"):
        v.inverse_transform(np.zeros((1, 5)))
    with pytest.raises(ValueError, match="NaN"):
        v.inverse_transform(np.full((1, v.n_components_), np.nan))
    with pytest.raises(RuntimeError, match="not fitted"):
        BrainVectorizer().transform(maps)


def test_smoothing_operator_matches_volume_smoothing():
    """The sparse operator equals spreading supervoxels and smoothing the whole volume."""
    from scipy.ndimage import gaussian_filter

    mask = np.asanyarray(load_mask().dataobj) > 0
    _, assignment = np.unique(np.argwhere(mask) // 4, axis=0, return_inverse=True)
    assignment = assignment.ravel()
    n = int(assignment.max()) + 1
    operator = smoothing_operator(assignment, n, fwhm=6.0)
    assert operator.shape == (mask.sum(), n)
    vectors = np.random.default_rng(0).standard_normal((2, n)).astype(np.float32)
    maps = vectors @ operator.T
    sigma = 6.0 / np.sqrt(8 * np.log(2)) / 2.0
    weight = gaussian_filter(mask.astype(np.float64), sigma, mode="constant", truncate=3.0)
    for vector, smoothed in zip(vectors, maps):
        volume = np.zeros(mask.shape)
        volume[mask] = vector[assignment]
        volume = gaussian_filter(volume, sigma, mode="constant", truncate=3.0)
        np.testing.assert_allclose(smoothed, volume[mask] / weight[mask], rtol=1e-4, atol=1e-5)


def test_missing_atlas_is_a_clear_error(tmp_path, monkeypatch):
    import nimare_mnm.atlases as atlases

    def offline(name):
        raise OSError("no network")

    monkeypatch.setattr(atlases, "_nilearn_atlas", offline)
    with pytest.raises(FileNotFoundError, match="yeo7.*not found"):
        load_atlas("yeo7", tmp_path)
    # Training says why it needs them and where they go.
    from conftest import make_studyset

    from nimare_mnm import MNMEncoder

    monkeypatch.delenv("NIMARE_MNM_DATA", raising=False)
    studies = make_studyset({"s1": [(0, 0, 0)], "s2": [(10, 10, 10)]}, abstracts=["a", "b"])
    with pytest.raises(FileNotFoundError, match="Training needs the atlases.*atlases/ subfolder"):
        MNMEncoder(data_dir=str(tmp_path), device="cpu").fit(studies)


@requires_data
def test_real_corpus_density_vectors(neuroquery, vectorizer):
    sub = neuroquery.slice(ids=np.asarray(neuroquery.ids)[:200])
    ids, vectors = PeakDensity().transform(sub, reduce=vectorizer.transform)
    assert vectors.shape == (200, vectorizer.n_components_)
    assert np.isfinite(vectors).all() and (vectors.sum(1) > 0).all()


def test_vectorizer_accepts_sparse_maps(vectorizer):
    import numpy as np
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    dense = rng.random((3, len(vectorizer.assignment_))).astype(np.float32)
    np.testing.assert_allclose(
        vectorizer.transform(sp.csr_matrix(dense)), vectorizer.transform(dense), rtol=1e-5
    )
