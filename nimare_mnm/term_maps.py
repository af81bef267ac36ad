"""Term meta-analytic maps: the mean brain vector of the studies that use each term.

A term used by many studies has a low-noise map (the average of many peak densities), which
makes it a general point of the text hierarchy and a good target for short queries. Maps are
built from the studies they are given and only from them: :class:`TermMaps` records which
studies built each map, so that a test study can be shown never to have contributed.

Example::

    from nimare_mnm.datasets import NEUROQUERY_GROUP, term_usage
    terms, ids, usage = term_usage(studyset, NEUROQUERY_GROUP)
    maps = build_term_maps(ids, brain, usage, terms, train_ids=training_ids)
    maps.check_excludes(test_ids)          # ValueError if a test study built a map
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = ["TermMaps", "build_term_maps"]

#: Fewest studies a term needs for its map (fewer is too noisy to be a target).
MIN_STUDIES = 20


@dataclass(frozen=True)
class TermMaps:
    """The maps of the terms used by enough studies, and where each came from.

    Attributes
    ----------
    terms : :class:`numpy.ndarray`
        (n_terms,) term strings.
    maps : :class:`numpy.ndarray`
        (n_terms, brain_dim) float32: the mean brain vector of the studies using each term.
    n_studies : :class:`numpy.ndarray`
        (n_terms,) number of studies behind each map.
    study_ids : :class:`numpy.ndarray`
        (n_source,) every study that built at least one map.
    sources : :class:`scipy.sparse.csr_matrix`
        (n_terms, n_source) boolean: ``sources[t, j]`` when ``study_ids[j]`` built map ``t``.
    """

    terms: np.ndarray
    maps: np.ndarray
    n_studies: np.ndarray
    study_ids: np.ndarray
    sources: sp.csr_matrix

    def __len__(self) -> int:
        return len(self.terms)

    def index(self, term: str) -> int:
        """Row of ``term``; KeyError when it has no map."""
        where = np.flatnonzero(self.terms == term)
        if not len(where):
            raise KeyError(f"No map for the term {term!r} (too few studies use it).")
        return int(where[0])

    def sources_of(self, term: str) -> list[str]:
        """Ids of the studies that built the map of ``term``."""
        row = self.sources.getrow(self.index(term))
        return [str(i) for i in self.study_ids[row.indices]]

    def check_excludes(self, ids: Sequence[str]) -> None:
        """Raise ValueError if any of ``ids`` (e.g. the test split) built a map."""
        leaked = np.intersect1d(self.study_ids.astype(str), np.asarray(ids, dtype=str))
        if len(leaked):
            raise ValueError(
                f"{len(leaked)} of the given studies built term maps (e.g. {list(leaked[:3])}): "
                "term maps must come from training studies only."
            )


def build_term_maps(
    ids: Sequence[str],
    brain: np.ndarray,
    usage: sp.spmatrix,
    terms: Sequence[str],
    *,
    train_ids: Sequence[str] | None = None,
    min_studies: int = MIN_STUDIES,
) -> TermMaps:
    """Build the map of every term used by at least ``min_studies`` training studies.

    Parameters
    ----------
    ids : sequence of :obj:`str`
        Study ids, the rows of ``brain`` and ``usage``.
    brain : :class:`numpy.ndarray`
        (n_studies, brain_dim) brain vectors (e.g. :attr:`CorpusArrays.brain
        <nimare_mnm.features.CorpusArrays>`).
    usage : sparse matrix
        (n_studies, n_terms) boolean: study uses term (see
        :func:`nimare_mnm.datasets.term_usage`).
    terms : sequence of :obj:`str`
        The columns of ``usage``.
    train_ids : sequence of :obj:`str`, optional
        Only these studies build maps (default: all rows). Ids absent from ``ids`` are ignored.
    min_studies : :obj:`int`, default=20
        Fewest training studies a term needs.

    Returns
    -------
    :class:`TermMaps`

    Raises
    ------
    ValueError
        Misaligned inputs, non-finite brain vectors, or no term used by enough studies.
    """
    ids = pd.Index(np.asarray(ids).astype(str))
    brain = np.asarray(brain, dtype=np.float64)
    usage = sp.csr_matrix(usage, dtype=bool)
    terms = np.asarray(terms, dtype=object)
    if brain.ndim != 2 or brain.shape[0] != len(ids) or usage.shape != (len(ids), len(terms)):
        raise ValueError(
            f"Expected brain (n_studies, dim) and usage (n_studies, n_terms) for {len(ids)} "
            f"studies and {len(terms)} terms, got {brain.shape} and {usage.shape}."
        )
    if not np.isfinite(brain).all():
        raise ValueError("The brain vectors hold NaN or infinite values.")
    if min_studies < 1:
        raise ValueError(f"min_studies must be at least 1, got {min_studies}.")
    rows = np.arange(len(ids)) if train_ids is None else np.flatnonzero(ids.isin(train_ids))
    used = usage[rows]
    counts = np.asarray(used.sum(axis=0)).ravel()
    keep = np.flatnonzero(counts >= min_studies)
    if not len(keep):
        raise ValueError(
            f"No term is used by {min_studies} or more of the {len(rows)} training studies."
        )
    sources = sp.csr_matrix(used[:, keep].T, dtype=bool)  # (n_terms, n_train)
    maps = (sources.astype(np.float64) @ brain[rows]) / counts[keep][:, None]
    builders = np.flatnonzero(np.asarray(sources.sum(axis=0)).ravel() > 0)
    return TermMaps(
        terms=terms[keep],
        maps=maps.astype(np.float32),
        n_studies=counts[keep].astype(np.int64),
        study_ids=np.asarray(ids[rows][builders], dtype=object),
        sources=sp.csr_matrix(sources[:, builders]),
    )
