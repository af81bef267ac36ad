"""Baselines trained on the protocol's brain targets: NeuroQuery's own model.

:class:`NeuroQueryBaseline` trains NeuroQuery (Dockès et al., eLife 2020) with the training
code of the ``neuroquery`` package, offline, on nimare-mnm's brain vectors: the package's
:class:`~neuroquery.tokenization.TextVectorizer` turns texts into TF-IDF features over the
NeuroQuery vocabulary, and its :class:`~neuroquery.smoothed_regression.SmoothedRegression`
(NMF covariance smoothing of the features plus the feature-selecting ridge regression with
generalized cross-validation) maps them to brain vectors. Only the NMF call is replaced, to
undo a silent change of scikit-learn (see :class:`NeuroQueryBaseline`'s notes).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import time
import warnings
from collections.abc import Sequence

import numpy as np
from neuroquery import nmf as nq_nmf
from neuroquery import ridge as nq_ridge
from neuroquery.smoothed_regression import SmoothedRegression
from neuroquery.tokenization import TextVectorizer
from scipy import sparse
from sklearn.base import BaseEstimator
from sklearn.decomposition import NMF
from sklearn.utils.validation import check_is_fitted

LGR = logging.getLogger(__name__)

__all__ = ["NeuroQueryBaseline", "neuroquery_vocabulary"]


def neuroquery_vocabulary(
    data_dir: str | os.PathLike | None = None, *, download: bool = True
) -> list[str]:
    """Read the 7,547 terms of the NeuroQuery model vocabulary (``vocab-neuroquery7547``).

    Parameters
    ----------
    data_dir : :obj:`str` or :obj:`os.PathLike`, optional
        Folder holding NiMARE's ``neuroquery/`` database folder, located exactly as by
        :func:`nimare_mnm.load_neuroquery` (``data_dir``, then ``NIMARE_MNM_DATA``, then
        NiMARE's own defaults).
    download : :obj:`bool`, default=True
        If the files are absent, let NiMARE's fetcher download them (needs internet access).

    Returns
    -------
    :obj:`list` of :obj:`str`
        The terms, in the file's order (the columns of the ``neuroquery7547`` features).

    Raises
    ------
    FileNotFoundError
        If the NeuroQuery files are missing (naming them and how to get them).
    """
    from nimare_mnm.datasets import CORPORA, locate_corpus, read_vocabulary

    spec = CORPORA["neuroquery"]
    files = locate_corpus(spec, data_dir, download, {"vocabulary": spec.files["vocabulary"]})
    return [str(term) for term in read_vocabulary(files["vocabulary"])]


def _smoothing_matrix_sqrt(X: np.ndarray, n_components: int) -> np.ndarray:
    """``neuroquery.nmf._smoothing_matrix_sqrt`` with the objective it was written for.

    The package asks for ``NMF(alpha=0.1, l1_ratio=0.1)`` (scikit-learn < 1.0, default
    ``init`` then ``"nndsvd"``). Since scikit-learn 1.2 the penalty on W is multiplied by the
    number of features and the one on H by the number of samples, so the same 0.1 drives
    every factor to zero; dividing by those sizes restores the original objective.
    """
    n_samples, n_features = X.shape
    nmf = NMF(
        n_components=n_components,
        init="nndsvd",
        max_iter=200,
        random_state=0,
        alpha_W=0.1 / n_features,
        alpha_H=0.1 / n_samples,
        l1_ratio=0.1,
        verbose=0,
    )
    u = nmf.fit_transform(X)
    v = nmf.components_.T
    return np.linalg.norm(u, axis=0) * v


class _CovarianceSmoothing(nq_nmf.CovarianceSmoothing):
    """The package's smoothing, fitted with the corrected :func:`_smoothing_matrix_sqrt`."""

    def fit(self, X):
        self.V_ = _smoothing_matrix_sqrt(X, n_components=self.n_components)
        # the rest is the package's own CovarianceSmoothing.fit
        V_norm = np.linalg.norm(self.V_.dot(self.V_.T), axis=1)
        zero_norm = V_norm == 0
        V_norm[zero_norm] = 1
        self.normalized_V_ = self.V_ / V_norm[:, None]
        self.normalized_V_[zero_norm] = 0
        return self


class _SmoothedRegression(SmoothedRegression):
    """The package's SmoothedRegression, with the corrected smoothing."""

    def fit(self, X, Y):
        if sparse.issparse(X):
            X = X.toarray()
        start = time.perf_counter()
        self.smoothing_ = _CovarianceSmoothing(
            n_components=self.n_components, smoothing_weight=self.smoothing_weight
        ).fit(X)
        seconds = time.perf_counter() - start
        LGR.info(f"NMF smoothing (rank {self.n_components}) fitted in {seconds:.1f} s.")
        start = time.perf_counter()
        out = io.StringIO()
        with contextlib.redirect_stdout(out):  # SelectiveRidge prints "keeping N features"
            self.regression_ = nq_ridge.SelectiveRidge(alphas=self.alphas, store_M=True).fit(X, Y)
        LGR.info(
            f"Selective ridge fitted in {time.perf_counter() - start:.1f} s "
            f"({out.getvalue().strip()})."
        )
        return self


def _check_texts(texts, what: str = "texts") -> list[str]:
    if isinstance(texts, str):
        raise ValueError(f"{what} must be a sequence of strings, not a single string.")
    texts = list(texts)
    if not texts:
        raise ValueError(f"{what} is empty: pass at least one text.")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise ValueError(
            f"{what} must all be strings; entry {bad[0]} is {type(texts[bad[0]]).__name__}."
        )
    return texts


class NeuroQueryBaseline(BaseEstimator):
    """NeuroQuery's text -> brain model, trained with its own code on our brain targets.

    Parameters
    ----------
    vocabulary : sequence of :obj:`str`, optional
        Terms (single words or phrases) the texts are vectorized on. Defaults to the
        NeuroQuery model vocabulary (7,547 terms, :func:`neuroquery_vocabulary`).
    data_dir : :obj:`str` or :obj:`os.PathLike`, optional
        Where to find the NeuroQuery vocabulary when ``vocabulary`` is None.
    n_components : :obj:`int`, default=300
        Rank of the NMF covariance smoothing (NeuroQuery's value).
    smoothing_weight : :obj:`float`, default=0.1
        Weight of the smoothed features at prediction time (NeuroQuery's value).
    alphas : sequence of :obj:`float`, optional
        Ridge penalties tried by generalized cross-validation; defaults to the package's
        ``numpy.logspace(-1, 3, 9)``.
    add_unigrams : :obj:`bool`, default=False
        Count the words of a phrase as occurrences of the single-word terms too. False, as
        in the vectorizer of NeuroQuery's released model.

    Attributes
    ----------
    vectorizer_ : :class:`neuroquery.tokenization.TextVectorizer`
        Text -> TF-IDF, with document frequencies of the training texts.
    regression_ : :class:`neuroquery.smoothed_regression.SmoothedRegression`
        The fitted smoothing (``regression_.smoothing_``) and ridge
        (``regression_.regression_``).
    vocabulary_ : :class:`numpy.ndarray`
        The vectorizer's features (standardized terms, sorted as the package sorts them).
    document_frequency_ : :class:`numpy.ndarray`
        Number of training texts containing each feature.
    selected_features_ : :class:`numpy.ndarray`
        Features kept by the package's feature-selecting ridge.
    alpha_ : :obj:`float`
        Ridge penalty chosen by generalized cross-validation.

    Notes
    -----
    The chain is the one of ``neuroquery``'s training example (which passes
    ``alphas=[1.0, 10.0, 100.0]``, three times faster than the default nine penalties) and
    of :class:`neuroquery.encoding.NeuroQueryModel`: TF-IDF (l2-normalized rows) ->
    ``SmoothedRegression.fit(tfidf, brain)``; at prediction time the TF-IDF is smoothed
    (``0.9 x + 0.1 x V V^T``) and passed to the ridge. ``NeuroQueryModel`` itself is not used
    because it needs a voxel mask image, while our targets are brain vectors of any length.

    The ridge's cross-validation builds several (n_studies x n_studies) matrices per penalty:
    on 12,114 studies and 5,285-d targets, with the three penalties above and one BLAS
    thread, the fit took 33 minutes (NMF 5, ridge 28) and 7.6 GB here. On a machine shared with
    other work, limit BLAS to one thread per process (``OPENBLAS_NUM_THREADS=1``):
    oversubscribed OpenBLAS threads made its SVD 25 times slower here.

    The TF-IDF weights use the package's idf, ``1 - log(frequency)``, with the smoothed
    training document frequency ``(df + 1) / (n + 1)``, which is scikit-learn's smooth idf
    ``log((1 + n) / (1 + df)) + 1`` and keeps terms absent from the training texts finite.

    **Fix of a silent scikit-learn change.** The package builds its smoothing with
    ``NMF(alpha=0.1, l1_ratio=0.1)``. With scikit-learn >= 1.2 that penalty (``alpha_W``,
    ``alpha_H="same"``) is multiplied by the number of features (for W) and of samples (for
    H), which drives the factorization to exactly zero: the smoothing then silently does
    nothing. This class fits the NMF with ``alpha_W=0.1 / n_features``,
    ``alpha_H=0.1 / n_samples`` and ``init="nndsvd"``, the objective (and initialisation)
    NeuroQuery was published with; everything else is the package's code.

    :meth:`predict` returns NeuroQuery's z-maps, the maps ``NeuroQueryModel`` returns and the
    ones the protocol scores NeuroQuery with; :meth:`predict_raw` returns the plain ridge
    predictions (including the intercept, the training mean map).
    """

    def __init__(
        self,
        vocabulary: Sequence[str] | None = None,
        data_dir: str | os.PathLike | None = None,
        n_components: int = 300,
        smoothing_weight: float = 0.1,
        alphas: Sequence[float] | None = None,
        add_unigrams: bool = False,
    ) -> None:
        self.vocabulary = vocabulary
        self.data_dir = data_dir
        self.n_components = n_components
        self.smoothing_weight = smoothing_weight
        self.alphas = alphas
        self.add_unigrams = add_unigrams

    def _vectorizer(self, terms, frequencies=None, use_idf=True, norm="l2"):
        return TextVectorizer.from_vocabulary(
            list(terms),
            frequencies=frequencies,
            use_idf=use_idf,
            norm=norm,
            add_unigrams=self.add_unigrams,
        )

    def fit(self, texts: Sequence[str], brain: np.ndarray) -> NeuroQueryBaseline:
        """Fit the vectorizer's document frequencies, the smoothing and the ridge.

        Parameters
        ----------
        texts : sequence of :obj:`str`
            One text per training study.
        brain : :class:`numpy.ndarray`
            (n, d) brain vectors of the same studies, in the same order.

        Returns
        -------
        self
        """
        texts = _check_texts(texts)
        brain = np.asarray(brain)
        if brain.ndim != 2:
            raise ValueError(f"brain must be a 2-D (studies x d) array, got {brain.ndim}-D.")
        if brain.shape[0] != len(texts):
            raise ValueError(
                f"Got {len(texts)} texts but {brain.shape[0]} brain vectors: they must pair up."
            )
        if not np.isfinite(brain).all():
            raise ValueError("brain contains NaN or infinite values.")
        if len(texts) < 2:
            raise ValueError("Need at least 2 training studies.")
        terms = self.vocabulary
        if terms is None:
            terms = neuroquery_vocabulary(self.data_dir)
        terms = _check_texts(terms, "vocabulary")

        start = time.perf_counter()
        counter = self._vectorizer(terms, use_idf=False, norm=None)
        features = np.asarray(counter.get_vocabulary(), dtype=object)
        if features.size == 0:
            raise ValueError("The vocabulary has no usable term (all are stop words?).")
        if self.n_components > min(len(texts), features.size):
            raise ValueError(
                f"n_components={self.n_components} exceeds min(n_studies={len(texts)}, "
                f"n_terms={features.size}): the NMF smoothing cannot have that rank."
            )
        counts = counter.transform(texts)
        n = len(texts)
        df = np.asarray((counts > 0).sum(axis=0)).ravel()
        vectorizer = self._vectorizer(features, frequencies=(df + 1.0) / (n + 1.0))
        if list(vectorizer.get_vocabulary()) != list(features):  # pragma: no cover - guard
            raise RuntimeError("The neuroquery vectorizer changed its vocabulary when rebuilt.")
        tfidf = vectorizer.transform(texts)
        LGR.info(f"Vectorized {n} texts in {time.perf_counter() - start:.1f} s.")
        empty = int((np.diff(tfidf.tocsr().indptr) == 0).sum())
        if empty:
            warnings.warn(
                f"{empty} of {n} training texts contain no vocabulary term.", stacklevel=2
            )

        alphas = nq_ridge._DEFAULT_ALPHAS if self.alphas is None else self.alphas
        regression = _SmoothedRegression(
            alphas=np.asarray(alphas, dtype=float),
            n_components=self.n_components,
            smoothing_weight=self.smoothing_weight,
        )
        regression.fit(tfidf, np.asarray(brain, dtype=np.float64))
        if regression.regression_.selected_features_.size == 0:
            warnings.warn(
                "NeuroQuery's selective ridge kept no term: every z-map will be zero and every "
                "raw prediction the mean map.",
                stacklevel=2,
            )
        self.vectorizer_ = vectorizer
        self.regression_ = regression
        self.vocabulary_ = features
        self.document_frequency_ = df
        self.selected_features_ = regression.regression_.selected_features_
        self.alpha_ = float(regression.regression_.alpha_)
        return self

    def transform_text(self, texts: Sequence[str]) -> sparse.csr_matrix:
        """Vectorize texts into TF-IDF features (l2-normalized rows), as the model sees them.

        Parameters
        ----------
        texts : sequence of :obj:`str`
            Texts to vectorize.

        Returns
        -------
        :class:`scipy.sparse.csr_matrix`
            ``(n, len(vocabulary_))``.
        """
        check_is_fitted(self, "regression_")
        texts = _check_texts(texts)
        tfidf = sparse.csr_matrix(self.vectorizer_.transform(texts))
        empty = int((np.diff(tfidf.indptr) == 0).sum())
        if empty:
            warnings.warn(
                f"{empty} of {len(texts)} texts contain no vocabulary term: their predicted "
                "maps are all zeros (z-maps) or the mean map (raw).",
                stacklevel=3,
            )
        return tfidf

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        """Predict NeuroQuery z-maps (what :class:`neuroquery.encoding.NeuroQueryModel` returns).

        Parameters
        ----------
        texts : sequence of :obj:`str`
            Query texts.

        Returns
        -------
        :class:`numpy.ndarray`
            (n, d) z-maps: the smoothed-TF-IDF ridge prediction (without intercept) divided by
            its estimated standard deviation. The protocol scores NeuroQuery with these.
        """
        tfidf = self.transform_text(texts)
        smoothed = self.regression_.smoothing_.transform(tfidf)
        return np.asarray(self.regression_.regression_.transform_to_z_maps(smoothed))

    def predict_raw(self, texts: Sequence[str]) -> np.ndarray:
        """Predict plain ridge outputs, including the intercept (the training mean map).

        Parameters
        ----------
        texts : sequence of :obj:`str`
            Query texts.

        Returns
        -------
        :class:`numpy.ndarray`
            (n, d) predicted brain vectors, on the scale of the training targets.
        """
        tfidf = self.transform_text(texts)
        smoothed = self.regression_.smoothing_.transform(tfidf)
        return np.asarray(self.regression_.regression_.predict(smoothed))
