"""MNMEncoder: text -> brain maps per level, and study retrieval for ALE/MKDA, NiMARE-style."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from nimare.base import NiMAREBase
from sklearn.exceptions import NotFittedError

from nimare_mnm.confidence import MAX_QUERY_CHARS
from nimare_mnm.features import prepare_brain, to_density
from nimare_mnm.levels import check_levels
from nimare_mnm.model import radius_to_generality
from nimare_mnm.text import validate_texts
from nimare_mnm.utils import ids_digest

LGR = logging.getLogger(__name__)

__all__ = ["MNMEncoder", "PRETRAINED_DIR", "fit_meta_analysis"]

#: Folder of the pretrained model shipped inside the package.
PRETRAINED_DIR = Path(__file__).parent / "data" / "pretrained"

#: Candidate numbers of nearest training studies whose mean map stands in for the decoder
#: head of a model trained without one; :meth:`MNMEncoder.fit` picks one on validation.
NEIGHBOUR_GRID = (5, 10, 20, 50, 100, 200, 400, 800)

#: Neighbours of a decoder-less checkpoint written before the number was chosen on validation.
N_NEIGHBOURS = 10

#: Queries turned into maps at once by :meth:`MNMEncoder.transform` (bounds its memory).
TRANSFORM_CHUNK = 64


class MNMEncoder(NiMAREBase):
    """Text-to-brain encoder on a shared Lorentz hyperbolic space (MNM, Baek et al. 2025).

    ``fit`` embeds every study's text (all-MiniLM-L6-v2 by default) and turns its peaks into a
    density map (Gaussian, ``fwhm``), then trains the hyperbolic backbone
    (:mod:`nimare_mnm.training`). ``transform`` predicts a brain map for a free-text query at
    the whole-brain, Yeo-7, Yeo-17 and subcortical levels; ``retrieve`` returns the training
    studies most related to a query as a Studyset that NiMARE's ALE and MKDA fit directly.

    Parameters
    ----------
    preset : {"nimare-mnm", "nimare-mnm-v2.1", "nimare-mnm-v2", "nimare-mnm-v1", \
"nimare-mnm-cones", "mnm", "meru", "clip"}, default="nimare-mnm"
        Objective, geometry and text input (see :data:`nimare_mnm.presets.PRESETS`).
    text_model : :obj:`str` or object with an ``encode`` method, default="all-MiniLM-L6-v2"
        Sentence encoder: the offline default, a local folder or a Hugging Face name (run
        by :class:`~nimare_mnm.text.TextEncoder`), or any object whose ``encode`` turns a
        list of strings into an (n, dim) array of embeddings. With the default preset the
        text head also reads the TF-IDF of the vocabulary terms the training texts use
        (``term_features_``).
    embed_dim : :obj:`int`, default=128
        Dimension of the hyperbolic space.
    hidden_dim : :obj:`int`, default=256
        Width of the encoders.
    epochs : :obj:`int`, default=40
        Maximum number of epochs (training stops early on the validation split).
    batch_size : :obj:`int`, default=512
        Studies per contrastive batch.
    learning_rate : :obj:`float`, default=1e-3
        AdamW learning rate.
    val_fraction : :obj:`float`, default=0.1
        Fraction of the studies held out for early stopping and model selection.
    fwhm : :obj:`float`, default=9.0
        FWHM (mm) of the Gaussian put on every peak.
    block_mm : :obj:`float`, default=12.0
        Edge of the supervoxel cubes of the brain vector.
    data_dir : :obj:`str`, optional
        Where the atlases and corpora are (argument, then ``NIMARE_MNM_DATA``, then NiMARE's
        defaults).
    device : :obj:`str`, default="auto"
        "auto" (CUDA when available), "cpu" or "cuda".
    seed : :obj:`int`, default=0
        Seed of the initialisation, the validation split and the batch order.
    levels : :obj:`tuple` of :class:`~nimare_mnm.levels.Level`, optional
        The brain levels besides the whole brain (default :data:`nimare_mnm.levels.LEVELS`:
        Yeo-7, Yeo-17, subcortical).

    Attributes
    ----------
    model_ : :class:`~nimare_mnm.model.MNMModel`
        The trained backbone (evaluation mode, on the CPU).
    vectorizer_ : :class:`~nimare_mnm.vectorizer.BrainVectorizer`
        Brain vector <-> voxels.
    levels_ : :obj:`tuple` of :class:`~nimare_mnm.levels.Level`
        The level specification the model was trained with (a checkpoint records it).
    region_labels_ : :obj:`dict`
        For each level of :attr:`levels_`, the region of each mask voxel (-1: none).
    region_names_ : :obj:`dict`
        For each level, the region names.
    study_ids_ : :class:`numpy.ndarray`
        Ids of the training studies.
    study_text_points_, study_brain_points_ : :class:`numpy.ndarray`
        Their text and brain points in the shared space.
    validation_ids_ : :class:`numpy.ndarray`
        Ids of the training studies held out for early stopping (and, without a decoder
        head, for choosing ``n_neighbours_``); absent from a model loaded from a checkpoint.
    n_neighbours_ : :obj:`int`
        Only for presets without a decoder head: the number of nearest training studies
        (by the model's text -> brain similarity) whose mean map is the predicted map,
        chosen among :data:`NEIGHBOUR_GRID` by the mean Pearson r on the validation
        studies.
    studyset_ : :class:`nimare.nimads.Studyset` or None
        The training studies (None for a model loaded from a checkpoint, which asks for the
        corpus when :meth:`retrieve` needs it).
    training_ : :obj:`dict`
        Training record: history, best epoch, validation Recall@10, timings, corpus.
    vocabulary_ : :class:`~nimare_mnm.confidence.QueryVocabulary` or None
        The terms the training studies use (their NeuroQuery terms when the studyset has
        them, else the words of at least two training texts), which give each query its
        confidence; None for a checkpoint that does not record one.
    term_features_ : :class:`~nimare_mnm.term_features.TermFeatures` or None
        The vocabulary terms whose TF-IDF the text head reads beside the sentence embedding
        (presets with ``term_features``), fitted on the training texts; None otherwise.
    term_map_terms_, term_map_sources_ : :class:`numpy.ndarray`, sparse matrix or None
        Presets with ``term_maps`` only: the terms whose maps the model trained on and, as an
        (n_terms, n_studies) boolean CSR matrix whose columns follow ``study_ids_``, the
        training studies that built each map (never a validation study); see
        :meth:`term_map_studies`. None otherwise.
    confidence_threshold_ : :obj:`float`
        Queries less confident than this get a warning: the confidence that 1 % of the
        validation studies' titles fall below (NaN when not calibrated).
    weights_sha256_ : :obj:`str`
        Only for a model loaded from a checkpoint: the digest of its weights.

    Examples
    --------
    >>> from nimare_mnm import MNMEncoder
    >>> enc = MNMEncoder.load_pretrained()  # doctest: +SKIP
    >>> res = enc.transform("finger tapping")  # doctest: +SKIP
    >>> res.get_map("z")  # doctest: +SKIP
    """

    def __init__(
        self,
        preset: str = "nimare-mnm",
        text_model: str = "all-MiniLM-L6-v2",
        embed_dim: int = 128,
        hidden_dim: int = 256,
        epochs: int = 40,
        batch_size: int = 512,
        learning_rate: float = 1e-3,
        val_fraction: float = 0.1,
        fwhm: float = 9.0,
        block_mm: float = 12.0,
        data_dir: str | None = None,
        device: str = "auto",
        seed: int = 0,
        levels: tuple | None = None,
    ) -> None:
        self.preset = preset
        self.text_model = text_model
        self.embed_dim = embed_dim
        self.hidden_dim = hidden_dim
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.val_fraction = val_fraction
        self.fwhm = fwhm
        self.block_mm = block_mm
        self.data_dir = data_dir
        self.device = device
        self.seed = seed
        self.levels = levels

    # ------------------------------------------------------------------ pickling
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        # The sentence encoder reloads itself; the masker is rebuilt on demand.
        state.pop("_text_encoder", None)
        state.pop("_masker", None)
        state.pop("_regions", None)  # rebuilt from region_labels_
        state.pop("_loaded_corpus", None)  # a corpus read for retrieval is read again
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if "region_labels_" in state:
            self._index_regions()
        state.setdefault("levels", None)

    # ------------------------------------------------------------------ fitting
    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError(
                f"This {type(self).__name__} is not fitted: call fit(studyset) or use "
                f"{type(self).__name__}.load_pretrained()."
            )

    def fit(self, studyset, drop_invalid: bool = True) -> MNMEncoder:
        """Train the backbone on a collection of studies.

        Parameters
        ----------
        studyset : :class:`nimare.nimads.Studyset`, :class:`nimare.dataset.Dataset` or path
            Studies with coordinates and text (abstracts, or titles, keywords and terms as
            :func:`nimare_mnm.load_neuroquery` builds them).
        drop_invalid : :obj:`bool`, default=True
            Leave out studies without any peak inside the brain mask (they have no map to
            learn from); when False such studies are an error.

        Returns
        -------
        self
        """
        from nimare_mnm.atlases import BrainLevels
        from nimare_mnm.datasets import as_studyset
        from nimare_mnm.densities import PeakDensity
        from nimare_mnm.features import corpus_arrays
        from nimare_mnm.levels import LevelLayout
        from nimare_mnm.presets import preset as get_preset
        from nimare_mnm.training import TrainConfig, default_val_rows, query_views, train
        from nimare_mnm.vectorizer import BrainVectorizer

        t0 = time.perf_counter()
        spec = get_preset(self.preset)
        level_spec = check_levels(self.levels)
        studyset = as_studyset(studyset)
        n_given = len(np.unique(studyset.study_ids))
        try:
            levels = BrainLevels(self.data_dir, level_spec).fit()
        except FileNotFoundError as exc:
            raise FileNotFoundError(
                "Training needs the atlases that define the brain levels (Yeo-7, Yeo-17 and "
                "Harvard-Oxford subcortical): they go in the atlases/ subfolder of data_dir= "
                "(or of NIMARE_MNM_DATA), as ../shared/data/atlases holds them, or nilearn "
                f"downloads them once with internet access. {exc}"
            ) from exc
        vectorizer = BrainVectorizer(block_mm=self.block_mm, data_dir=self.data_dir).fit(levels)
        arrays = corpus_arrays(
            studyset,
            encoder=self.get_text_encoder(),
            vectorizer=vectorizer,
            density=PeakDensity(fwhm=self.fwhm),
        )
        if len(arrays.ids) < n_given and not drop_invalid:
            raise ValueError(
                f"{n_given - len(arrays.ids)} studies have no peak inside the brain mask."
            )
        if len(arrays.ids) < 20:
            raise ValueError(
                f"Only {len(arrays.ids)} studies with peaks inside the brain: too few to train."
            )
        layout = LevelLayout.from_vectorizer(vectorizer, level_spec)
        train_config = TrainConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.learning_rate,
            val_fraction=self.val_fraction,
            seed=self.seed,
            device=self.device,
            **spec.train,
        )
        self.term_features_ = None
        if spec.term_features:
            # Vocabulary and document frequencies from the rows training fits on only.
            fit_texts = np.delete(
                np.asarray(arrays.texts, dtype=object),
                default_val_rows(len(arrays.ids), train_config),
            )
            try:
                self.term_features_ = _fit_term_features(studyset, fit_texts, spec.term_features)
            except ValueError as exc:  # e.g. a small corpus: no term is frequent enough
                import warnings

                warnings.warn(
                    f"No term features ({exc}): the text head reads the sentence embedding only.",
                    UserWarning,
                    stacklevel=2,
                )
            else:
                term_input = self.term_features_.transform(arrays.texts)
                arrays.text = np.hstack([arrays.text, term_input])
        model_config = spec.model_config(
            text_dim=arrays.text.shape[1],
            brain_dim=arrays.brain.shape[1],
            embed_dim=self.embed_dim,
            hidden_dim=self.hidden_dim,
            n_level_tokens=len(level_spec) + 1,
        )
        text, brain, val_rows, term_maps, term_text = arrays.text, arrays.brain, None, None, None
        n_studies = len(arrays.ids)
        if spec.term_maps:
            # (term, term map) pairs join the training rows; the maps are built from the
            # training rows only, never from the rows training validates on.
            val_rows = default_val_rows(n_studies, train_config)
            term_maps, term_text = _term_pairs(
                studyset, arrays, val_rows, spec.term_maps, self._input_encoder()
            )
            if term_maps is not None:
                text = np.concatenate([text, term_text])
                brain = np.concatenate([brain, term_maps.maps])
                # The studies' rows become views of the training arrays, so that the
                # originals are freed rather than held twice during training.
                arrays.text, arrays.brain = text[:n_studies], brain[:n_studies]
        views = None
        if spec.query_views:
            # One view position at a time, straight into an array with room for the term
            # rows (a term's views are the term itself): no second copy of the views.
            rows = query_views(arrays.texts, seed=self.seed)
            views = np.empty((len(text), len(rows[0]), text.shape[1]), dtype=np.float32)
            input_encoder = self._input_encoder()
            for j in range(views.shape[1]):
                views[:n_studies, j] = input_encoder.encode([row[j] for row in rows])
            views[n_studies:] = text[n_studies:, None]
        cone_text = cone_usage = None
        if spec.loss.needs_terms and term_maps is not None:
            cone_text, cone_usage = term_text, _term_usage_rows(term_maps, arrays.ids, len(text))
        result = train(
            text,
            brain,
            model_config=model_config,
            loss_config=spec.loss,
            train_config=train_config,
            layout=layout,
            val_rows=val_rows,
            text_views=views,
            term_text=cone_text,
            term_usage=cone_usage,
        )
        self._set_fitted(
            model=result.model.cpu(),
            similarity=spec.similarity,
            vectorizer=vectorizer,
            levels=level_spec,
            region_labels={lv.name: levels.labels_[lv.name] for lv in level_spec},
            region_names={lv.name: list(levels.names_[lv.name]) for lv in level_spec},
            study_ids=arrays.ids,
            text=arrays.text,
            brain=arrays.brain,
        )
        self.validation_ids_ = np.asarray(
            [str(i) for i in arrays.ids[result.val_rows]], dtype=object
        )
        self.term_map_terms_ = self.term_map_sources_ = None
        if term_maps is not None:
            self.term_map_terms_ = np.asarray(term_maps.terms, dtype=object)
            self.term_map_sources_ = _term_usage_rows(term_maps, arrays.ids, len(arrays.ids)).T
            self.term_map_sources_ = self.term_map_sources_.tocsr()
        if self.model_.decoder is None:
            self.n_neighbours_ = _choose_neighbours(
                self.study_text_points_,
                self.study_brain_points_,
                arrays.brain,
                result.val_rows,
                self.similarity,
            )
        self.studyset_ = studyset
        self.training_ = {
            "n_studies": len(arrays.ids),
            "study_ids_sha256": ids_digest(arrays.ids),
            "best_epoch": result.best_epoch,
            "best_val_recall_at_10": result.best_val_recall_at_10,
            "validation_ids_sha256": ids_digest(self.validation_ids_),
            "n_neighbours": getattr(self, "n_neighbours_", None),
            "train_seconds": result.fit_seconds,
            "fit_seconds": time.perf_counter() - t0,
            "device": result.device,
            "history": result.history,
            "preset": self.preset,
            "loss": spec.loss.to_dict(),
            "train_config": train_config.to_dict(),
        }
        if self.term_features_ is not None:
            self.training_["term_features"] = {
                "min_texts": spec.term_features,
                "n_terms": len(self.term_features_),
            }
        if term_maps is not None:
            self.training_["term_maps"] = {
                "min_studies": spec.term_maps,
                "n_terms": len(term_maps),
                "source_ids_sha256": ids_digest(term_maps.study_ids),
            }
        try:
            self._fit_vocabulary(studyset, arrays.texts, result.val_rows)
        except ValueError as exc:  # a finished training run is not lost for it
            import warnings

            self.vocabulary_, self.confidence_threshold_ = None, np.nan
            warnings.warn(
                f"No query vocabulary could be built ({exc}): query confidence is NaN.",
                UserWarning,
                stacklevel=2,
            )
        return self

    def _fit_vocabulary(self, studyset, texts, val_rows) -> None:
        """Set the query vocabulary and calibrate the confidence threshold on validation."""
        from nimare_mnm.confidence import (
            CALIBRATION_QUANTILE,
            QueryVocabulary,
            calibrate_threshold,
        )
        from nimare_mnm.datasets import study_titles

        terms, source = _training_terms(studyset, texts, min_df=2)
        self.vocabulary_ = QueryVocabulary(terms)
        titles = study_titles(studyset)
        queries = [] if titles is None else titles.reindex(self.validation_ids_).dropna()
        queries = [str(q) for q in queries if str(q).strip() not in ("", "n/a")]
        calibration = "validation titles"
        if len(queries) < len(self.validation_ids_) // 2:
            queries, calibration = [str(texts.iloc[i]) for i in val_rows], "validation texts"
        self.confidence_threshold_ = calibrate_threshold(self.vocabulary_, queries)
        self.training_["query_confidence"] = {
            "threshold": self.confidence_threshold_,
            "quantile": CALIBRATION_QUANTILE,
            "calibration": calibration,
            "n_calibration": len(queries),
            "vocabulary": source,
            "n_terms": len(self.vocabulary_),
        }

    def _set_fitted(
        self,
        *,
        model,
        similarity: str,
        vectorizer,
        levels: tuple,
        region_labels: dict,
        region_names: dict,
        study_ids,
        text: np.ndarray | None = None,
        brain: np.ndarray | None = None,
        text_points: np.ndarray | None = None,
        brain_points: np.ndarray | None = None,
        study_vectors: np.ndarray | None = None,
    ) -> None:
        """Store the fitted state; points are computed from text/brain when not given."""
        from nimare_mnm.model import embed_all

        model.eval()
        # A new model: the digest of loaded weights and a corpus read for retrieval go.
        self.__dict__.pop("weights_sha256_", None)
        self.__dict__.pop("_loaded_corpus", None)
        self.model_ = model
        self.similarity_ = similarity
        self.vectorizer_ = vectorizer
        self.levels_ = tuple(levels)
        self.region_labels_ = region_labels
        self.region_names_ = region_names
        self.study_ids_ = np.asarray([str(i) for i in study_ids], dtype=object)
        with torch.no_grad():
            if text_points is None:
                text_points = embed_all(model, text, "text", "cpu").numpy()
            if brain_points is None:
                prepared = prepare_brain(brain)["brain"]
                brain_points = embed_all(model, prepared, "brain", "cpu").numpy()
        self.study_text_points_ = np.asarray(text_points, dtype=np.float32)
        self.study_brain_points_ = np.asarray(brain_points, dtype=np.float32)
        if model.decoder is None:
            # Without a decoder head, maps are the mean of the nearest training studies'.
            if study_vectors is None:
                study_vectors = prepare_brain(brain)["brain"].astype(np.float16)
            self.study_vectors_ = np.asarray(study_vectors, dtype=np.float16)
        self._index_regions()

    def _index_regions(self) -> None:
        from nimare_mnm.results import RegionStatistics

        self._regions = RegionStatistics(self.region_labels_, self.region_names_)

    # ------------------------------------------------------------------ helpers
    def get_text_encoder(self):
        """Return the sentence encoder that embeds texts for this model.

        ``text_model`` itself when it has an ``encode`` method, else a
        :class:`~nimare_mnm.text.TextEncoder` of that name, created on first use.
        """
        if not isinstance(self.text_model, (str, bytes, os.PathLike)) and hasattr(
            self.text_model, "encode"
        ):
            return self.text_model
        from nimare_mnm.text import TextEncoder

        if getattr(self, "_text_encoder", None) is None:
            self._text_encoder = TextEncoder(self.text_model, device=self.device)
        return self._text_encoder

    def _input_encoder(self):
        """Return what turns texts into the model's text input.

        The sentence encoder, followed by the TF-IDF of the model's vocabulary terms when
        it was trained with them (see :mod:`nimare_mnm.term_features`).
        """
        from nimare_mnm.term_features import TermAugmentedEncoder

        features = getattr(self, "term_features_", None)
        if features is None:
            return self.get_text_encoder()
        return TermAugmentedEncoder(self.get_text_encoder(), features)

    def _encode_texts(self, texts: list[str], cache: bool = False) -> np.ndarray:
        """Text inputs of validated texts (the disk cache only for a TextEncoder)."""
        from nimare_mnm.term_features import TermAugmentedEncoder
        from nimare_mnm.text import TextEncoder

        encoder = self._input_encoder()
        if isinstance(encoder, (TextEncoder, TermAugmentedEncoder)):
            embeddings = encoder.encode(texts, cache=cache)
        else:
            embeddings = encoder.encode(texts)
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.shape != (len(texts), self.model_.config.text_dim):
            n_terms = len(self.term_features_) if isinstance(encoder, TermAugmentedEncoder) else 0
            after = f" (followed by {n_terms} term features)" if n_terms else ""
            got = (embeddings.shape[0], embeddings.shape[1] - n_terms) if n_terms else None
            raise ValueError(
                f"The text encoder returned embeddings of shape {got or embeddings.shape}; the "
                f"model needs ({len(texts)}, {self.model_.config.text_dim - n_terms}){after}."
            )
        if not np.isfinite(embeddings).all():
            raise ValueError("The text encoder returned NaN or infinite embeddings.")
        return embeddings

    @property
    def masker_(self):
        """NiftiMasker of the MNI152 2 mm brain mask that every map lives in."""
        if getattr(self, "_masker", None) is None:
            import nibabel as nib
            from nimare.utils import get_masker

            from nimare_mnm.atlases import load_mask

            # The mask's header says uint8; images unmasked with it copy that header, and
            # nibabel would save a float map as uint8 with a scale factor (errors up to
            # 0.02 z). A float32 header makes every map this masker writes exact.
            mask = load_mask()
            mask = nib.Nifti1Image(np.asanyarray(mask.dataobj), mask.affine, mask.header)
            mask.set_data_dtype(np.float32)
            self._masker = get_masker(mask)
        return self._masker

    def similarity(self, queries: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """All-pairs similarity (higher: closer) between points of the shared space.

        The similarity the model was trained with (:attr:`similarity_`): minus the exterior
        angle of ``keys`` seen from the entailment cones of ``queries`` for the angle
        presets (asymmetric: queries are text points, keys brain points, as in training),
        minus the geodesic distance, or the cosine.

        Parameters
        ----------
        queries, keys : :class:`numpy.ndarray`
            (n, embed_dim) and (m, embed_dim) points, e.g. from :meth:`embed_text` and
            :meth:`embed_studies`.

        Returns
        -------
        :class:`numpy.ndarray`
            (n, m) similarities.
        """
        self._check_fitted()
        with torch.no_grad():
            return self.model_.similarity(
                self.similarity_, torch.as_tensor(queries), torch.as_tensor(keys)
            ).numpy()

    def embed_text(self, text, cache: bool = False) -> np.ndarray:
        """Points of texts in the shared space, shape (n_texts, embed_dim).

        Parameters
        ----------
        text : :obj:`str` or :obj:`list` of :obj:`str`
            Queries.
        cache : :obj:`bool`, default=False
            Read and write the text encoder's disk cache (worth it for texts embedded again
            and again, such as a corpus; interactive queries skip it).

        Returns
        -------
        :class:`numpy.ndarray`
        """
        self._check_fitted()
        texts, _ = validate_texts(text, MAX_QUERY_CHARS)
        embeddings = self._encode_texts(texts, cache=cache)
        with torch.no_grad():
            return self.model_.encode_text(torch.as_tensor(embeddings)).numpy()

    def embed_studies(self, studyset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Text and brain points of studies (their text and their peaks' density map).

        Parameters
        ----------
        studyset : :class:`nimare.nimads.Studyset`, :class:`nimare.dataset.Dataset` or path
            Studies with text and coordinates, e.g. held-out studies to rank against queries.
            Their text embeddings use the text encoder's disk cache.

        Returns
        -------
        ids : :class:`numpy.ndarray`
            Study ids (studies without any peak inside the brain mask are left out).
        text_points, brain_points : :class:`numpy.ndarray`
            (n_studies, embed_dim) points, comparable with :meth:`similarity`.
        """
        from nimare_mnm.densities import PeakDensity
        from nimare_mnm.features import corpus_arrays
        from nimare_mnm.model import embed_all

        self._check_fitted()
        arrays = corpus_arrays(
            studyset,
            encoder=self._input_encoder(),
            vectorizer=self.vectorizer_,
            density=PeakDensity(fwhm=self.fwhm),
        )
        with torch.no_grad():
            text_points = self.model_.encode_text(torch.as_tensor(arrays.text)).numpy()
            prepared = prepare_brain(arrays.brain)["brain"]
            brain_points = embed_all(self.model_, prepared, "brain", "cpu").numpy()
        return arrays.ids, text_points, brain_points

    def confidence(self, text, warn: bool = True) -> pd.DataFrame:
        """How much of each query the model's vocabulary recognises.

        A query's confidence is the fraction of its content words that lie inside a term the
        training studies use (:class:`~nimare_mnm.confidence.QueryVocabulary`): 1 for
        "working memory", 0 for "???", an emoji or a language the model was not trained on.
        A map predicted for a query of low confidence rests on the text encoder alone.

        Parameters
        ----------
        text : :obj:`str` or :obj:`list` of :obj:`str`
            Queries.
        warn : :obj:`bool`, default=True
            Warn about queries below :attr:`confidence_threshold_`.

        Returns
        -------
        :class:`pandas.DataFrame`
            One row per query: ``text``, ``confidence`` (NaN when the model has no
            vocabulary), ``terms`` (the recognised terms, ``"; "``-separated) and ``low``
            (below the threshold, or no term recognised at all).
        """
        self._check_fitted()
        texts, _ = validate_texts(text, MAX_QUERY_CHARS)
        vocabulary = getattr(self, "vocabulary_", None)
        if vocabulary is None:
            found = [(np.nan, [])] * len(texts)
        else:
            found = [vocabulary.recognise(t) for t in texts]
        threshold = getattr(self, "confidence_threshold_", np.nan)
        table = pd.DataFrame(
            {
                "text": texts,
                "confidence": [c for c, _ in found],
                "terms": ["; ".join(terms) for _, terms in found],
            }
        )
        # Nothing recognised is always low, whatever the calibration gave.
        table["low"] = (table["confidence"] < threshold) | (table["confidence"] == 0)
        if warn:
            self._warn_low_confidence(table, stacklevel=3)
        return table

    def _warn_low_confidence(self, table: pd.DataFrame, stacklevel: int) -> None:
        import warnings

        if not table["low"].any():
            return
        low = table[table["low"]]
        shown = ", ".join(repr(t[:40]) for t in low["text"].head(5))
        record = self.training_.get("query_confidence", {})
        threshold = getattr(self, "confidence_threshold_", np.nan)
        calibrated = (
            f"below {threshold:.2f}, the level {100 * record.get('quantile', 0.01):g} % of the "
            f"{record.get('calibration', 'validation queries')} fall below"
            if np.isfinite(threshold)
            else "no term recognised"
        )
        warnings.warn(
            f"{len(low)} of {len(table)} queries are barely recognised by the model's "
            f"vocabulary (confidence {calibrated}): {shown}. Their maps rest on the text "
            "encoder alone; use English neuroscience terms.",
            UserWarning,
            stacklevel=stacklevel,
        )

    def term_map_studies(self, term: str) -> np.ndarray:
        """Ids of the training studies whose mean map was ``term``'s map during training.

        Parameters
        ----------
        term : :obj:`str`
            A term of ``term_map_terms_``.

        Returns
        -------
        :class:`numpy.ndarray`
            Study ids (strings), in ``study_ids_`` order.

        Raises
        ------
        NotFittedError
            The encoder is not fitted.
        TypeError
            ``term`` is not a string.
        ValueError
            No term maps were built or recorded for this model.
        KeyError
            ``term`` had no map: it is not one of ``term_map_terms_`` (the lower-case
            NeuroQuery vocabulary terms used by enough training studies).
        """
        self._check_fitted()
        if not isinstance(term, str):
            raise TypeError(f"term must be a string, got {type(term).__name__}.")
        if getattr(self, "term_map_sources_", None) is None:
            raise ValueError(
                "This model has no term maps: none were built when it was fitted (a preset "
                "without term_maps, or a studyset without NeuroQuery term annotations) or "
                "recorded in its checkpoint."
            )
        where = np.flatnonzero(self.term_map_terms_ == term)
        if not len(where):
            hint = ""
            if term != term.strip().lower() and np.any(
                self.term_map_terms_ == term.strip().lower()
            ):
                hint = f" (did you mean {term.strip().lower()!r}?)"
            raise KeyError(
                f"No term map for {term!r}{hint}: term maps were built for the "
                f"{len(self.term_map_terms_)} terms of term_map_terms_, the NeuroQuery "
                "vocabulary terms used by enough training studies."
            )
        return self.study_ids_[self.term_map_sources_[where[0]].indices]

    def radius(self, text) -> np.ndarray:
        """Distance of each text's point to the origin (hyperbolic; lower: more general).

        Parameters
        ----------
        text : :obj:`str` or :obj:`list` of :obj:`str`
            Queries.

        Returns
        -------
        :class:`numpy.ndarray`
            (n_texts,) distances.
        """
        return self.point_radius(self.embed_text(text))

    def point_radius(self, points: np.ndarray) -> np.ndarray:
        """Distance of points of the shared space to its origin."""
        self._check_fitted()
        with torch.no_grad():
            return self.model_.radius(torch.as_tensor(points)).numpy()

    def generality(self, text) -> np.ndarray:
        """Generality of each text: ``exp(-radius)``, in (0, 1]; higher is more general.

        1 at the origin of the space, where the most general concepts belong, and falling
        towards 0 as points move outward (see :meth:`radius`).
        """
        return radius_to_generality(self.radius(text))

    def _predict_vectors(self, points: np.ndarray) -> np.ndarray:
        """Predicted brain vectors (density scale) from text points."""
        if self.model_.decoder is not None:
            with torch.no_grad():
                return to_density(self.model_.decode(torch.as_tensor(points)).numpy())
        # The mean of the neighbours' square-rooted maps, kept on that scale: on the
        # validation split it matched the true maps better (r 0.110) than the mean of their
        # raw maps (0.095) or its square.
        from nimare_mnm.utils import neighbour_mean

        scores = self.similarity(points, self.study_brain_points_)
        k = getattr(self, "n_neighbours_", N_NEIGHBOURS)
        return neighbour_mean(scores, self.study_vectors_, k)

    def predict_maps(self, text, cache: bool = False) -> np.ndarray:
        """Predicted whole-brain maps (z-scored over the mask voxels) for texts.

        Parameters
        ----------
        text : :obj:`str` or :obj:`list` of :obj:`str`
            Queries.
        cache : :obj:`bool`, default=False
            Use the text encoder's disk cache (see :meth:`embed_text`).

        Returns
        -------
        :class:`numpy.ndarray`
            (n_texts, n_voxels) float32 maps over the brain mask (see :attr:`masker_`).
        """
        return self._maps_from_points(self.embed_text(text, cache=cache))

    def _maps_from_points(self, points: np.ndarray) -> np.ndarray:
        maps = self.vectorizer_.inverse_transform(self._predict_vectors(points))
        return _zscore_rows(maps)

    # ------------------------------------------------------------------ transform
    def transform(self, text):
        """Predict brain maps for free-text queries.

        Parameters
        ----------
        text : :obj:`str` or :obj:`list` of :obj:`str`
            One query or several.

        Returns
        -------
        :class:`nimare.results.MetaResult` or :obj:`list` of them
            One per text (a single result for a single string). Maps:

            - ``"z"``: the predicted whole-brain map, z-scored over the brain mask;
            - ``"z_level-<level>"`` for each level of :attr:`levels_` (by default
              ``"z_level-yeo7"``, ``"z_level-yeo17"``, ``"z_level-subcortical"``): the same
              prediction z-scored within each region of that level (each Yeo network, each
              Harvard-Oxford structure), zero outside the level's regions, so that the pattern
              inside every network is visible on its own scale. They are computed from
              ``"z"`` and the ``"levels"`` table when first read (see
              :class:`~nimare_mnm.results.LevelMaps`), which keeps large batches fast and
              small.

            Tables: ``"query"`` (the text; the distance of its point to the origin,
            ``radius``, and its ``generality``, see :meth:`generality`; its confidence and the
            vocabulary terms recognised in it, see :meth:`confidence`) and ``"levels"`` (one
            row per region of every level: mean, standard deviation and peak z of the
            whole-brain prediction inside the region, its number of voxels, and the region's
            rank by mean z within its level).
        """
        from nimare.results import MetaResult

        from nimare_mnm.results import LevelMaps

        texts, single = validate_texts(text, MAX_QUERY_CHARS)
        points = self.embed_text(texts)
        radius = self.point_radius(points)
        confidence = self.confidence(texts, warn=False)
        self._warn_low_confidence(confidence, stacklevel=3)
        stub = self._stub()
        description = (
            "nimare-mnm prediction for {!r} ({} model). Maps are z-scored over the brain mask "
            "(whole brain) or within each region."
        )
        results = []
        # Chunks bound the temporary memory; every step inside is vectorised over the chunk.
        for start in range(0, len(texts), TRANSFORM_CHUNK):
            maps = self._maps_from_points(points[start : start + TRANSFORM_CHUNK])
            stats, tables = self._regions(maps)
            for i, table in enumerate(tables):
                query = texts[start + i]
                result = MetaResult(
                    stub,
                    mask=self.masker_,
                    maps={"z": maps[i]},
                    tables={
                        "query": pd.DataFrame(
                            {
                                "text": [query],
                                "radius": [float(radius[start + i])],
                                "generality": [float(radius_to_generality(radius[start + i]))],
                                "confidence": [confidence["confidence"].iloc[start + i]],
                                "terms": [confidence["terms"].iloc[start + i]],
                            }
                        ),
                        "levels": table,
                    },
                    description=description.format(query, self.preset),
                )
                # The level maps are computed from "z" and the table when first read.
                result.maps = LevelMaps(
                    maps[i],
                    {
                        level: (self.region_labels_[level], mean[:, i], sd[:, i])
                        for level, (mean, sd) in stats.items()
                    },
                )
                results.append(result)
        return results[0] if single else results

    def _stub(self) -> MNMEncoder:
        """Return an unfitted copy with the same parameters (what MetaResult deep-copies)."""
        return type(self)(**self.get_params(deep=False))

    # ------------------------------------------------------------------ retrieval
    def _corpus(self, studyset=None, data_dir: str | None = None):
        """Return the studies that retrieval draws from.

        ``studyset`` wins; then an explicit ``data_dir`` (that folder's NeuroQuery files,
        read once and kept while the same folder is asked for); then the studies the model
        was fitted on; then the encoder's ``data_dir`` or ``NIMARE_MNM_DATA``; then the folder
        of an earlier call. Retrieval never changes the fitted attributes.
        """
        from nimare_mnm.datasets import as_studyset
        from nimare_mnm.utils import get_data_dir

        if studyset is not None:
            return as_studyset(studyset)
        if data_dir is None and getattr(self, "studyset_", None) is not None:
            return self.studyset_
        corpus = getattr(self, "training_", {}).get("corpus")
        if corpus != "neuroquery":
            if getattr(self, "studyset_", None) is not None:
                raise ValueError(
                    "data_dir= only serves models trained on NeuroQuery; this model retrieves "
                    "from the studies it was fitted on (leave data_dir out)."
                )
            raise ValueError(
                "This model does not hold its training studies; pass them as studyset=."
            )
        folder = get_data_dir(data_dir if data_dir is not None else self.data_dir)
        loaded = self.__dict__.get("_loaded_corpus")
        if folder is None and loaded is not None:
            return loaded[1]  # the folder of an earlier retrieve(..., data_dir=...)
        if folder is None:
            raise ValueError(
                "Retrieval returns the training studies' coordinates, which the pretrained "
                "model does not ship: pass data_dir= (the folder holding neuroquery/, e.g. "
                "../shared/data) or set NIMARE_MNM_DATA."
            )
        key = os.path.realpath(folder)
        if loaded is None or loaded[0] != key:
            from nimare_mnm.datasets import load_neuroquery

            loaded = (key, load_neuroquery(folder, download=False))
            self._loaded_corpus = loaded
        return loaded[1]

    def retrieval_scores(self, text, cache: bool = False) -> pd.DataFrame:
        """Similarity of every training study to each query (how :meth:`retrieve` ranks).

        A study's score is the similarity of the query's text point to the study's brain
        point (what the model was trained to rank) plus that to the study's text point.

        Parameters
        ----------
        text : :obj:`str` or :obj:`list` of :obj:`str`
            Queries.
        cache : :obj:`bool`, default=False
            Use the text encoder's disk cache (see :meth:`embed_text`).

        Returns
        -------
        :class:`pandas.DataFrame`
            (n_studies, n_texts), indexed by study id.
        """
        texts, _ = validate_texts(text, MAX_QUERY_CHARS)
        points = self.embed_text(texts, cache=cache)
        scores = self.similarity(points, self.study_brain_points_) + self.similarity(
            points, self.study_text_points_
        )
        return pd.DataFrame(scores.T, index=pd.Index(self.study_ids_, name="id"), columns=texts)

    def retrieve(self, text: str, k: int = 50, studyset=None, data_dir: str | None = None):
        """Return the ``k`` training studies most related to a query, as a Studyset.

        Parameters
        ----------
        text : :obj:`str`
            The query.
        k : :obj:`int`, default=50
            Number of studies.
        studyset : :class:`nimare.nimads.Studyset`, optional
            The training studies; needed only by a model that does not hold them and was not
            trained on NeuroQuery.
        data_dir : :obj:`str`, optional
            Folder with the NeuroQuery files, for a pretrained model.

        Returns
        -------
        :class:`nimare.nimads.Studyset`
            The studies, with their score in the ``mnm_score`` metadata column and their rank
            (1 = best) in ``mnm_rank``; NiMARE's ``ALE(kernel__fwhm=10)`` and ``MKDADensity()``
            fit it directly.
        """
        if not isinstance(text, str):
            raise TypeError("retrieve() takes one query string.")
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}.")
        self._check_fitted()
        corpus = self._corpus(studyset, data_dir)  # fail fast when the corpus is missing
        scores = self.retrieval_scores(text).iloc[:, 0]
        available = pd.Index(np.asarray(corpus.study_ids).astype(str))
        scores = scores[scores.index.isin(available)]
        if len(scores) == 0:
            raise ValueError("None of the model's training studies is in the given studyset.")
        if k > len(scores):
            raise ValueError(f"k={k} exceeds the {len(scores)} studies available.")
        top = scores.sort_values(ascending=False, kind="stable").iloc[:k]
        # Metadata columns span the whole underlying store, not just this view's analyses.
        store = corpus.store
        analysis_study = pd.Series(np.asarray(store.study_key)[store.study_idx].astype(str))
        score = analysis_study.map(top).to_numpy(dtype=float)
        rank = analysis_study.map(pd.Series(np.arange(1, k + 1), index=top.index))
        out = corpus.with_metadata("mnm_score", score.tolist())
        out = out.with_metadata("mnm_rank", rank.to_numpy(dtype=float).tolist())
        return out.filter_study_ids(list(top.index))

    def meta_analysis(self, text: str, k: int = 50, estimator=None, **kwargs):
        """Run a coordinate-based meta-analysis on the ``k`` studies retrieved for a query.

        Parameters
        ----------
        text : :obj:`str`
            The query.
        k : :obj:`int`, default=50
            Number of studies.
        estimator : NiMARE CBMA estimator, optional
            Default: ``nimare.meta.cbma.ALE(kernel__fwhm=10)`` (NeuroQuery has no sample
            sizes, so the kernel width is fixed).
        **kwargs
            Passed to :meth:`retrieve` (``studyset``, ``data_dir``).

        Returns
        -------
        :class:`nimare.results.MetaResult`
        """
        from nimare.meta.cbma import ALE

        studies = self.retrieve(text, k=k, **kwargs)
        estimator = estimator if estimator is not None else ALE(kernel__fwhm=10)
        return fit_meta_analysis(estimator, studies)

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, path, extra_config: dict | None = None, extra_arrays=None) -> Path:
        """Write the fitted model as a portable checkpoint (safetensors + JSON).

        Unlike :meth:`save` (a pickle, NiMARE's format), the checkpoint holds no Python
        objects: it is safe to share and loads across versions of the libraries.

        Parameters
        ----------
        path : path-like
            Folder to write (replaced atomically).
        extra_config, extra_arrays : :obj:`dict`, optional
            More configuration and arrays to store.

        Returns
        -------
        :class:`pathlib.Path`
        """
        from nimare_mnm.checkpoint import encoder_contents, save_model

        self._check_fitted()
        config, arrays = encoder_contents(self)
        config.update(extra_config or {})
        arrays.update(extra_arrays or {})
        return save_model(self.model_, path, extra_config=config, extra_arrays=arrays)

    @classmethod
    def from_checkpoint(cls, path, device: str = "auto", text_model=None) -> MNMEncoder:
        """Load a model written by :meth:`save_checkpoint`.

        Parameters
        ----------
        path : path-like or :class:`~nimare_mnm.checkpoint.EncoderCheckpoint`
            The checkpoint folder, or its contents as
            :func:`~nimare_mnm.checkpoint.read_encoder_checkpoint` returns them.
        device : :obj:`str`, default="auto"
            Device of the text encoder.
        text_model : :obj:`str` or object with an ``encode`` method, optional
            The text encoder, instead of the one the checkpoint names; needed when the model
            was trained with a custom encoder object (which a checkpoint cannot hold).

        Raises
        ------
        FileNotFoundError, ValueError
            Missing, corrupt or incompatible checkpoint.
        """
        from nimare_mnm.checkpoint import EncoderCheckpoint, read_encoder_checkpoint

        contents = path if isinstance(path, EncoderCheckpoint) else read_encoder_checkpoint(path)
        config = contents.config
        params = {**contents.params, "device": device}
        if text_model is not None:
            params["text_model"] = text_model
        elif str(params["text_model"]).startswith("custom:"):
            raise ValueError(
                f"The checkpoint in {contents.path} was trained with a custom text encoder "
                f"({params['text_model'][7:]}): pass it as text_model=."
            )
        encoder = cls(**params)
        encoder._set_fitted(
            model=contents.model,
            similarity=contents.similarity,
            vectorizer=contents.vectorizer,
            levels=contents.levels,
            region_labels=contents.region_labels,
            region_names=contents.region_names,
            study_ids=contents.study_ids,
            text_points=contents.text_points,
            brain_points=contents.brain_points,
            study_vectors=contents.study_vectors,
        )
        if contents.model.decoder is None:
            encoder.n_neighbours_ = int(config.get("n_neighbours") or N_NEIGHBOURS)
        encoder.studyset_ = None
        encoder.weights_sha256_ = config.get("sha256")
        encoder.training_ = {**config.get("training", {}), "history": config.get("history", [])}
        encoder._load_vocabulary(config, contents.path)
        encoder.term_map_terms_ = encoder.term_map_sources_ = None
        if "term_map_terms" not in config and any(
            key.startswith("term_maps.") for key in contents.arrays
        ):
            raise ValueError(
                f"The checkpoint in {contents.path}: term map sources without their terms "
                "(config.json has no term_map_terms)."
            )
        if "term_map_terms" in config:
            import scipy.sparse as sp

            terms = np.asarray(config["term_map_terms"], dtype=object)
            indptr = contents.arrays.get("term_maps.indptr")
            indices = contents.arrays.get("term_maps.indices")
            n = len(encoder.study_ids_)
            if (
                indptr is None
                or indices is None
                or len(indptr) != len(terms) + 1
                or indptr[0] != 0
                or np.any(np.diff(indptr.astype(np.int64)) < 0)
                or indptr[-1] != len(indices)
            ):
                raise ValueError(
                    f"The checkpoint in {contents.path}: term map sources are incomplete."
                )
            indices = indices.astype(np.int64)
            if len(indices) and (indices.min() < 0 or indices.max() >= n):
                raise ValueError(
                    f"The checkpoint in {contents.path}: term map sources point past its studies."
                )
            encoder.term_map_terms_ = terms
            encoder.term_map_sources_ = sp.csr_matrix(
                (np.ones(len(indices), dtype=bool), indices, indptr.astype(np.int64)),
                shape=(len(terms), n),
            )
        encoder.term_features_ = None
        if config.get("term_features"):
            from nimare_mnm.term_features import TermFeatures

            try:
                encoder.term_features_ = TermFeatures.from_dict(config["term_features"])
            except ValueError as exc:
                raise ValueError(f"The checkpoint in {contents.path}: {exc}") from exc
        return encoder

    def _load_vocabulary(self, config: dict, path) -> None:
        """Query vocabulary and threshold of a checkpoint.

        Checkpoints written before the vocabulary was stored fall back to their decoder's
        terms (the same NeuroQuery terms of the training studies) and say so.
        """
        from nimare_mnm.confidence import QueryVocabulary

        terms = config.get("vocabulary") or (config.get("decoder") or {}).get("features")
        record = config.get("query_confidence") or {}
        self.vocabulary_ = QueryVocabulary(terms) if terms else None
        self.confidence_threshold_ = float(record.get("threshold", np.nan))
        if record:
            self.training_["query_confidence"] = record
        if self.vocabulary_ is None:
            LGR.warning(
                "The checkpoint in %s records no vocabulary: query confidence is unavailable "
                "(NaN).",
                path,
            )
        elif np.isnan(self.confidence_threshold_):
            LGR.warning(
                "The checkpoint in %s has no calibrated confidence threshold: queries get a "
                "confidence but no warning.",
                path,
            )

    @classmethod
    def load_pretrained(cls, device: str = "auto") -> MNMEncoder:
        """Load the default model shipped with nimare-mnm (offline, no corpus needed).

        It was trained by ``scripts/train_pretrained.py`` on the NeuroQuery studies outside
        the evaluation protocol's test split; its configuration records the split seed and
        a SHA-256 of the training study ids.
        """
        if not (PRETRAINED_DIR / "config.json").exists():
            raise FileNotFoundError(
                f"The pretrained model is missing from {PRETRAINED_DIR}; reinstall nimare-mnm "
                "or train one with scripts/train_pretrained.py."
            )
        return cls.from_checkpoint(PRETRAINED_DIR, device=device)


