"""The level specification: a new atlas level is one entry plus its data.

Synthetic, no corpus and no atlas files: a toy "hemisphere" level made from the brain mask,
a bag-of-words text encoder (any object with ``encode``), and a small synthetic corpus.
"""

import nibabel as nib
import numpy as np
import pytest
from conftest import make_studyset

from nimare_mnm import MNMDecoder, MNMEncoder
from nimare_mnm.atlases import BrainLevels, load_mask
from nimare_mnm.levels import LEVELS, Level, check_levels, levels_from_dicts, levels_to_dicts

WORDS = ("left", "right", "hand", "finger", "tapping", "motor", "visual", "memory")


class BagOfWords:
    """A text encoder that is not a TextEncoder: normalised word counts over WORDS."""

    def encode(self, texts):
        out = np.array(
            [[text.lower().split().count(w) for w in WORDS] for text in texts], dtype=np.float32
        )
        out += 1e-3  # no all-zero row
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def _hemisphere_atlas(path, box_only: bool = False):
    """Label image on the mask grid: 1 = left (x < 0 mm), 2 = right (x > 0 mm)."""
    mask = load_mask()
    inside = np.asanyarray(mask.dataobj) > 0
    ijk = np.argwhere(inside)
    xyz = nib.affines.apply_affine(mask.affine, ijk)
    data = np.zeros(inside.shape, dtype=np.int16)
    if box_only:  # one region: a 20 mm cube around (30, 0, 0)
        sel = (np.abs(xyz - [30, 0, 0]) <= 10).all(axis=1)
        data[tuple(ijk[sel].T)] = 1
    else:
        data[tuple(ijk[xyz[:, 0] < 0].T)] = 1
        data[tuple(ijk[xyz[:, 0] > 0].T)] = 2
    nib.Nifti1Image(data, mask.affine).to_filename(path)
    return str(path)


@pytest.fixture(scope="module")
def hemisphere(tmp_path_factory):
    path = _hemisphere_atlas(tmp_path_factory.mktemp("atlas") / "hemispheres.nii.gz")
    return Level("hemisphere", atlas=path, regions=("left", "right"))


def test_level_spec_is_validated_and_round_trips(hemisphere):
    assert check_levels(None) == LEVELS
    assert levels_from_dicts(levels_to_dicts(LEVELS + (hemisphere,))) == LEVELS + (hemisphere,)
    assert levels_from_dicts(None) == LEVELS  # checkpoints from before the spec was recorded
    with pytest.raises(ValueError, match="lower-case identifier"):
        Level("Whole Brain", atlas="yeo7", regions=("a",))
    with pytest.raises(ValueError, match="lower-case identifier"):
        Level("whole", atlas="yeo7", regions=("a",))
    with pytest.raises(ValueError, match="2 regions but 1 atlas labels"):
        Level("x", atlas="yeo7", regions=("a", "b"), labels=("a",))
    with pytest.raises(ValueError, match="distinct"):
        check_levels([hemisphere, hemisphere])
    with pytest.raises(TypeError, match="Level objects"):
        check_levels(["yeo7"])
    with pytest.raises(ValueError, match="Invalid level specification"):
        levels_from_dicts([{"name": "x"}])


def test_precedence_removes_claimed_voxels(hemisphere, tmp_path):
    box = Level(
        "box",
        atlas=_hemisphere_atlas(tmp_path / "box.nii.gz", box_only=True),
        regions=("box",),
        precedence=1,
    )
    levels = BrainLevels(levels=(hemisphere, box)).fit()
    in_box = levels.labels_["box"] == 0
    assert in_box.sum() > 500
    # the box lies in the right hemisphere, and its voxels leave the hemisphere level
    assert (levels.labels_["hemisphere"][in_box] == -1).all()
    alone = BrainLevels(levels=(hemisphere,)).fit()
    assert (alone.labels_["hemisphere"][in_box] == 1).all()
    untouched = ~in_box
    np.testing.assert_array_equal(
        levels.labels_["hemisphere"][untouched], alone.labels_["hemisphere"][untouched]
    )
    with pytest.raises(ValueError, match="3 regions"):
        BrainLevels(levels=(Level("h", atlas=hemisphere.atlas, regions=("a", "b", "c")),)).fit()


@pytest.fixture(scope="module")
def toy_fit(hemisphere):
    rng = np.random.default_rng(0)
    peaks, texts = {}, []
    for i in range(48):
        side = -1 if i % 2 == 0 else 1
        centre = np.array([side * 38, -20, 55])
        peaks[f"s{i}"] = [centre + rng.normal(0, 4, 3) for _ in range(3)]
        texts.append(("left" if side < 0 else "right") + " hand finger tapping motor")
    studies = make_studyset(peaks, abstracts=texts)
    encoder = MNMEncoder(
        levels=(hemisphere,),
        text_model=BagOfWords(),
        embed_dim=8,
        hidden_dim=32,
        epochs=3,
        batch_size=16,
        device="cpu",
    ).fit(studies)
    return encoder, studies


