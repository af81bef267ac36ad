"""Statistical maps as SPM and FSL write them, decoded by the pretrained model.

Each map is made here from nilearn's sample motor activation map (bundled, offline): noise
over the whole field of view, NaN outside a partial analysis mask, a thresholded map, a
negative-only map, and FSL-style (2 mm, left-right flipped) and SPM-style (3 mm) grids. The
reference is the decoding of the clean map; every variant must keep its meaning.
"""

import warnings

import nibabel as nib
import numpy as np
import pytest
from nilearn.datasets import load_sample_motor_activation_image
from nilearn.image import load_img, resample_img
from scipy.ndimage import binary_erosion

from nimare_mnm import MNMDecoder
from nimare_mnm.atlases import load_mask
from nimare_mnm.decoder import load_brain_image

FSL_2MM = np.array([[-2.0, 0, 0, 90], [0, 2, 0, -126], [0, 0, 2, -72], [0, 0, 0, 1]])
SPM_3MM = np.array([[3.0, 0, 0, -78], [0, 3, 0, -112], [0, 0, 3, -70], [0, 0, 0, 1]])


@pytest.fixture(scope="module")
def decoder():
    return MNMDecoder.load_pretrained(device="cpu")


@pytest.fixture(scope="module")
def motor():
    return load_img(load_sample_motor_activation_image())


@pytest.fixture(scope="module")
def reference(decoder, motor):
    return decoder.transform(motor)


@pytest.fixture(scope="module")
def motor_2mm(motor):
    mask = load_mask()
    return resample_img(
        motor,
        target_affine=mask.affine,
        target_shape=mask.shape,
        interpolation="linear",
        force_resample=True,
        copy_header=True,
    )


def _on_grid(img, affine, shape):
    return resample_img(
        img,
        target_affine=affine,
        target_shape=shape,
        interpolation="linear",
        force_resample=True,
        copy_header=True,
    )


def _agreement(table, reference):
    """Correlation of the term scores with the reference's, and top-10 overlap."""
    r = np.corrcoef(table["score"].reindex(reference.index), reference["score"])[0, 1]
    return r, len(set(table.index[:10]) & set(reference.index[:10]))


