"""MNMDecoder: brain map -> ranked terms (with generality and level) and related studies."""

from __future__ import annotations

import logging
import os
import time
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from nimare.decode.base import Decoder
from sklearn.exceptions import NotFittedError

from nimare_mnm.datasets import NEUROQUERY_GROUP, annotation_term_counts, study_titles
from nimare_mnm.encoder import PRETRAINED_DIR, MNMEncoder
from nimare_mnm.features import prepare_brain
from nimare_mnm.model import radius_to_generality

LGR = logging.getLogger(__name__)

__all__ = ["MNMDecoder", "load_brain_image"]


#: Smallest fraction of the MNI152 brain mask an image's field of view must cover: the test
#: that an image is in MNI space looks at its geometry (affine and field of view).
MIN_COVERAGE = 0.9
#: Below this fraction of the brain mask with data (finite values inside the field of view),
#: decoding warns that the result rests on part of the brain.
WARN_DATA_FRACTION = 0.5
#: Below this fraction of the brain mask with data there is too little left to decode.
MIN_DATA_FRACTION = 0.05
#: Below this fraction of the image's signal inside the MNI152 brain, a warning suggests
#: checking the registration (an unmasked map of pure noise keeps about a quarter inside).
WARN_SIGNAL_INSIDE = 0.15
#: How a signed map is turned into the positive map the model reads.
SIGNS = ("positive", "negative", "absolute")


@lru_cache(maxsize=1)
def _mask_voxels() -> tuple[np.ndarray, np.ndarray, tuple]:
    """Homogeneous voxel indices (n_voxels, 4) of the MNI152 mask, its affine and shape."""
    from nimare_mnm.atlases import load_mask

    mask_img = load_mask()
    ijk = np.argwhere(np.asanyarray(mask_img.dataobj) > 0)
    return np.c_[ijk, np.ones(len(ijk))], mask_img.affine, mask_img.shape