class _DropMessage(logging.Filter):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def fit_meta_analysis(estimator, studies):
    """Fit a NiMARE CBMA estimator on retrieved studies.

    NeuroQuery reports no sample sizes. With a kernel that does not use them (ALE with a
    fixed ``kernel__fwhm``, MKDA, KDA), NiMARE's log message that they are missing does not
    apply to the result and is dropped; an ALE whose kernel width depends on the sample sizes
    keeps it (and NiMARE then stops on the missing field).

    Parameters
    ----------
    estimator : NiMARE CBMA estimator
        Unfitted, e.g. ``ALE(kernel__fwhm=10)`` or ``MKDADensity()``.
    studies : :class:`nimare.nimads.Studyset`
        For example the output of :meth:`MNMEncoder.retrieve`.

    Returns
    -------
    :class:`nimare.results.MetaResult`
    """
    kernel = getattr(estimator, "kernel_transformer", None)
    uses_sample_sizes = type(kernel).__name__ == "ALEKernel" and kernel.fwhm is None
    if uses_sample_sizes:
        return estimator.fit(studies)
    quiet = _DropMessage("'sample_sizes', 'sample_size' not found")
    logger = logging.getLogger("nimare.utils")
    logger.addFilter(quiet)
    try:
        return estimator.fit(studies)
    finally:
        logger.removeFilter(quiet)