def _decode_quietly(decoder, img, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # none of these maps deserves a warning
        return decoder.transform(img, **kwargs)


def test_noise_over_the_whole_field_of_view_is_an_mni_map(decoder, motor, reference):
    # Refused before ("only 44 % of the signal inside the brain"): the space check now
    # looks at the geometry, not at where the signal is.
    data = motor.get_fdata()
    noisy = nib.Nifti1Image(
        data + np.random.default_rng(0).standard_normal(data.shape), motor.affine
    )
    table = _decode_quietly(decoder, noisy)
    r, overlap = _agreement(table, reference)
    assert r > 0.85 and overlap >= 4


def test_constant_image_on_a_3mm_grid_decodes(decoder):
    table = _decode_quietly(decoder, nib.Nifti1Image(np.ones((53, 63, 52)), SPM_3MM))
    assert np.isfinite(table["score"]).all()
    assert table.attrs["coverage"] > 0.99


def test_spm_style_nan_outside_its_analysis_mask(decoder, motor_2mm, reference):
    # Refused before ("29112 voxels inside the brain mask are NaN"): NaN means no data.
    brain = np.asanyarray(load_mask().dataobj) > 0
    analysis_mask = binary_erosion(brain, iterations=2)
    spm = nib.Nifti1Image(
        np.where(analysis_mask, motor_2mm.get_fdata(), np.nan).astype(np.float32),
        load_mask().affine,
    )
    table = _decode_quietly(decoder, spm)
    assert table.attrs["coverage"] == pytest.approx(
        (analysis_mask & brain).sum() / brain.sum(), abs=1e-6
    )
    r, overlap = _agreement(table, reference)
    # The model with term means gives r 0.97 and 5 of the top 10 (its term scores lie closer
    # together; the model before gave 6).
    assert r > 0.9 and overlap >= 5


def test_map_with_data_on_part_of_the_brain_warns_with_its_coverage(decoder, motor_2mm):
    brain = np.asanyarray(load_mask().dataobj) > 0
    data = motor_2mm.get_fdata()
    keep = np.indices(brain.shape)[1] > 60  # the front of the brain only
    partial = nib.Nifti1Image(np.where(keep, data, np.nan), load_mask().affine)
    expected = (keep & brain).sum() / brain.sum()
    assert 0.05 < expected < 0.5
    with pytest.warns(UserWarning, match=f"only {100 * expected:.0f} % of the MNI152 brain"):
        table = decoder.transform(partial)
    assert table.attrs["coverage"] == pytest.approx(expected, abs=1e-6)
    with pytest.warns(UserWarning, match="data on only"):
        values, coverage = load_brain_image(partial, return_coverage=True)
    assert coverage == pytest.approx(expected, abs=1e-6)
    assert np.isfinite(values).all() and not values[~keep[brain]].any()


def test_thresholded_map_with_zeros_elsewhere(decoder, motor, reference):
    data = motor.get_fdata()
    table = _decode_quietly(decoder, nib.Nifti1Image(np.where(data > 3.1, data, 0), motor.affine))
    assert table.attrs["coverage"] == reference.attrs["coverage"]  # zeros are data
    r, overlap = _agreement(table, reference)
    # Thresholding drops the sub-threshold signal, so the scores move somewhat: the shipped
    # model without the level term gave r 0.83 and 6 of the top 10, the model with term
    # means r 0.90 and 4 (its top scores lie closer together).
    assert r > 0.8 and overlap >= 4


def test_negative_only_map_needs_a_sign(decoder, motor, reference):
    data = motor.get_fdata()
    negated = nib.Nifti1Image(-data, motor.affine)
    table = _decode_quietly(decoder, negated, sign="negative")
    assert table.attrs["sign"] == "negative"
    r, overlap = _agreement(table, reference)
    assert r > 0.999 and overlap == 10
    deactivations = nib.Nifti1Image(-np.abs(data), motor.affine)
    with pytest.raises(ValueError, match="sign='negative'"):
        decoder.transform(deactivations)
    absolute = _decode_quietly(decoder, deactivations, sign="absolute")
    assert absolute.attrs["sign"] == "absolute"
    magnitude = nib.Nifti1Image(np.abs(data), motor.affine)
    assert np.allclose(absolute["score"], _decode_quietly(decoder, magnitude)["score"])
    with pytest.raises(ValueError, match="sign must be one of"):
        decoder.transform(motor, sign="both")


@pytest.mark.parametrize("affine, shape", [(FSL_2MM, (91, 109, 91)), (SPM_3MM, (53, 63, 52))])
def test_fsl_and_spm_grids_and_orientations_agree(decoder, motor, reference, affine, shape):
    img = _on_grid(motor, affine, shape)
    assert np.sign(img.affine[0, 0]) == np.sign(affine[0, 0])
    table = _decode_quietly(decoder, img)
    r, overlap = _agreement(table, reference)
    assert r > 0.98 and overlap >= 8


def test_signal_outside_the_brain_warns_but_decodes(decoder):
    mask = load_mask()
    data = np.zeros(mask.shape, dtype=np.float32)
    data[2:12, 2:12, 2:12] = 100.0  # a block in the corner of the field of view
    data[40:50, 50:60, 40:50] = 1.0  # a little signal in the brain
    with pytest.warns(UserWarning, match="registered to MNI space"):
        decoder.transform(nib.Nifti1Image(data, mask.affine))


def test_values_next_to_an_analysis_mask_edge_are_not_pulled_to_zero():
    # A constant map on an SPM 3 mm grid with NaN over the left hemisphere: every brain
    # voxel with data reads the constant, also where its interpolation neighbours are NaN.
    x = (np.indices((53, 63, 52))[0] * 3.0) - 78  # world x of each voxel
    img = nib.Nifti1Image(np.where(x < 0, np.nan, 5.0).astype(np.float32), SPM_3MM)
    values, coverage = load_brain_image(img, return_coverage=True)
    assert 0.4 < coverage < 0.6
    kept = values[values != 0]
    assert len(kept) == pytest.approx(coverage * len(values), rel=1e-6)
    np.testing.assert_allclose(kept, 5.0, rtol=1e-5)