def load_brain_image(img, *, return_coverage: bool = False):
    """Read a statistical map in MNI space onto the MNI152 2 mm brain mask.

    An image on another grid (any voxel size or orientation, e.g. FSL's 2 mm or SPM's 3 mm
    templates) is sampled at the mask voxels by linear interpolation
    (:func:`scipy.ndimage.map_coordinates`, order 1: no spline overshoot, so a negative map
    stays negative). This gives the values of nilearn's
    ``resample_to_img(img, mask, interpolation="linear")`` inside the mask without
    resampling the whole volume.

    NaN means "no data", as SPM and FSL write outside their analysis mask: such voxels (and
    any brain voxel outside the image's field of view) are set to 0 and left out of the
    coverage. Zeros (a thresholded map) are data.

    Parameters
    ----------
    img : path-like or :class:`nibabel.nifti1.Nifti1Image`
        A 3D image (or 4D with a single volume) on any grid in MNI space.
    return_coverage : :obj:`bool`, default=False
        Also return the fraction of the brain mask with data.

    Returns
    -------
    values : :class:`numpy.ndarray`
        float32 values over the mask voxels (see :func:`nimare_mnm.atlases.load_mask`), 0 where
        the image has no data.
    coverage : :obj:`float`
        Only with ``return_coverage``: the fraction of the mask's voxels with data.

    Raises
    ------
    FileNotFoundError
        The path does not exist.
    ValueError
        A file that is not a NIfTI image; a 4D image with several volumes; an image whose
        field of view does not cover the MNI brain (not in MNI space); infinite values inside
        the brain; data on under 5 % of the brain; a map that is all zero where it has data.

    Warns
    -----
    UserWarning
        Data on under half of the brain mask, or an image whose signal lies almost entirely
        outside the MNI152 brain (check its registration).
    """
    import warnings

    from scipy.ndimage import map_coordinates

    if isinstance(img, (str, os.PathLike)):
        if not os.path.exists(img):
            raise FileNotFoundError(f"No image at {os.fspath(img)}.")
        try:
            img = nib.load(os.fspath(img))
        except Exception as exc:
            raise ValueError(f"Could not read {os.fspath(img)} as a NIfTI image: {exc}") from exc
    if not isinstance(img, nib.spatialimages.SpatialImage):
        raise TypeError(f"Expected a NIfTI image or a path, got {type(img).__name__}.")
    if img.ndim == 4 and img.shape[3] == 1:
        img = nib.Nifti1Image(np.asanyarray(img.dataobj)[..., 0], img.affine, img.header)
    if img.ndim != 3:
        raise ValueError(
            f"Expected a 3D statistical map, got a {img.ndim}D image of shape {img.shape}: "
            "decode one volume at a time (nilearn.image.index_img)."
        )
    voxels, mask_affine, mask_shape = _mask_voxels()
    data = np.asanyarray(img.dataobj).astype(np.float32)
    if np.isinf(data).any():
        raise ValueError(
            f"The image holds {int(np.isinf(data).sum())} infinite values: a statistical map "
            "must be finite (NaN is read as 'no data')."
        )
    no_data = np.isnan(data)
    clean = np.where(no_data, 0.0, data).astype(np.float32) if no_data.any() else data
    # Where each mask voxel falls in the image's voxel grid.
    to_image = np.linalg.inv(img.affine) @ mask_affine
    if np.allclose(to_image, np.eye(4)) and img.shape == mask_shape:
        index = tuple(voxels[:, :3].astype(int).T)
        values, has_data = clean[index], ~no_data[index]
    else:
        coords = (voxels @ to_image[:3].T).T
        shape = np.asarray(img.shape)[:, None]
        inside = np.all((coords > -0.5) & (coords < shape - 0.5), axis=0)
        if inside.mean() < MIN_COVERAGE:
            raise ValueError(
                f"The image covers only {100 * inside.mean():.0f} % of the MNI152 brain: it "
                "does not look like a map in MNI space (check its affine, or normalise it "
                "first)."
            )
        values = map_coordinates(clean, coords, order=1, mode="constant", cval=0.0)
        if no_data.any():
            # Interpolate among the voxels with data only: next to an analysis mask's edge a
            # brain voxel takes the mean of its neighbours with data, not a mean pulled
            # towards the zeros that stand in for NaN.
            weight = map_coordinates(
                (~no_data).astype(np.float32), coords, order=1, mode="constant", cval=0.0
            )
            has_data = inside & (weight >= 0.5)
            values = np.where(has_data, values / np.maximum(weight, 0.5), 0.0)
        else:
            has_data = inside
    # Signal far outside the MNI brain suggests a registration problem (a warning only:
    # unmasked maps carry noise over the whole field of view).
    total = np.abs(clean).sum(dtype=np.float64) * abs(np.linalg.det(img.affine[:3, :3]))
    kept = np.abs(values[has_data]).sum(dtype=np.float64) * abs(np.linalg.det(mask_affine[:3, :3]))
    if total > 0 and kept / total < WARN_SIGNAL_INSIDE:
        warnings.warn(
            f"Only {100 * kept / total:.0f} % of the image's signal falls inside the MNI152 "
            "brain: check that the map is registered to MNI space.",
            UserWarning,
            stacklevel=2,
        )
    values = np.where(has_data, values, 0.0).astype(np.float32)
    coverage = float(has_data.mean())
    if coverage < MIN_DATA_FRACTION:
        raise ValueError(
            f"The image has data (non-NaN values) on only {100 * coverage:.1f} % of the "
            "MNI152 brain mask: too little to decode."
        )
    if coverage < WARN_DATA_FRACTION:
        warnings.warn(
            f"The image has data on only {100 * coverage:.0f} % of the MNI152 brain mask "
            "(NaN or outside its field of view elsewhere): the decoding rests on that part.",
            UserWarning,
            stacklevel=2,
        )
    if not values.any():
        raise ValueError("The image is all zero inside the brain mask: nothing to decode.")
    return (values, coverage) if return_coverage else values


