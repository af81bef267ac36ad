"""Paired model inputs for a studyset: text embeddings and brain vectors, study by study."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

LGR = logging.getLogger(__name__)

__all__ = ["CorpusArrays", "corpus_arrays"]


@dataclass
class CorpusArrays:
    """Aligned per-study inputs of the model.

    Attributes
    ----------
    ids : :class:`numpy.ndarray`
        Study ids.
    texts : :class:`pandas.Series`
        The text of each study (see :func:`nimare_mnm.datasets.study_texts`).
    text : :class:`numpy.ndarray`
        (n, text_dim) L2-normalised text embeddings.
    brain : :class:`numpy.ndarray`
        (n, brain_dim) brain vectors (supervoxel means of the peak densities).
    """

    ids: np.ndarray
    texts: pd.Series
    text: np.ndarray
    brain: np.ndarray

    def subset(self, ids) -> CorpusArrays:
        """Rows of the given study ids, in that order (unknown ids are an error)."""
        position = pd.Index(self.ids).get_indexer([str(i) for i in ids])
        if (position < 0).any():
            missing = np.asarray(ids)[position < 0][:5]
            raise KeyError(f"Unknown study ids, e.g. {list(missing)}.")
        return CorpusArrays(
            self.ids[position],
            self.texts.iloc[position],
            self.text[position],
            self.brain[position],
        )


def corpus_arrays(
    studyset,
    *,
    encoder=None,
    vectorizer=None,
    density=None,
    ids=None,
) -> CorpusArrays:
    """Embed every study's text and turn its peaks into a brain vector.

    Parameters
    ----------
    studyset : :class:`nimare.nimads.Studyset` or :class:`nimare.dataset.Dataset`
        The studies.
    encoder : :class:`~nimare_mnm.text.TextEncoder`, optional
        Text encoder (default: the offline all-MiniLM-L6-v2, with its disk cache).
    vectorizer : :class:`~nimare_mnm.brain.BrainVectorizer`, optional
        Fitted brain vectorizer (default: fitted on the atlases of ``NIMARE_MNM_DATA``).
    density : :class:`~nimare_mnm.brain.PeakDensity`, optional
        Peak density settings (default: Gaussian, FWHM 9 mm).
    ids : sequence, optional
        Only these study ids (for example the protocol's training part).

    Returns
    -------
    :class:`CorpusArrays`
        Studies without any peak inside the brain mask are left out (and logged): they
        have no brain map to learn from.
    """
    from nimare_mnm.brain import BrainVectorizer, PeakDensity
    from nimare_mnm.datasets import as_studyset, study_texts
    from nimare_mnm.text import TextEncoder

    studyset = as_studyset(studyset)
    if ids is not None:
        studyset = studyset.filter_study_ids([str(i) for i in ids])
    texts = study_texts(studyset)
    vectorizer = vectorizer if vectorizer is not None else BrainVectorizer().fit()
    density = density if density is not None else PeakDensity()
    study_ids, brain = density.transform(studyset, reduce=vectorizer.transform)
    texts = texts.reindex(study_ids)
    keep = brain.sum(axis=1) > 0
    if not keep.all():
        LGR.info(f"Leaving out {int((~keep).sum())} studies without peaks inside the brain.")
    texts, brain = texts[keep], brain[keep]
    encoder = encoder if encoder is not None else TextEncoder()
    text = encoder.encode(list(texts))
    return CorpusArrays(np.asarray(texts.index, dtype=object), texts, text, brain)
