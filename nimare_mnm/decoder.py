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

from nimare_mnm.encoder import MAP_LEVELS, PRETRAINED_DIR, MNMEncoder

LGR = logging.getLogger(__name__)

__all__ = ["MNMDecoder", "load_brain_image"]

#: Prefix of NeuroQuery's abstract term annotation in the Studysets of
#: :func:`nimare_mnm.load_neuroquery` (NiMARE's label names).
NEUROQUERY_GROUP = "neuroquery7547_abstract_count__"

#: Smallest fraction of the MNI152 brain mask an image's field of view must cover.
MIN_COVERAGE = 0.9
#: Smallest fraction of an image's signal that must fall inside the MNI152 brain.
MIN_SIGNAL_INSIDE = 0.5


@lru_cache(maxsize=1)
def _mask_voxels() -> tuple[np.ndarray, np.ndarray, tuple]:
    """Homogeneous voxel indices (n_voxels, 4) of the MNI152 mask, its affine and shape."""
    from nimare_mnm.brain import load_mask

    mask_img = load_mask()
    ijk = np.argwhere(np.asanyarray(mask_img.dataobj) > 0)
    return np.c_[ijk, np.ones(len(ijk))], mask_img.affine, mask_img.shape


def load_brain_image(img) -> np.ndarray:
    """Read a statistical map in MNI space onto the MNI152 2 mm brain mask.

    An image on another grid is sampled at the mask voxels by linear interpolation
    (:func:`scipy.ndimage.map_coordinates`, order 1: no spline overshoot, so a negative map
    stays negative). This gives the values of nilearn's
    ``resample_to_img(img, mask, interpolation="linear")`` inside the mask without
    resampling the whole volume.

    Parameters
    ----------
    img : path-like or :class:`nibabel.nifti1.Nifti1Image`
        A 3D image (or 4D with a single volume) on any grid in MNI space.

    Returns
    -------
    :class:`numpy.ndarray`
        float32 values over the mask voxels (see :func:`nimare_mnm.brain.load_mask`).

    Raises
    ------
    FileNotFoundError
        The path does not exist.
    ValueError
        A 4D image with several volumes; an image whose field of view does not cover the MNI
        brain or whose signal lies mostly outside it (not in MNI space); NaN or infinite
        values inside the brain; a map that is all zero inside the brain.
    """
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
    # Where each mask voxel falls in the image's voxel grid.
    to_image = np.linalg.inv(img.affine) @ mask_affine
    if np.allclose(to_image, np.eye(4)) and img.shape == mask_shape:
        values = data[tuple(voxels[:, :3].astype(int).T)]
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
        finite = np.isfinite(data)
        clean = data if finite.all() else np.where(finite, data, 0.0).astype(np.float32)
        values = map_coordinates(clean, coords, order=1, mode="constant", cval=0.0)
        if not finite.all():
            # NaN inside the brain must not be hidden by the interpolation.
            nearest = np.clip(np.rint(coords).astype(int), 0, shape - 1)
            values[inside & ~finite[tuple(nearest)]] = np.nan
        # Signal outside the MNI brain means the image is in another space.
        total = np.abs(clean).sum(dtype=np.float64) * abs(np.linalg.det(img.affine[:3, :3]))
        kept = np.abs(np.nan_to_num(values)).sum(dtype=np.float64) * abs(
            np.linalg.det(mask_affine[:3, :3])
        )
        if total > 0 and kept / total < MIN_SIGNAL_INSIDE:
            raise ValueError(
                f"Only {100 * kept / total:.0f} % of the image's signal falls inside the MNI152 "
                "brain: it does not look like a map in MNI space."
            )
    values = values.astype(np.float32)
    bad = ~np.isfinite(values)
    if bad.any():
        raise ValueError(
            f"{int(bad.sum())} voxels inside the brain mask are NaN or infinite. If they mean "
            "'no data', replace them first, e.g. "
            "nilearn.image.math_img('np.nan_to_num(img)', img=img)."
        )
    if not values.any():
        raise ValueError("The image is all zero inside the brain mask: nothing to decode.")
    return values