class MNMDecoder(Decoder):
    """Decode a brain map into terms and studies in the shared hyperbolic space.

    The map is turned into a brain vector and embedded, together with its parts in every
    region of every level (by default each Yeo-7 and Yeo-17 network and Harvard-Oxford
    subcortical structure), by the encoder's brain network. Each term of the vocabulary is
    embedded by its text network; a term's score is the model's similarity between the two
    (minus the exterior angle of the map seen from the term's entailment cone for
    nimare-mnm).

    Parameters
    ----------
    encoder : :class:`~nimare_mnm.encoder.MNMEncoder` or path-like, default="pretrained"
        The model: ``"pretrained"`` (or None) for :meth:`MNMEncoder.load_pretrained`, the
        folder of a checkpoint, a fitted encoder (used as it is) or an unfitted one (fitted
        on the studies given to :meth:`fit`; this is what :func:`sklearn.base.clone` of a
        decoder holds).
    feature_group : :obj:`str`, optional
        Annotation group whose labels form the vocabulary (e.g.
        ``"neuroquery7547_abstract_count"``). Default: the NeuroQuery terms, read from the
        studyset's NeuroQuery annotation when it has one.
    features : :obj:`list` of :obj:`str`, optional
        Restrict the vocabulary to these terms (with or without the group prefix), or give a
        vocabulary of free-text terms when the studyset has no annotation.
    frequency_threshold : :obj:`float`, default=0.001
        A study uses a term when its annotation value is at least this.

    Attributes
    ----------
    features_ : :obj:`list` of :obj:`str`
        The vocabulary (terms without the group prefix).
    encoder_ : :class:`~nimare_mnm.encoder.MNMEncoder`
        The fitted encoder in use.
    term_points_ : :class:`numpy.ndarray`
        Their points in the shared space.
    term_radius_ : :class:`numpy.ndarray`
        Distance of each term to the origin (lower: more general).
    term_generality_ : :class:`numpy.ndarray`
        ``exp(-term_radius_)``: higher is more general.
    term_frequency_ : :class:`numpy.ndarray`
        Number of studies using each term (-1 when unknown).
    study_ids_, study_points_ : :class:`numpy.ndarray`
        Studies that :meth:`decode_studies` ranks, and their text points.
    study_titles_ : :class:`pandas.Series` or None
        Their titles, when the studyset gives them.
    """

    def __init__(
        self,
        encoder: MNMEncoder | str | os.PathLike | None = "pretrained",
        feature_group: str | None = None,
        features: list | None = None,
        frequency_threshold: float = 0.001,
    ) -> None:
        self.encoder = encoder
        self.feature_group = feature_group
        self.features = features
        self.frequency_threshold = frequency_threshold

    # ------------------------------------------------------------------ fitting
    def _check_fitted(self) -> None:
        if not hasattr(self, "term_points_"):
            raise NotFittedError(
                "This MNMDecoder is not fitted: call fit(studyset) or "
                "MNMDecoder.load_pretrained()."
            )

    def _resolve_encoder(self, studyset) -> MNMEncoder:
        """Return the fitted encoder that ``encoder`` names (fitting an unfitted one)."""
        spec = self.encoder
        if spec is None or (isinstance(spec, str) and spec == "pretrained"):
            return MNMEncoder.load_pretrained()
        if isinstance(spec, (str, os.PathLike)):
            return MNMEncoder.from_checkpoint(spec)
        if not isinstance(spec, MNMEncoder):
            raise TypeError(
                "encoder must be 'pretrained', a checkpoint folder or an MNMEncoder, got "
                f"{type(spec).__name__}."
            )
        if not hasattr(spec, "model_"):
            if studyset is None:
                raise NotFittedError(
                    "The decoder's encoder is not fitted and fit() got no studies to fit it "
                    "on: pass a studyset, a fitted encoder, or encoder='pretrained'."
                )
            n_studies = len(np.unique(studyset.study_ids))
            LGR.info("Fitting the decoder's encoder on the %d studies given.", n_studies)
            return spec.fit(studyset)
        return spec

    def fit(self, dataset=None, drop_invalid: bool = True) -> MNMDecoder:
        """Embed the vocabulary and the studies.

        Parameters
        ----------
        dataset : :class:`nimare.nimads.Studyset`, :class:`nimare.dataset.Dataset` or path
            Studies whose annotations give the vocabulary and term frequencies, and which
            :meth:`decode_studies` ranks (an unfitted ``encoder`` is trained on them).
            Without it, the pretrained model's NeuroQuery vocabulary and training studies
            are used.
        drop_invalid : :obj:`bool`, default=True
            Leave out of :meth:`decode_studies` the studies without any text; when False
            they are an error.

        Returns
        -------
        self
        """
        from nimare_mnm.datasets import as_studyset

        studyset = None if dataset is None else as_studyset(dataset)
        self._fit(studyset, drop_invalid=drop_invalid)
        return self

    def _fit(self, studyset, drop_invalid: bool = True) -> None:
        from nimare_mnm.datasets import study_texts

        t0 = time.perf_counter()
        encoder = self._resolve_encoder(studyset)
        self.encoder_ = encoder
        dataset = studyset
        if dataset is None:
            terms, frequency, term_points = self._pretrained_vocabulary()
            self.study_ids_ = encoder.study_ids_
            self.study_points_ = encoder.study_text_points_
            self.study_titles_ = None
        else:
            terms, frequency, term_points = self._vocabulary(studyset)
            texts = study_texts(studyset, drop_missing=drop_invalid)
            known = pd.Index(encoder.study_ids_)
            if known.isin(texts.index).all() and len(known) == len(texts):
                self.study_ids_ = encoder.study_ids_
                self.study_points_ = encoder.study_text_points_
            else:
                self.study_ids_ = np.asarray(texts.index.astype(str), dtype=object)
                self.study_points_ = encoder.embed_text(list(texts), cache=True)
            self.study_titles_ = study_titles(studyset)
        self._set_terms(terms, frequency, term_points)
        self.fit_seconds_ = time.perf_counter() - t0

    def _pretrained_vocabulary(self) -> tuple[list[str], np.ndarray, np.ndarray | None]:
        """Return the pretrained NeuroQuery terms, their counts and, for that model, points.

        With the pretrained encoder itself the stored term points are reused (no embedding);
        another encoder embeds the terms once, through the text encoder's disk cache.
        """
        if not (PRETRAINED_DIR / "config.json").exists():
            raise FileNotFoundError(
                "No vocabulary: pass a studyset with annotations, or features=[...]."
            )
        loaded = MNMDecoder.load_pretrained()
        terms, frequency = np.asarray(loaded.features_), loaded.term_frequency_
        points = loaded.term_points_
        if self.features is not None:
            keep = np.isin(terms, self._requested())
            terms, frequency, points = terms[keep], frequency[keep], points[keep]
        digest = getattr(self.encoder_, "weights_sha256_", None)
        same_model = digest is not None and digest == loaded.encoder_.weights_sha256_
        return [str(t) for t in terms], frequency, (points if same_model else None)

    def _requested(self) -> list[str]:
        group = (self.feature_group or NEUROQUERY_GROUP.rstrip("_")).rstrip("_") + "__"
        return [f[len(group) :] if f.startswith(group) else f for f in self.features]

    def _vocabulary(self, studyset) -> tuple[list[str], np.ndarray, np.ndarray | None]:
        """Terms, their study counts and (when known) points, and say where they came from."""
        import warnings

        labels = list(studyset.get_labels()) if len(studyset.annotations) else []
        if self.feature_group is not None:
            group = self.feature_group.rstrip("_") + "__"
        elif any(lb.startswith(NEUROQUERY_GROUP) for lb in labels):
            group = NEUROQUERY_GROUP
        elif self.features is not None:
            terms = [str(f) for f in self.features]
            LGR.info("Vocabulary: the %d terms given as features (no annotations).", len(terms))
            return terms, np.full(len(terms), -1, dtype=np.int64), None
        else:
            terms, counts, points = self._pretrained_vocabulary()
            groups = sorted({lb.split("__")[0] for lb in labels})
            found = f"its label groups: {groups}" if groups else "it has no labels"
            warnings.warn(
                f"The studyset has no NeuroQuery term annotations ({found}), so the decoder "
                "uses the pretrained model's NeuroQuery vocabulary "
                f"({len(terms):,} terms). Pass features=[...] to decode with your own terms.",
                UserWarning,
                stacklevel=3,
            )
            return terms, counts, points
        requested = self._requested() if self.features is not None else None
        terms, counts = annotation_term_counts(
            studyset, group, threshold=self.frequency_threshold, terms=requested
        )
        LGR.info("Vocabulary: %d terms of the %r annotations.", len(terms), group.rstrip("_"))
        return terms, counts, None

    def _set_terms(self, terms: list[str], frequency: np.ndarray, points=None) -> None:
        encoder = self.encoder_
        if points is None:
            many = len(terms) > 100
            if many:
                LGR.info("Embedding %d vocabulary terms (cached on disk).", len(terms))
            points = encoder.embed_text(list(terms), cache=many)
        self.features_ = list(terms)
        self.term_points_ = np.asarray(points, dtype=np.float32)
        self.term_radius_ = encoder.point_radius(self.term_points_)
        self.term_generality_ = radius_to_generality(self.term_radius_)
        self.term_frequency_ = np.asarray(frequency, dtype=np.int64)

    # ------------------------------------------------------------------ decoding
    def _image_points(self, img, sign: str = "positive") -> tuple[np.ndarray, list, float]:
        """Points of the map and of its parts in every region, and the map's coverage.

        Returns the (1 + n_regions, embed_dim) points, the (level, region) name of each and
        the fraction of the brain mask where the image has data.
        """
        if sign not in SIGNS:
            raise ValueError(f"sign must be one of {SIGNS}, got {sign!r}.")
        encoder = self.encoder_
        values, coverage = load_brain_image(img, return_coverage=True)
        signed = {"positive": values, "negative": -values, "absolute": np.abs(values)}[sign]
        positive = np.clip(signed, 0, None)
        if not positive.any():
            other = "negative" if sign == "positive" else "positive"
            raise ValueError(
                f"The map has no {'positive' if sign != 'negative' else 'negative'} value "
                f"inside the brain: decode its {other} part with sign={other!r}, or both "
                "with sign='absolute'."
            )
        vector = encoder.vectorizer_.transform(positive)[0]
        parts, names = [vector], [("whole", "whole_brain")]
        parcel = encoder.vectorizer_.parcel_level_
        for level in encoder.levels_:
            for r, name in enumerate(encoder.region_names_[level.name]):
                part = np.where(parcel[level.name] == r, vector, 0.0)
                if part.any():
                    parts.append(part)
                    names.append((level.name, name))
        prepared = prepare_brain(np.stack(parts))["brain"]
        with torch.no_grad():
            points = encoder.model_.encode_brain(torch.as_tensor(prepared)).numpy()
        return points, names, coverage

    def transform(self, img, sign: str = "positive") -> pd.DataFrame:
        """Rank the vocabulary for a brain map.

        Parameters
        ----------
        img : path-like or :class:`nibabel.nifti1.Nifti1Image`
            A 3D map in MNI space, on any grid and orientation (it is resampled). NaN means
            no data (see :func:`load_brain_image`).
        sign : {"positive", "negative", "absolute"}, default="positive"
            Which part of a signed map is decoded: the activations, the deactivations, or
            both (the absolute value).

        Returns
        -------
        :class:`pandas.DataFrame`
            Indexed ``feature``, best first, with columns ``score`` (similarity between the
            term and the whole map), ``radius`` (the term's distance to the origin; lower is
            more general), ``generality`` (``exp(-radius)``; higher is more general),
            ``frequency`` (studies using it; -1 when unknown), ``level`` and
            ``region`` (the part of the map the term is most similar to: the whole brain or a
            region of a level, by default a Yeo-7 or Yeo-17 network or a subcortical
            structure). ``attrs["coverage"]`` is
            the fraction of the brain mask where the image has data and ``attrs["sign"]``
            the part decoded.
        """
        self._check_fitted()
        points, names, coverage = self._image_points(img, sign)
        sim = self.encoder_.similarity(self.term_points_, points)
        best = sim.argmax(axis=1)
        out = pd.DataFrame(
            {
                "score": sim[:, 0],
                "radius": self.term_radius_,
                "generality": self.term_generality_,
                "frequency": self.term_frequency_,
                "level": [names[b][0] for b in best],
                "region": [names[b][1] for b in best],
            },
            index=pd.Index(self.features_, name="feature"),
        )
        out = out.sort_values("score", ascending=False, kind="stable")
        out.attrs.update(coverage=coverage, sign=sign)
        return out

    def decode_studies(self, img, k: int = 10, sign: str = "positive") -> pd.DataFrame:
        """Return the ``k`` studies whose text is nearest to a brain map.

        Parameters
        ----------
        img : path-like or :class:`nibabel.nifti1.Nifti1Image`
            A 3D map in MNI space (NaN means no data).
        k : :obj:`int`, default=10
            Number of studies.
        sign : {"positive", "negative", "absolute"}, default="positive"
            Which part of a signed map is decoded (see :meth:`transform`).

        Returns
        -------
        :class:`pandas.DataFrame`
            Indexed ``id`` (study id), best first, with ``score`` and, when known, ``title``;
            ``attrs["coverage"]`` as in :meth:`transform`.
        """
        self._check_fitted()
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}.")
        points, _, coverage = self._image_points(img, sign)
        # Study texts are the queries, the map the key: the same direction as training
        # (text -> brain), which matters for the asymmetric exterior-angle similarity.
        sim = self.encoder_.similarity(self.study_points_, points[:1])[:, 0]
        k = min(k, len(sim))
        top = np.argsort(-sim, kind="stable")[:k]
        out = pd.DataFrame(
            {"score": sim[top]}, index=pd.Index(self.study_ids_[top].astype(str), name="id")
        )
        if self.study_titles_ is not None:
            out["title"] = self.study_titles_.reindex(out.index).to_numpy()
        out.attrs.update(coverage=coverage, sign=sign)
        return out

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, path) -> Path:
        """Write the encoder, the vocabulary and the term points as one checkpoint folder."""
        self._check_fitted()
        return self.encoder_.save_checkpoint(
            path,
            extra_config={
                "decoder": {
                    "features": self.features_,
                    "frequency_threshold": self.frequency_threshold,
                    "feature_group": self.feature_group,
                }
            },
            extra_arrays={
                "terms.points": self.term_points_.astype(np.float16),
                "terms.frequency": self.term_frequency_.astype(np.int32),
            },
        )

    @classmethod
    def from_checkpoint(cls, path, device: str = "auto") -> MNMDecoder:
        """Load a decoder written by :meth:`save_checkpoint` (no corpus needed)."""
        from nimare_mnm.checkpoint import read_encoder_checkpoint

        contents = read_encoder_checkpoint(path)
        config, arrays = contents.config, contents.arrays
        if "decoder" not in config or "terms.points" not in arrays:
            raise ValueError(f"The checkpoint in {path} holds an encoder but no decoder terms.")
        encoder = MNMEncoder.from_checkpoint(contents, device=device)
        dec = cls(
            encoder=encoder,
            feature_group=config["decoder"].get("feature_group"),
            frequency_threshold=config["decoder"].get("frequency_threshold", 0.001),
        )
        dec.encoder_ = encoder
        dec.study_ids_ = encoder.study_ids_
        dec.study_points_ = encoder.study_text_points_
        dec.study_titles_ = None
        features = config["decoder"]["features"]
        if len(features) != len(arrays["terms.points"]):
            raise ValueError(f"The checkpoint in {path} is corrupt: terms and points differ.")
        dec._set_terms(features, arrays["terms.frequency"], points=arrays["terms.points"])
        return dec

    @classmethod
    def load_pretrained(cls, device: str = "auto") -> MNMDecoder:
        """Load the default decoder shipped with nimare-mnm (offline, no corpus needed)."""
        if not (PRETRAINED_DIR / "config.json").exists():
            raise FileNotFoundError(
                f"The pretrained model is missing from {PRETRAINED_DIR}; reinstall nimare-mnm "
                "or train one with scripts/train_pretrained.py."
            )
        return cls.from_checkpoint(PRETRAINED_DIR, device=device)