def _term_pairs(studyset, arrays, val_rows, min_studies: int, text_encoder):
    """Term maps of the training rows (not ``val_rows``) and the terms' text embeddings.

    The terms are NeuroQuery's vocabulary as annotated by :func:`load_neuroquery
    <nimare_mnm.datasets.load_neuroquery>`; a studyset without that annotation gets a
    warning and no pairs, ``(None, None)``.
    """
    import warnings

    from nimare_mnm.datasets import NEUROQUERY_GROUP, term_usage
    from nimare_mnm.term_maps import build_term_maps

    try:
        terms, usage_ids, usage = term_usage(studyset, NEUROQUERY_GROUP)
    except ValueError as exc:
        warnings.warn(f"No term maps to train on: {exc}", UserWarning, stacklevel=3)
        return None, None
    rows = usage_ids.get_indexer(np.asarray(arrays.ids).astype(str))
    if (rows < 0).any():
        raise ValueError("Some training studies have no term annotation row.")
    train_ids = np.delete(np.asarray(arrays.ids).astype(str), val_rows)
    try:
        maps = build_term_maps(
            arrays.ids,
            arrays.brain,
            usage[rows],
            terms,
            train_ids=train_ids,
            min_studies=min_studies,
        )
    except ValueError as exc:
        warnings.warn(f"No term maps to train on: {exc}", UserWarning, stacklevel=3)
        return None, None
    maps.check_excludes(np.asarray(arrays.ids)[val_rows])
    LGR.info("Training on %d term maps (terms used by >= %d studies).", len(maps), min_studies)
    return maps, np.asarray(text_encoder.encode(list(maps.terms)), dtype=np.float32)


