"""Floors of the benchmark: simple text -> brain-map predictors every model must beat.

Each floor predicts brain vectors (supervoxel densities,
:class:`~nimare_mnm.vectorizer.BrainVectorizer`) from text and chooses its one setting on
validation studies carved from the training part, never on the test split:

- :class:`AverageMap`: the mean training map, whatever the query (query-blind);
- :class:`TfidfNeighbours`: the mean map of the k training studies whose text is most similar
  to the query by TF-IDF cosine (k on validation);
- :class:`EmbeddingRidge`: ridge regression from the frozen sentence embedding to the
  square-rooted map, squared back as nimare-mnm's decoder head does (penalty on validation).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

LGR = logging.getLogger(__name__)

__all__ = ["AverageMap", "TfidfNeighbours", "EmbeddingRidge", "mean_map_r"]

#: Neighbour counts tried by :class:`TfidfNeighbours`.
TFIDF_NEIGHBOURS = (10, 20, 50, 100, 200, 400, 800)

#: Ridge penalties of :class:`EmbeddingRidge`, relative to the mean eigenvalue of the
#: embeddings' covariance.
RIDGE_ALPHAS = (1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)


def mean_map_r(predicted: np.ndarray, true: np.ndarray) -> float:
    """Mean Pearson r between predicted and true brain vectors, row by row."""
    from nimare_mnm.evaluation import map_correlation

    return float(np.mean(map_correlation(predicted, true)))


class AverageMap:
    """Predict the mean training map for every query (the query-blind floor)."""

    def fit(self, brain: np.ndarray) -> AverageMap:
        """Store the mean of the training brain vectors."""
        self.mean_ = np.asarray(brain, dtype=np.float64).mean(axis=0)
        return self

    def predict(self, n: int) -> np.ndarray:
        """Return the mean map ``n`` times, (n, brain_dim)."""
        return np.tile(self.mean_.astype(np.float32), (n, 1))


class TfidfNeighbours:
    """Mean map of the training studies nearest to a query by TF-IDF cosine similarity.

    Parameters
    ----------
    neighbours : sequence of :obj:`int`
        Values of k tried on validation.

    Attributes
    ----------
    k_ : :obj:`int`
        The chosen number of neighbours.
    validation_r_ : :obj:`dict`
        Validation mean map r for every k tried.
    """

    def __init__(self, neighbours: Sequence[int] = TFIDF_NEIGHBOURS) -> None:
        self.neighbours = neighbours

    def _similarity(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray((self.vectorizer_.transform(list(texts)) @ self.train_.T).todense())

    def _mean_of_top(self, sim: np.ndarray, k: int) -> np.ndarray:
        from nimare_mnm.utils import neighbour_mean

        return neighbour_mean(sim, self.brain_, k)

    def fit(self, texts, brain, val_texts, val_brain) -> TfidfNeighbours:
        """Fit TF-IDF on the training texts and choose k on the validation studies.

        Parameters
        ----------
        texts : sequence of :obj:`str`
            Training texts (the candidates).
        brain : :class:`numpy.ndarray`
            Their brain vectors.
        val_texts, val_brain
            Validation queries and their true brain vectors (not candidates).
        """
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.vectorizer_ = TfidfVectorizer(
            stop_words="english", sublinear_tf=True, min_df=2, dtype=np.float32
        )
        self.train_ = self.vectorizer_.fit_transform(list(texts)).tocsr()
        self.brain_ = np.asarray(brain, dtype=np.float32)
        sim = self._similarity(val_texts)
        self.validation_r_ = {}
        for k in self.neighbours:
            if k <= len(self.brain_):
                self.validation_r_[int(k)] = mean_map_r(self._mean_of_top(sim, k), val_brain)
        self.k_ = max(self.validation_r_, key=self.validation_r_.get)
        LGR.info(
            "TF-IDF neighbours: k=%d (validation r %.3f).", self.k_, self.validation_r_[self.k_]
        )
        return self

    def predict(self, texts) -> np.ndarray:
        """Mean brain vector of each query's ``k_`` nearest training studies."""
        return self._mean_of_top(self._similarity(texts), self.k_)


class EmbeddingRidge:
    """Ridge regression from frozen text embeddings to square-rooted brain vectors.

    The targets are prepared as nimare-mnm's (:func:`~nimare_mnm.features.prepare_brain`:
    signed square root, unit norm) and predictions squared back
    (:func:`~nimare_mnm.features.to_density`), so that this floor differs from nimare-mnm's
    decoder head only by the missing hyperbolic backbone.

    Parameters
    ----------
    alphas : sequence of :obj:`float`
        Penalties tried, relative to the mean eigenvalue of the embeddings' covariance.

    Attributes
    ----------
    alpha_ : :obj:`float`
        The chosen relative penalty.
    validation_r_ : :obj:`dict`
        Validation mean map r for every penalty.
    """

    def __init__(self, alphas: Sequence[float] = RIDGE_ALPHAS) -> None:
        self.alphas = alphas

    def fit(self, embeddings, brain, val_embeddings, val_brain) -> EmbeddingRidge:
        """Solve the ridge for every penalty and keep the best on validation."""
        from nimare_mnm.features import prepare_brain

        x = np.asarray(embeddings, dtype=np.float64)
        y = prepare_brain(brain)["brain"].astype(np.float64)
        self.x_mean_, self.y_mean_ = x.mean(axis=0), y.mean(axis=0)
        xc = x - self.x_mean_
        gram = xc.T @ xc
        cross = xc.T @ (y - self.y_mean_)
        scale = np.trace(gram) / len(gram)
        self.validation_r_, best = {}, None
        for alpha in self.alphas:
            weight = np.linalg.solve(gram + alpha * scale * np.eye(len(gram)), cross)
            self.weight_ = weight
            r = mean_map_r(self.predict(val_embeddings), val_brain)
            self.validation_r_[float(alpha)] = r
            if best is None or r > best[1]:
                best = (float(alpha), r, weight)
        self.alpha_, _, self.weight_ = best
        LGR.info("Embedding ridge: alpha=%g (validation r %.3f).", self.alpha_, best[1])
        return self

    def predict(self, embeddings) -> np.ndarray:
        """Predicted brain vectors (density scale)."""
        from nimare_mnm.features import to_density

        rooted = (np.asarray(embeddings, dtype=np.float64) - self.x_mean_) @ self.weight_
        return to_density((rooted + self.y_mean_).astype(np.float32))
