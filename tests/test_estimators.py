"""MNMEncoder and MNMDecoder: NiMARE estimator contract, bad input, pretrained model, retrieval."""

import json
import logging
import shutil
import warnings

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from conftest import requires_data
from sklearn.exceptions import NotFittedError

from nimare_mnm import MNMDecoder, MNMEncoder
from nimare_mnm.atlases import load_mask
from nimare_mnm.decoder import load_brain_image
from nimare_mnm.encoder import PRETRAINED_DIR
from nimare_mnm.experiments.textbook import TEXTBOOK, textbook_hits
from nimare_mnm.text import validate_texts

has_pretrained = pytest.mark.skipif(
    not (PRETRAINED_DIR / "config.json").exists(), reason="pretrained model not built"
)

#: A decoded term is a motor term when it contains one of these.
MOTOR_WORDS = ("motor", "movement", "finger", "hand", "tapping", "grip", "precentral")


# ------------------------------------------------------------------ no data, no model
def test_validate_texts():
    assert validate_texts("memory") == (["memory"], True)
    assert validate_texts(["a", "b"]) == (["a", "b"], False)
    with pytest.raises(ValueError, match="empty or only whitespace"):
        validate_texts("   ")
    with pytest.raises(ValueError, match="No text"):
        validate_texts([])
    with pytest.raises(TypeError, match="Text 1 is a int"):
        validate_texts(["memory", 3])
    with pytest.raises(TypeError, match="string"):
        validate_texts(None)


def test_params_contract():
    from sklearn.base import clone

    enc = MNMEncoder(epochs=3, preset="clip")
    params = enc.get_params()
    assert params["epochs"] == 3 and params["preset"] == "clip"
    other = clone(enc)
    assert other is not enc and other.get_params() == params
    enc.set_params(seed=5)
    assert enc.seed == 5 and other.seed == 0
    assert "epochs=3" in repr(enc)
    with pytest.raises(ValueError, match="Invalid parameter"):
        enc.set_params(nonsense=1)
    dec = MNMDecoder(frequency_threshold=0.5)
    assert clone(dec).get_params()["frequency_threshold"] == 0.5
    assert clone(dec).get_params()["encoder"] == "pretrained"


def test_unfitted_estimators_refuse():
    # scikit-learn's NotFittedError, which is also an AttributeError, as NiMARE's are.
    for call in (
        lambda: MNMEncoder().transform("memory"),
        lambda: MNMEncoder().retrieve("memory"),
        lambda: MNMEncoder().radius("memory"),
        lambda: MNMEncoder().term_map_studies("memory"),
        lambda: MNMDecoder().transform(load_mask()),
    ):
        with pytest.raises(NotFittedError, match="not fitted"):
            call()
    assert issubclass(NotFittedError, AttributeError)
    # A decoder holding an unfitted encoder cannot fit it without studies.
    with pytest.raises(NotFittedError, match="no studies to fit it on"):
        MNMDecoder(encoder=MNMEncoder()).fit()
    with pytest.raises(TypeError, match="encoder must be"):
        MNMDecoder(encoder=3).fit()


@has_pretrained
def test_clone_of_a_fitted_decoder_is_unfitted_and_refits():
    from sklearn.base import clone

    dec = MNMDecoder.load_pretrained(device="cpu")
    copy = clone(dec)
    assert not hasattr(copy, "term_points_")
    assert isinstance(copy.encoder, MNMEncoder) and not hasattr(copy.encoder, "model_")
    # The decoder of a named model fits without data, to the same terms and points.
    named = clone(MNMDecoder(encoder=str(PRETRAINED_DIR))).fit()
    assert named.features_ == dec.features_
    np.testing.assert_array_equal(named.term_points_, dec.term_points_)


def _img(data, affine=None):
    return nib.Nifti1Image(
        np.asarray(data, dtype=np.float32), load_mask().affine if affine is None else affine
    )