def _training_terms(studyset, texts, min_df: int) -> tuple[list[str], str]:
    """Return the studies' NeuroQuery terms when annotated, else the words of ``min_df`` texts.

    Returns the terms and a description of where they came from.
    """
    from nimare_mnm.confidence import vocabulary_from_texts
    from nimare_mnm.datasets import NEUROQUERY_GROUP, annotation_term_counts

    labels = list(studyset.get_labels()) if len(studyset.annotations) else []
    if any(label.startswith(NEUROQUERY_GROUP) for label in labels):
        terms, _ = annotation_term_counts(studyset, NEUROQUERY_GROUP)
        return terms, "NeuroQuery terms used by the training studies"
    count = "two" if min_df == 2 else str(min_df)
    source = f"words used by at least {count} training texts"
    return vocabulary_from_texts(texts, min_df=min_df), source


def _fit_term_features(studyset, texts, min_df: int):
    """Fit the term features of training ``texts``: NeuroQuery terms, else frequent words."""
    from nimare_mnm.term_features import TermFeatures

    candidates, _ = _training_terms(studyset, texts, min_df)
    features = TermFeatures.fit(list(texts), candidates, min_df=min_df)
    LGR.info("Text head reads %d vocabulary terms (used by >= %d texts).", len(features), min_df)
    return features