def test_a_registered_level_reaches_transform_and_the_decoder(toy_fit, hemisphere):
    encoder, studies = toy_fit
    assert encoder.levels_ == (hemisphere,)
    res = encoder.transform("left hand")
    assert list(res.maps) == ["z", "z_level-hemisphere"]
    table = res.tables["levels"]
    assert list(table["level"]) == ["hemisphere", "hemisphere"]
    assert list(table["region"]) == ["left", "right"]
    atlas = np.asanyarray(nib.load(hemisphere.atlas).dataobj)[
        np.asanyarray(load_mask().dataobj) > 0
    ]
    assert list(table["n_voxels"]) == [(atlas == 1).sum(), (atlas == 2).sum()]
    level_map = res.maps["z_level-hemisphere"]
    for value in (1, 2):
        assert abs(level_map[atlas == value].mean()) < 1e-4
    decoder = MNMDecoder(encoder=encoder, features=["left", "right", "motor"]).fit(studies)
    decoded = decoder.transform(res.get_map("z"))
    assert set(decoded["level"]) <= {"whole", "hemisphere"}
    assert set(decoded["region"]) <= {"whole_brain", "left", "right"}
    # A map inside the left hemisphere only has no right part to be nearest to.
    left_only = res.get_map("z").get_fdata()
    left_only[left_only < 0] = 0
    left_only[np.where(_grid_x() > 0)] = 0
    table = decoder.transform(nib.Nifti1Image(left_only, load_mask().affine))
    assert "right" not in set(table["region"])


def _grid_x():
    mask = load_mask()
    ijk = np.indices(mask.shape).reshape(3, -1).T
    return nib.affines.apply_affine(mask.affine, ijk)[:, 0].reshape(mask.shape)


def test_checkpoint_records_levels_and_needs_the_custom_text_encoder(toy_fit, tmp_path):
    encoder, _ = toy_fit
    path = encoder.save_checkpoint(tmp_path / "toy")
    with pytest.raises(ValueError, match="custom text encoder.*BagOfWords.*text_model="):
        MNMEncoder.from_checkpoint(path)
    loaded = MNMEncoder.from_checkpoint(path, text_model=BagOfWords())
    assert loaded.levels_ == encoder.levels_
    np.testing.assert_allclose(
        loaded.predict_maps(["left hand", "right hand"]),
        encoder.predict_maps(["left hand", "right hand"]),
        atol=1e-3,
    )
    for level in loaded.region_labels_:
        np.testing.assert_array_equal(loaded.region_labels_[level], encoder.region_labels_[level])


def test_text_encoder_output_is_checked(toy_fit):
    encoder, _ = toy_fit

    class Wrong:
        def encode(self, texts):
            return np.ones((len(texts), 3), dtype=np.float32)

    encoder.text_model, kept = Wrong(), encoder.text_model
    try:
        with pytest.raises(ValueError, match=r"shape \(1, 3\).*\(1, 8\)"):
            encoder.transform("left")
    finally:
        encoder.text_model = kept


def _motor_studies(texts):
    rng = np.random.default_rng(0)
    peaks = {}
    for i in range(len(texts)):
        centre = np.array([(-1 if i % 2 == 0 else 1) * 38, -20, 55])
        peaks[f"s{i}"] = [centre + rng.normal(0, 4, 3) for _ in range(3)]
    return make_studyset(peaks, abstracts=texts)


def test_term_features_from_the_words_of_a_corpus_without_terms(hemisphere, monkeypatch):
    texts = [("left" if i % 2 == 0 else "right") + " hand finger tapping" for i in range(40)]
    texts[:3] = ["visual memory"] * 3  # used by too few texts to be a feature
    params = dict(
        preset="nimare-mnm",
        levels=(hemisphere,),
        text_model=BagOfWords(),
        embed_dim=8,
        hidden_dim=32,
        epochs=2,
        batch_size=16,
        device="cpu",
    )
    encoder = MNMEncoder(**params).fit(_motor_studies(texts))
    terms = set(encoder.term_features_.terms)
    # The words of at least 10 texts (a study's text starts with its name, "Study sN").
    assert {"left", "right", "hand", "finger", "tapping", "study"} == terms
    assert encoder.model_.config.text_dim == len(WORDS) + len(terms)
    assert encoder.training_["term_features"] == {"min_texts": 10, "n_terms": len(terms)}
    assert encoder.transform("left hand").get_map("z").shape == (91, 109, 91)
    # No vocabulary to be had: a warning, and the sentence embedding alone.
    import nimare_mnm.encoder

    def no_terms(*args):
        raise ValueError("No candidate term occurs in 10 or more of the 36 texts.")

    monkeypatch.setattr(nimare_mnm.encoder, "_fit_term_features", no_terms)
    with pytest.warns(UserWarning, match="No term features .No candidate term occurs"):
        plain = MNMEncoder(**params).fit(_motor_studies(texts))
    assert plain.term_features_ is None and plain.model_.config.text_dim == len(WORDS)