class MNMDecoder(Decoder):
    """Decode a brain map into terms and studies in the shared hyperbolic space.

    The map is turned into a brain vector and embedded, together with its parts in every
    Yeo-7 and Yeo-17 network and Harvard-Oxford subcortical structure, by the encoder's brain
    network. Each term of the vocabulary is embedded by its text network; a term's score is
    the model's similarity between the two (negative hyperbolic distance for nimare-mnm).

    Parameters
    ----------
    encoder : :class:`~nimare_mnm.encoder.MNMEncoder`, optional
        A fitted encoder; default: :meth:`MNMEncoder.load_pretrained`.
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
    term_points_ : :class:`numpy.ndarray`
        Their points in the shared space.
    term_generality_ : :class:`numpy.ndarray`
        Hyperbolic distance of each term to the origin (lower: more general).
    term_frequency_ : :class:`numpy.ndarray`
        Number of studies using each term (-1 when unknown).
    study_ids_, study_points_ : :class:`numpy.ndarray`
        Studies that :meth:`decode_studies` ranks, and their text points.
    study_titles_ : :class:`pandas.Series` or None
        Their titles, when the studyset gives them.
    """

    def __init__(
        self,
        encoder: MNMEncoder | None = None,
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
            raise RuntimeError(
                "This MNMDecoder is not fitted: call fit(studyset) or "
                "MNMDecoder.load_pretrained()."
            )

    def _fit(self, dataset):  # pragma: no cover - fit() is overridden
        raise NotImplementedError

    def fit(self, dataset=None, drop_invalid: bool = True) -> MNMDecoder:
        """Embed the vocabulary and the studies.

        Parameters
        ----------
        dataset : :class:`nimare.nimads.Studyset`, :class:`nimare.dataset.Dataset` or path
            Studies whose annotations give the vocabulary and term frequencies, and which
            :meth:`decode_studies` ranks. Without it, the pretrained model's NeuroQuery
            vocabulary and training studies are used.
        drop_invalid : :obj:`bool`, default=True
            Unused; kept for NiMARE's ``Decoder.fit`` signature.

        Returns
        -------
        self
        """
        from nimare_mnm.datasets import as_studyset, study_texts

        t0 = time.perf_counter()
        encoder = self.encoder if self.encoder is not None else MNMEncoder.load_pretrained()
        encoder._check_fitted()
        self.encoder_ = encoder
        if dataset is None:
            terms, frequency = self._pretrained_vocabulary()
            self.study_ids_ = encoder.study_ids_
            self.study_points_ = encoder.study_text_points_
            self.study_titles_ = None
        else:
            studyset = as_studyset(dataset)
            terms, frequency = self._vocabulary(studyset)
            texts = study_texts(studyset)
            known = pd.Index(encoder.study_ids_)
            if known.isin(texts.index).all() and len(known) == len(texts):
                self.study_ids_ = encoder.study_ids_
                self.study_points_ = encoder.study_text_points_
            else:
                self.study_ids_ = np.asarray(texts.index.astype(str), dtype=object)
                embeddings = encoder._get_text_encoder().encode(list(texts))
                with torch.no_grad():
                    points = encoder.model_.encode_text(torch.as_tensor(embeddings))
                self.study_points_ = points.numpy()
            self.study_titles_ = _titles(studyset)
        self._set_terms(terms, frequency)
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    def _pretrained_vocabulary(self) -> tuple[list[str], np.ndarray]:
        if not (PRETRAINED_DIR / "config.json").exists():
            raise FileNotFoundError(
                "No vocabulary: pass a studyset with annotations, or features=[...]."
            )
        loaded = MNMDecoder.load_pretrained()
        terms, frequency = loaded.features_, loaded.term_frequency_
        if self.features is not None:
            keep = np.isin(terms, self._requested())
            terms, frequency = list(np.asarray(terms)[keep]), frequency[keep]
        return [str(t) for t in terms], frequency

    def _requested(self) -> list[str]:
        group = (self.feature_group or NEUROQUERY_GROUP.rstrip("_")).rstrip("_") + "__"
        return [f[len(group) :] if f.startswith(group) else f for f in self.features]

    def _vocabulary(self, studyset) -> tuple[list[str], np.ndarray]:
        """Terms and their study counts from the studyset's annotations."""
        labels = list(studyset.get_labels()) if len(studyset.annotations) else []
        if self.feature_group is not None:
            group = self.feature_group.rstrip("_") + "__"
        elif any(lb.startswith(NEUROQUERY_GROUP) for lb in labels):
            group = NEUROQUERY_GROUP
        elif self.features is not None:
            terms = [str(f) for f in self.features]
            return terms, np.full(len(terms), -1, dtype=np.int64)
        else:
            return self._pretrained_vocabulary()
        columns = [lb for lb in labels if lb.startswith(group)]
        if not columns:
            raise ValueError(
                f"The studyset has no annotation labels starting with {group!r}; "
                f"available groups: {sorted({lb.split('__')[0] for lb in labels})}."
            )
        block = studyset.label_block()
        values = block.values.tocsc()
        col = {lb: j for j, lb in enumerate(block.labels)}
        study_of = pd.Series(np.asarray(studyset.study_ids).astype(str))
        terms, counts = [], []
        requested = set(self._requested()) if self.features is not None else None
        for label in columns:
            term = label[len(group) :]
            if requested is not None and term not in requested:
                continue
            j = col[label]
            lo, hi = values.indptr[j], values.indptr[j + 1]
            rows = values.indices[lo:hi][values.data[lo:hi] >= self.frequency_threshold]
            terms.append(term)
            counts.append(study_of.iloc[rows].nunique())
        counts = np.asarray(counts, dtype=np.int64)
        keep = counts > 0
        if not keep.any():
            raise ValueError("No term of the vocabulary is used by any study.")
        LGR.info("Vocabulary: %d of %d terms used by at least one study.", keep.sum(), len(keep))
        return [str(t) for t in np.asarray(terms)[keep]], counts[keep]

    def _set_terms(self, terms: list[str], frequency: np.ndarray, points=None) -> None:
        encoder = self.encoder_
        if points is None:
            embeddings = encoder._get_text_encoder().encode(list(terms))
            with torch.no_grad():
                points = encoder.model_.encode_text(torch.as_tensor(embeddings)).numpy()
        self.features_ = list(terms)
        self.term_points_ = np.asarray(points, dtype=np.float32)
        with torch.no_grad():
            generality = encoder.model_.generality(torch.as_tensor(self.term_points_))
        self.term_generality_ = generality.numpy()
        self.term_frequency_ = np.asarray(frequency, dtype=np.int64)

    # ------------------------------------------------------------------ decoding
    def _image_points(self, img) -> tuple[np.ndarray, list[tuple[str, str]], np.ndarray]:
        """Points of the map and of its parts in every region: (1 + n_regions, embed_dim)."""
        from nimare_mnm.training import prepare_brain

        encoder = self.encoder_
        values = load_brain_image(img)
        positive = np.clip(values, 0, None)
        if not positive.any():
            raise ValueError(
                "The map has no positive value inside the brain; to decode deactivations, "
                "decode the negated map."
            )
        vector = encoder.vectorizer_.transform(positive)[0]
        parts, names = [vector], [("whole", "whole_brain")]
        parcel = encoder.vectorizer_.parcel_level_
        for level in MAP_LEVELS:
            for r, name in enumerate(encoder.region_names_[level]):
                part = np.where(parcel[level] == r, vector, 0.0)
                if part.any():
                    parts.append(part)
                    names.append((level, name))
        prepared = prepare_brain(np.stack(parts))["brain"]
        with torch.no_grad():
            points = encoder.model_.encode_brain(torch.as_tensor(prepared)).numpy()
        return points, names, vector

    def transform(self, img) -> pd.DataFrame:
        """Rank the vocabulary for a brain map.

        Parameters
        ----------
        img : path-like or :class:`nibabel.nifti1.Nifti1Image`
            A 3D map in MNI space, on any grid (it is resampled). Its positive part is
            decoded.

        Returns
        -------
        :class:`pandas.DataFrame`
            Indexed ``feature``, best first, with columns ``score`` (similarity between the
            term and the whole map), ``generality`` (the term's distance to the origin; lower
            is more general), ``frequency`` (studies using it; -1 when unknown), ``level`` and
            ``region`` (the part of the map the term is most similar to: the whole brain, a
            Yeo-7 or Yeo-17 network or a subcortical structure).
        """
        self._check_fitted()
        points, names, _ = self._image_points(img)
        sim = self.encoder_.similarity(self.term_points_, points)
        best = sim.argmax(axis=1)
        out = pd.DataFrame(
            {
                "score": sim[:, 0],
                "generality": self.term_generality_,
                "frequency": self.term_frequency_,
                "level": [names[b][0] for b in best],
                "region": [names[b][1] for b in best],
            },
            index=pd.Index(self.features_, name="feature"),
        )
        return out.sort_values("score", ascending=False, kind="stable")

    def decode_studies(self, img, k: int = 10) -> pd.DataFrame:
        """Return the ``k`` studies whose text is nearest to a brain map.

        Parameters
        ----------
        img : path-like or :class:`nibabel.nifti1.Nifti1Image`
            A 3D map in MNI space.
        k : :obj:`int`, default=10
            Number of studies.

        Returns
        -------
        :class:`pandas.DataFrame`
            Indexed ``id`` (study id), best first, with ``score`` and, when known, ``title``.
        """
        self._check_fitted()
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}.")
        points, _, _ = self._image_points(img)
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
        encoder, config, arrays = MNMEncoder._from_checkpoint(path, device)
        if "decoder" not in config or "terms.points" not in arrays:
            raise ValueError(f"The checkpoint in {path} holds an encoder but no decoder terms.")
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


def _titles(studyset) -> pd.Series | None:
    """Study titles by study id, when the studyset has them."""
    try:
        meta = studyset.get_metadata(field="title")
    except Exception:  # noqa: BLE001 - titles are optional decoration
        return None
    ids = np.asarray(studyset.study_ids).astype(str)
    if len(meta) != len(ids):
        return None
    titles = pd.Series(list(meta), index=ids)
    return titles[~titles.index.duplicated()]