def _term_usage_rows(term_maps, ids, n_rows: int):
    """(n_rows, n_terms) usage of each term map's source studies, by row of ``ids``.

    Rows past ``len(ids)`` (the term pairs themselves) and studies that built no map use no
    term.
    """
    import scipy.sparse as sp

    position = pd.Index(np.asarray(ids).astype(str)).get_indexer(
        np.asarray(term_maps.study_ids).astype(str)
    )
    if (position < 0).any():
        raise ValueError("Some term map sources are not among the training studies.")
    pairs = term_maps.sources.T.tocoo()  # (n_source, n_terms)
    return sp.csr_matrix(
        (np.ones(pairs.nnz, dtype=bool), (position[pairs.row], pairs.col)),
        shape=(n_rows, len(term_maps)),
    )


def _zscore_rows(maps: np.ndarray) -> np.ndarray:
    """Z-score each row of float32 maps in place; a constant row is an error (no prediction)."""
    if not np.isfinite(maps).all():
        raise FloatingPointError("The predicted map contains NaN or infinite values.")
    maps -= maps.mean(axis=1, dtype=np.float64, keepdims=True).astype(np.float32)
    std = np.sqrt(np.square(maps).mean(axis=1, dtype=np.float64, keepdims=True))
    if (std == 0).any():
        raise FloatingPointError("The predicted map is constant: it carries no prediction.")
    maps /= std.astype(np.float32)
    return maps