def test_bad_images(tmp_path):
    mask = np.asanyarray(load_mask().dataobj) > 0
    good = np.where(mask, 1.0, 0.0)
    with pytest.raises(ValueError, match="all zero"):
        load_brain_image(_img(np.zeros(mask.shape)))
    inf = good.copy()
    inf[45, 54, 45] = np.inf
    with pytest.raises(ValueError, match="infinite"):
        load_brain_image(_img(inf))
    almost_empty = np.where(mask, np.nan, 0.0)
    almost_empty[45, 54, 45] = 1.0  # one voxel of data: too little to decode
    with pytest.raises(ValueError, match="too little"):
        load_brain_image(_img(almost_empty))
    with pytest.raises(ValueError, match="3D"):
        load_brain_image(_img(np.stack([good, good], axis=-1)))
    native = np.eye(4)  # voxel (0, 0, 0) at the origin: a native-space image
    with pytest.raises(ValueError, match="MNI"):
        load_brain_image(_img(np.ones((64, 64, 40)), native))
    with pytest.raises(FileNotFoundError):
        load_brain_image(tmp_path / "missing.nii.gz")
    (tmp_path / "junk.nii.gz").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="Could not read"):
        load_brain_image(tmp_path / "junk.nii.gz")
    # NaN outside the brain is background; a 4 mm grid is resampled.
    outside = np.where(mask, 1.0, np.nan)
    assert np.isfinite(load_brain_image(_img(outside))).all()
    from nilearn.image import resample_img

    coarse = resample_img(
        _img(good),
        target_affine=np.diag([4.0, 4.0, 4.0]),
        interpolation="nearest",
        force_resample=True,
        copy_header=True,
    )
    values = load_brain_image(coarse)
    assert values.shape == (mask.sum(),) and np.median(values) > 0.9


def test_load_brain_image_matches_nilearn_resampling():
    from nilearn.datasets import load_sample_motor_activation_image
    from nilearn.image import resample_img, resample_to_img

    mask_img = load_mask()
    mask = np.asanyarray(mask_img.dataobj) > 0
    noise = np.random.default_rng(0).standard_normal(mask.shape) * mask
    oblique = resample_img(  # an anisotropic grid with another origin
        _img(noise),
        target_affine=np.diag([3.0, 2.5, 4.0]),
        interpolation="continuous",
        force_resample=True,
        copy_header=True,
    )
    for img in (nib.load(load_sample_motor_activation_image()), oblique):
        expected = resample_to_img(
            img, mask_img, interpolation="linear", force_resample=True, copy_header=True
        )
        np.testing.assert_allclose(
            load_brain_image(img), np.asanyarray(expected.dataobj)[mask], atol=1e-5
        )


# ------------------------------------------------------------------ pretrained model
@pytest.fixture(scope="module")
def pretrained():
    if not (PRETRAINED_DIR / "config.json").exists():
        pytest.skip("pretrained model not built")
    return MNMEncoder.load_pretrained(device="cpu")


@pytest.fixture(scope="module")
def pretrained_decoder():
    if not (PRETRAINED_DIR / "config.json").exists():
        pytest.skip("pretrained model not built")
    return MNMDecoder.load_pretrained(device="cpu")


def test_saved_maps_are_the_predicted_values(pretrained, tmp_path):
    # The brain mask's header is uint8: maps unmasked with it used to be saved as uint8 with
    # a scale factor, off by up to 0.02 z once written.
    import nibabel as nib

    result = pretrained.transform("working memory")
    for name in result.maps:
        img = result.get_map(name)
        img.to_filename(tmp_path / f"{name}.nii.gz")
        saved = nib.load(tmp_path / f"{name}.nii.gz")
        assert saved.get_data_dtype() == np.float32
        np.testing.assert_array_equal(saved.get_fdata(), img.get_fdata())


def _pretrained_training_ids():
    """The study ids stored in the shipped checkpoint, and its configuration."""
    from safetensors.numpy import load_file

    config = json.loads((PRETRAINED_DIR / "config.json").read_text())
    arrays = load_file(str(PRETRAINED_DIR / "arrays.safetensors"))
    # As MNMEncoder.from_checkpoint reads them: non-numeric ids are kept in the config.
    ids = config.get("study_ids") or [str(i) for i in arrays["studies.ids"]]
    return np.asarray(ids, dtype=str), config