def _choose_neighbours(text_points, brain_points, brain, val_rows, similarity) -> int:
    """Neighbours whose mean map best predicts the validation studies' maps.

    Each validation study's text point ranks the other training studies (not the validation
    ones) by the model's similarity; the mean of the top k's square-rooted brain vectors (as
    :meth:`MNMEncoder._predict_vectors` predicts) is compared with the study's own brain
    vector by Pearson r, and the k of :data:`NEIGHBOUR_GRID` with the best mean r is kept.
    """
    from nimare_mnm.evaluation import map_correlation
    from nimare_mnm.utils import neighbour_mean

    val_rows = np.asarray(val_rows, dtype=np.int64)
    fit_rows = np.setdiff1d(np.arange(len(brain)), val_rows)
    rooted = prepare_brain(brain[fit_rows])["brain"]
    scores = similarity(text_points[val_rows], brain_points[fit_rows])
    grid = [k for k in NEIGHBOUR_GRID if k <= len(fit_rows)] or [len(fit_rows)]
    best = None
    for k in grid:
        predicted = neighbour_mean(scores, rooted, k)
        r = float(np.mean(map_correlation(predicted, brain[val_rows])))
        LGR.debug("Neighbour mean of %d studies: validation r %.4f", k, r)
        if best is None or r > best[1]:
            best = (k, r)
    LGR.info("Neighbour maps: %d studies (validation map r %.3f).", *best)
    return int(best[0])