@has_pretrained
def test_pretrained_is_small_and_records_its_split():
    from nimare_mnm.utils import ids_digest

    size = sum(f.stat().st_size for f in PRETRAINED_DIR.iterdir()) / 2**20
    assert size <= 25
    ids, config = _pretrained_training_ids()
    training = config["training"]
    assert training["corpus"] == "neuroquery" and training["split_seed"] == 0
    # The stored ids are the ones the model was fitted on: the digest taken at fit time
    # matches them (the data-free half of the check below).
    assert len(ids) == training["n_studies"] == len(set(ids))
    assert ids_digest(ids) == training["study_ids_sha256"]


@has_pretrained
def test_pretrained_records_the_studies_behind_each_term_map(pretrained):
    """The shipped model trained on term maps; it says which training studies built each."""
    from nimare_mnm.utils import ids_digest

    record = pretrained.training_["term_maps"]
    sources = pretrained.term_map_sources_
    assert len(pretrained.term_map_terms_) == sources.shape[0] == record["n_terms"] > 1000
    assert sources.shape[1] == len(pretrained.study_ids_)
    assert np.diff(sources.indptr).min() >= record["min_studies"]
    # The same studies as the digest taken when the maps were built.
    builders = pretrained.study_ids_[np.unique(sources.indices)]
    assert ids_digest(builders) == record["source_ids_sha256"]
    studies = pretrained.term_map_studies("working memory")
    assert len(studies) >= record["min_studies"]
    # Distinct training studies, in study_ids_ order as the docstring promises.
    position = pd.Index(pretrained.study_ids_).get_indexer(studies)
    assert (position >= 0).all() and (np.diff(position) > 0).all()
    with pytest.raises(KeyError, match="did you mean 'working memory'"):
        pretrained.term_map_studies("Working Memory")
    with pytest.raises(TypeError, match="must be a string"):
        pretrained.term_map_studies(["working memory"])


@has_pretrained
def test_checkpoint_refuses_inconsistent_term_map_sources(tmp_path):
    """Term-map sources that do not fit their terms are refused, even under a valid digest."""
    import hashlib

    from safetensors.numpy import load_file, save_file

    def variant(name, edit_config=None, edit_arrays=None):
        folder = tmp_path / name
        shutil.copytree(PRETRAINED_DIR, folder)
        config = json.loads((folder / "config.json").read_text())
        if edit_arrays is not None:
            arrays = load_file(folder / "arrays.safetensors")
            edit_arrays(arrays)
            save_file(arrays, folder / "arrays.safetensors")
            digest = hashlib.sha256((folder / "arrays.safetensors").read_bytes()).hexdigest()
            config["arrays_sha256"] = digest
        if edit_config is not None:
            edit_config(config)
        (folder / "config.json").write_text(json.dumps(config))
        return folder

    intact = MNMEncoder.from_checkpoint(variant("intact"), device="cpu")
    assert len(intact.term_map_terms_) == intact.term_map_sources_.shape[0] > 0

    def shift(arrays):
        arrays["term_maps.indptr"] = arrays["term_maps.indptr"] + 1

    def swap(arrays):
        indptr = arrays["term_maps.indptr"].copy()
        indptr[1], indptr[2] = indptr[2], indptr[1]
        arrays["term_maps.indptr"] = indptr

    for name, edit in (("shifted", shift), ("decreasing", swap)):
        with pytest.raises(ValueError, match="term map sources are incomplete"):
            MNMEncoder.from_checkpoint(variant(name, edit_arrays=edit), device="cpu")
    with pytest.raises(ValueError, match="term map sources are incomplete"):
        MNMEncoder.from_checkpoint(
            variant("one term fewer", lambda c: c["term_map_terms"].pop()), device="cpu"
        )
    with pytest.raises(ValueError, match="without their terms"):
        MNMEncoder.from_checkpoint(
            variant("no terms", lambda c: c.pop("term_map_terms")), device="cpu"
        )


@pytest.mark.slow
@has_pretrained
@requires_data
def test_pretrained_never_saw_the_test_split(neuroquery):
    """Recompute the protocol's test split from the corpus; no stored training id is in it."""
    from nimare_mnm.evaluation import protocol_split
    from nimare_mnm.utils import ids_digest

    trained, config = _pretrained_training_ids()
    training = config["training"]
    all_ids = np.unique(np.asarray(neuroquery.study_ids).astype(str))
    corpus_train, test_ids = protocol_split(all_ids)  # the protocol's defaults
    # The checkpoint was split the protocol's way...
    assert (training["test_fraction"], training["split_seed"]) == (0.1, 0)
    assert len(test_ids) == training["n_test"]
    assert ids_digest(test_ids) == training["test_ids_sha256"]
    # ...and trained only on studies of the training part.
    assert not np.isin(trained, test_ids).any()
    assert np.isin(trained, corpus_train).all()


def test_train_pretrained_refuses_test_ids():
    """scripts/train_pretrained.py computes disjointness and refuses a leaked test study."""
    import importlib.util

    from conftest import REPO

    spec = importlib.util.spec_from_file_location(
        "train_pretrained", REPO / "scripts" / "train_pretrained.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.check_disjoint(["1", "2", "3"], np.array(["4", "5"], dtype=object))  # no error
    script.check_disjoint(np.array([1, 2]), ["3"])
    with pytest.raises(RuntimeError, match="1 test studies reached the training set"):
        script.check_disjoint(["1", "2", "3"], ["3", "4"])
    with pytest.raises(RuntimeError, match="test studies"):
        script.check_disjoint(np.array([10, 20]), np.array(["20"], dtype=object))


def test_transform_outputs(pretrained, tmp_path):
    from nimare.results import MetaResult

    res = pretrained.transform("working memory")
    assert isinstance(res, MetaResult)
    img = res.get_map("z")
    assert img.shape == (91, 109, 91) and np.allclose(img.affine, load_mask().affine)
    z = res.maps["z"]
    assert np.isfinite(z).all() and abs(z.mean()) < 1e-3 and abs(z.std() - 1) < 1e-3
    levels = res.tables["levels"]
    assert set(levels["level"]) == {"yeo7", "yeo17", "subcortical"}
    assert len(levels) == 7 + 17 + 15
    assert list(res.maps) == ["z", "z_level-yeo7", "z_level-yeo17", "z_level-subcortical"]
    for level in ("yeo7", "yeo17", "subcortical"):
        level_map = res.maps[f"z_level-{level}"]
        assert level_map.dtype == np.float32 and np.isfinite(level_map).all()
        labels = pretrained.region_labels_[level]
        assert (level_map[labels < 0] == 0).all()
        rows = levels[levels["level"] == level].reset_index(drop=True)
        for r, row in rows.iterrows():
            inside = labels == r
            assert row["n_voxels"] == inside.sum()
            # the table describes the whole-brain map inside the region...
            np.testing.assert_allclose(row["mean_z"], z[inside].mean(), atol=1e-4)
            np.testing.assert_allclose(row["sd_z"], z[inside].std(), rtol=1e-4)
            assert row["peak_z"] == pytest.approx(z[inside].max())
            # ...and the level map is that region z-scored on its own
            assert abs(level_map[inside].mean()) < 1e-4
            assert level_map[inside].std() == pytest.approx(1, abs=1e-4)
        assert rows.loc[rows["rank"] == 1, "mean_z"].item() == rows["mean_z"].max()
    # NiMARE's copy and save see a plain dictionary with every map
    copied = res.copy()
    assert type(copied.maps) is dict and list(copied.maps) == list(res.maps)
    for name in res.maps:
        np.testing.assert_array_equal(copied.maps[name], res.maps[name])
    res.save_maps(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{m}.nii.gz" for m in res.maps)
    query = res.tables["query"].iloc[0]
    assert query["radius"] > 0
    assert query["generality"] == pytest.approx(np.exp(-query["radius"]))
    assert query["radius"] == pytest.approx(pretrained.radius("working memory")[0], abs=1e-5)
    many = pretrained.transform(["working memory", "face perception"])
    # Batched text encoding pads sequences: equal up to float32 rounding.
    assert len(many) == 2 and np.allclose(many[0].maps["z"], z, atol=1e-3)
    np.testing.assert_allclose(many[0].maps["z_level-yeo17"], res.maps["z_level-yeo17"], atol=1e-2)
    with pytest.raises(ValueError, match="empty"):
        pretrained.transform("")
    with pytest.raises(TypeError):
        pretrained.transform(["memory", None])


def test_radius_and_generality_order_the_same_way(pretrained):
    texts = ["memory", "spatial working memory load in the dorsolateral prefrontal cortex"]
    radius, generality = pretrained.radius(texts), pretrained.generality(texts)
    np.testing.assert_allclose(generality, np.exp(-radius), rtol=1e-6)
    # higher generality is nearer the origin, whichever text the model puts there
    assert np.argmax(generality) == np.argmin(radius)
    assert ((generality > 0) & (generality <= 1)).all()


def test_save_load_round_trips(pretrained, pretrained_decoder, tmp_path):
    query = "auditory oddball"
    ref = pretrained.transform(query).maps["z"]
    pretrained.save(tmp_path / "enc.pkl.gz")
    again = MNMEncoder.load(tmp_path / "enc.pkl.gz")
    np.testing.assert_array_equal(again.transform(query).maps["z"], ref)
    path = pretrained_decoder.save_checkpoint(tmp_path / "ckpt")
    enc2 = MNMEncoder.from_checkpoint(path, device="cpu")
    np.testing.assert_allclose(enc2.transform(query).maps["z"], ref, atol=1e-5)
    dec2 = MNMDecoder.from_checkpoint(path, device="cpu")
    assert dec2.features_ == pretrained_decoder.features_
    # A truncated weights file is reported as corrupt.
    broken = tmp_path / "broken"
    shutil.copytree(path, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ValueError):
        MNMEncoder.from_checkpoint(broken)
    with pytest.raises(FileNotFoundError):
        MNMEncoder.from_checkpoint(tmp_path / "nowhere")


def test_decoder_motor_map(pretrained_decoder):
    from nilearn.datasets import load_sample_motor_activation_image

    img = load_sample_motor_activation_image()
    table = pretrained_decoder.transform(img)
    assert table.index.name == "feature"
    assert {"score", "radius", "generality", "level", "region"} <= set(table.columns)
    assert table["score"].is_monotonic_decreasing
    top = list(table.index[:10])
    assert any(w in t for t in top for w in MOTOR_WORDS), f"no motor term in the top 10: {top}"
    studies = pretrained_decoder.decode_studies(img, k=5)
    assert len(studies) == 5 and studies.index.name == "id"
    # Different maps must not share the same nearest studies (a reversed asymmetric
    # similarity once ranked the same hub studies first for every map).
    other = pretrained_decoder.encoder_.transform("listening to tones").get_map("z")
    assert len(set(studies.index) & set(pretrained_decoder.decode_studies(other, k=5).index)) <= 1
    # nilearn returns a path; only the positive part is decoded.
    motor = nib.load(img)
    negative = -np.abs(np.asanyarray(motor.dataobj))
    with pytest.raises(ValueError, match="no positive value"):
        pretrained_decoder.transform(nib.Nifti1Image(negative, motor.affine))


def test_decoder_region_column_names_a_part_of_the_map(pretrained_decoder):
    """A map inside one structure has no other part: every term's region is one of the two."""
    encoder = pretrained_decoder.encoder_
    labels = encoder.region_labels_["subcortical"]
    amygdala = encoder.region_names_["subcortical"].index("Left_Amygdala")
    mask = np.asanyarray(load_mask().dataobj) > 0
    data = np.zeros(mask.shape, dtype=np.float32)
    data[mask] = (labels == amygdala).astype(np.float32)
    table = pretrained_decoder.transform(nib.Nifti1Image(data, load_mask().affine))
    assert set(zip(table["level"], table["region"])) <= {
        ("whole", "whole_brain"),
        ("subcortical", "Left_Amygdala"),
    }
    # the column is the argmax of the similarity to each part
    points, names, _ = pretrained_decoder._image_points(nib.Nifti1Image(data, load_mask().affine))
    sim = encoder.similarity(pretrained_decoder.term_points_, points)
    best = pd.Series([names[b][1] for b in sim.argmax(axis=1)], index=pretrained_decoder.features_)
    pd.testing.assert_series_equal(
        table["region"].sort_index(), best.sort_index(), check_names=False
    )


@requires_data
def test_textbook_queries(pretrained, data_dir):
    """Textbook queries peak where textbooks say, and the check can fail.

    Control: each query's expected structures scored on the map of another query of the
    same atlas whose expected structures are disjoint from them. If the expectations were so
    broad that any map hit them, the control would hit as often as the real maps.
    """
    queries = list(TEXTBOOK)
    maps = dict(zip(queries, pretrained.predict_maps(queries)))
    found = textbook_hits(pretrained, data_dir, maps=[maps[q] for q in queries])
    hits = sum(hit for _, hit in found.values())
    pairs = [
        (q, p)
        for q in queries
        for p in queries
        if p != q
        and TEXTBOOK[p][0] == TEXTBOOK[q][0]
        and not set(TEXTBOOK[p][1]) & set(TEXTBOOK[q][1])
    ]
    control = textbook_hits(
        pretrained,
        data_dir,
        {f"{q} | map of {p}": TEXTBOOK[q] for q, p in pairs},
        maps=[maps[p] for _, p in pairs],
    )
    control_rate = np.mean([hit for _, hit in control.values()])
    misses = {q: where for q, (where, hit) in found.items() if not hit}
    assert hits >= len(TEXTBOOK) - 2, misses
    assert len(pairs) > 20 and control_rate <= 0.15, control


# ------------------------------------------------------------------ fitting and retrieval
@pytest.fixture(scope="module")
def small_fit(neuroquery, data_dir):
    ids = np.unique(np.asarray(neuroquery.study_ids).astype(str))[:400]
    subset = neuroquery.filter_study_ids(list(ids))
    enc = MNMEncoder(epochs=2, batch_size=128, device="cpu", data_dir=str(data_dir)).fit(subset)
    return enc, subset


@requires_data
def test_fit_transform_retrieve_meta_analysis(small_fit, caplog):
    from nimare.meta.cbma import ALE, MKDADensity

    enc, subset = small_fit
    assert enc.model_ is not None and len(enc.study_ids_) == 400
    assert enc.training_["best_epoch"] >= 0
    res = enc.transform("motor")
    assert np.isfinite(res.maps["z"]).all()
    top = enc.retrieve("motor", k=20)
    assert len(np.unique(top.study_ids)) == 20
    scores = np.asarray(top.get_metadata(field="mnm_score"), dtype=float)
    assert np.isfinite(scores).all()
    ale = ALE(kernel__fwhm=10).fit(top)
    assert np.isfinite(ale.maps["z"]).all() and ale.maps["z"].max() > 0
    mkda = MKDADensity().fit(top)
    assert mkda.maps["z"].max() > 0
    result = enc.meta_analysis("motor", k=20, estimator=MKDADensity())
    assert result.maps["z"].max() > 0
    # NeuroQuery has no sample sizes: NiMARE says so on a plain fit, which a fixed-width
    # kernel does not need; the meta-analysis drops that message and only that one.
    with caplog.at_level("WARNING", logger="nimare.utils"):
        ALE(kernel__fwhm=10).fit(top)
    assert "sample_size" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="nimare.utils"):
        enc.meta_analysis("motor", k=20)
    assert "sample_size" not in caplog.text
    assert not logging.getLogger("nimare.utils").filters
    # The vocabulary and the confidence threshold come from the training studies.
    record = enc.training_["query_confidence"]
    assert record["vocabulary"].startswith("NeuroQuery terms") and record["n_terms"] > 100
    assert record["calibration"] == "validation titles"
    assert record["n_calibration"] == len(enc.validation_ids_)
    assert 0 < enc.confidence_threshold_ <= 1
    assert enc.confidence("motor cortex")["confidence"].iloc[0] == 1.0
    with pytest.raises(ValueError, match="exceeds"):
        enc.retrieve("motor", k=10_000)


def test_decoder_without_annotations_says_which_vocabulary():
    from conftest import make_studyset

    encoder = MNMEncoder.load_pretrained(device="cpu")
    reference = MNMDecoder.load_pretrained(device="cpu")
    studies = make_studyset(
        {"s1": [(0, 0, 0)], "s2": [(10, 10, 10)], "s3": [(20, 20, 20)]},
        abstracts=[
            "finger tapping task in the motor cortex",
            "n-back working memory task",
            "face perception in the fusiform gyrus",
        ],
    )
    match = f"no NeuroQuery term annotations.*{len(reference.features_):,} terms"
    with pytest.warns(UserWarning, match=match):
        dec = MNMDecoder(encoder=encoder).fit(studies)
    assert dec.features_ == reference.features_
    # The pretrained model's own term points are reused, not embedded again.
    np.testing.assert_array_equal(dec.term_points_, reference.term_points_)
    motor = encoder.transform("finger tapping").get_map("z")
    assert dec.decode_studies(motor, k=2).index[0] == "s1"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the user's own terms: no fallback, no warning
        own = MNMDecoder(encoder=encoder, features=["motor", "memory"]).fit(studies)
    assert own.features_ == ["motor", "memory"]
    # A legacy NiMARE Dataset is accepted: its abstracts are the texts of its studies.
    from nimare.dataset import Dataset

    abstracts = {"s1": "finger tapping task in the motor cortex", "s2": "n-back working memory"}
    legacy = Dataset(
        {
            sid: {
                "contrasts": {
                    "a": {
                        "coords": {"space": "MNI", "x": [x], "y": [x], "z": [x]},
                        "text": {"abstract": abstracts[sid]},
                    }
                }
            }
            for sid, x in (("s1", 0), ("s2", 10))
        }
    )
    dec = MNMDecoder(encoder=encoder, features=["motor", "memory"]).fit(legacy)
    assert list(dec.study_ids_) == ["s1", "s2"]
    expected = encoder.embed_text([f"{sid}. {text}" for sid, text in abstracts.items()])
    np.testing.assert_allclose(dec.study_points_, expected, atol=1e-5)
    assert dec.decode_studies(motor, k=1).index[0] == "s1"


@requires_data
def test_decoder_fit_on_studyset(small_fit):
    enc, subset = small_fit
    dec = MNMDecoder(encoder=enc, features=["motor", "memory", "face", "pain"]).fit(subset)
    assert set(dec.features_) <= {"motor", "memory", "face", "pain"}
    assert (dec.term_frequency_ > 0).all()
    res = enc.transform("motor")
    table = dec.transform(res.get_map("z"))
    assert list(table.columns[:4]) == ["score", "radius", "generality", "frequency"]
    studies = dec.decode_studies(res.get_map("z"), k=3)
    assert "title" in studies.columns and len(studies) == 3


@requires_data
def test_pretrained_retrieval_needs_the_corpus(pretrained, data_dir, monkeypatch, tmp_path):
    monkeypatch.delenv("NIMARE_MNM_DATA", raising=False)
    fresh = MNMEncoder.load_pretrained(device="cpu")
    with pytest.raises(ValueError, match="data_dir"):
        fresh.retrieve("fear", k=10)
    top = fresh.retrieve("fear", k=10, data_dir=str(data_dir))
    assert len(np.unique(top.study_ids)) == 10
    ranks = pd.Series(top.get_metadata(field="mnm_rank")).astype(float)
    assert sorted(ranks.unique()) == list(range(1, 11))
    # Another folder is read (or refused), not answered from the corpus already loaded.
    with pytest.raises(FileNotFoundError):
        fresh.retrieve("fear", k=10, data_dir=str(tmp_path / "nonexistent"))
    again = fresh.retrieve("fear", k=10, data_dir=str(data_dir))
    assert list(again.study_ids) == list(top.study_ids)
    # Later calls without data_dir use the folder read last (no NIMARE_MNM_DATA here).
    assert list(fresh.retrieve("fear", k=10).study_ids) == list(top.study_ids)
    assert fresh.studyset_ is None  # retrieval does not change the fitted attributes


def test_neighbour_count_is_chosen_on_validation():
    from nimare_mnm.encoder import _choose_neighbours

    # Two clusters of 60 studies: a validation study's best neighbour mean averages the noise
    # of as many studies of its own cluster as possible (57 candidates), and none of the other.
    rng = np.random.default_rng(0)
    centres = rng.random((2, 200)) * 4
    cluster = np.repeat([0, 1], 60)
    brain = np.clip(centres[cluster] + rng.normal(0, 1.0, (120, 200)), 0, None) + 1e-3
    points = np.eye(2)[cluster] + rng.normal(0, 0.01, (120, 2))
    val_rows = np.array([0, 1, 2, 60, 61, 62])
    k = _choose_neighbours(points, points, brain, val_rows, lambda q, key: q @ key.T)
    assert k == 50  # 5, 10, 20 average less noise; 100 mixes in the other cluster


@requires_data
def test_decoderless_preset_chooses_neighbours_and_ranks_like_retrieve(neuroquery, tmp_path):
    from nimare_mnm.encoder import NEIGHBOUR_GRID

    ids = np.unique(np.asarray(neuroquery.study_ids).astype(str))[:300]
    subset = neuroquery.filter_study_ids(list(ids))
    enc = MNMEncoder(preset="clip", epochs=1, batch_size=64, device="cpu").fit(subset)
    assert enc.n_neighbours_ in NEIGHBOUR_GRID
    assert set(enc.validation_ids_) < set(enc.study_ids_)
    assert len(enc.validation_ids_) == int(len(enc.study_ids_) * enc.val_fraction)
    maps = enc.predict_maps(["motor", "memory"])
    loaded = MNMEncoder.from_checkpoint(enc.save_checkpoint(tmp_path / "clip"), device="cpu")
    assert loaded.n_neighbours_ == enc.n_neighbours_
    again = loaded.predict_maps(["motor", "memory"])
    assert all(np.corrcoef(a, b)[0, 1] > 0.999 for a, b in zip(maps, again))
    # embed_studies + similarity give the text -> brain part of retrieve()'s ranking.
    sids, text_points, brain_points = enc.embed_studies(subset)
    assert text_points.shape == brain_points.shape == (len(sids), enc.embed_dim)
    query = enc.embed_text("motor")
    order = pd.Index(sids).get_indexer(enc.study_ids_)
    expected = enc.similarity(query, brain_points[order]) + enc.similarity(
        query, text_points[order]
    )
    scores = enc.retrieval_scores("motor").iloc[:, 0]
    np.testing.assert_allclose(scores.to_numpy(), expected[0], atol=1e-2)
    top = enc.retrieve("motor", k=5)
    assert set(np.asarray(top.study_ids).astype(str)) == set(scores.nlargest(5).index)


@has_pretrained
def test_decoder_drop_invalid_leaves_out_studies_without_text():
    from nimare.nimads import Studyset

    def study(sid, text):
        out = {"id": sid, "name": "", "analyses": [{"id": f"{sid}a", "name": "c", "points": []}]}
        out["analyses"][0]["points"] = [{"coordinates": [0.0, 0.0, 0.0], "space": "MNI"}]
        if text:
            out["description"] = text
        return out

    studies = Studyset(
        {
            "id": "x",
            "name": "x",
            "studies": [study("s1", "finger tapping"), study("s2", ""), study("s3", "memory")],
        }
    )
    encoder = MNMEncoder.load_pretrained(device="cpu")
    dec = MNMDecoder(encoder=encoder, features=["motor"]).fit(studies)
    assert list(dec.study_ids_) == ["s1", "s3"]
    with pytest.raises(ValueError, match=r"1 studies have no title, abstract or text.*s2"):
        MNMDecoder(encoder=encoder, features=["motor"]).fit(studies, drop_invalid=False)
