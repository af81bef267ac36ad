"""Decoding benchmark (brain map -> terms), controlled for term frequency.

For every *content term* (used by at most 30 % of the training abstracts, by at least 5 and
missing from at least 5 test abstracts, stop-like words out), the benchmark asks: across the
test studies, do the studies whose abstract uses the term get a higher score for it than those
that do not? That is the term's ROC AUC across studies
(:func:`~nimare_mnm.evaluation.per_term_auc`); the headline figure is its mean over content
terms. A map-blind score (for example the term's frequency) is the same for every study and
gets exactly 0.5, so a decoder can only win by reading the map.

Scores are used raw and z-scored across terms within each study (what a user ranking one
map's terms sees). The older per-study figure, the AUC of a study's own terms among the
vocabulary, is kept as a secondary, labelled column: a frequency prior wins it.

Decoders compared (all fitted on the training studies only):

- :class:`~nimare_mnm.MNMDecoder` (:func:`mnm_decoder_scores`), through its public
  ``transform`` on each test study's density map as a NIfTI image;
- a plain correlation decoder (:class:`MeanMapDecoder`): a term's map is the mean brain vector
  of the training studies using it, its score the Pearson r with the study's brain vector;
- NiMARE's :class:`~nimare.decode.continuous.CorrelationDecoder` with its default MKDA
  chi-square maps (:func:`nimare_correlation_scores`), on a seeded sample of the content terms
  (its fit costs seconds per term);
- the frequency prior and a term-blind control (the number of active voxels of the map).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats

LGR = logging.getLogger(__name__)

__all__ = [
    "ranking_auc",
    "own_term_rank",
    "STOP_LIKE_WORDS",
    "content_terms",
    "MeanMapDecoder",
    "zscore_within_study",
    "summarize_scores",
    "mnm_decoder_scores",
    "nimare_correlation_scores",
]

#: NeuroQuery's abstract term annotation (NiMARE's feature group name).
FEATURE_GROUP = "neuroquery7547_abstract_count"

#: Words that say nothing about a brain function or structure; a term made only of these
#: (or of English stop words) is not a content term. Fixed before any result was seen.
STOP_LIKE_WORDS = frozenset(
    """
    study studies result results finding findings data analysis analyses method methods
    use used using effect effects evidence paper report reported present showed show shown
    suggest suggests suggested indicate indicates indicated increase increased decrease
    decreased significant significantly compared comparison related associated difference
    differences different based role investigated examined observed demonstrate demonstrated
    revealed reveal approach measure measured high higher low lower new large small respectively
    specific general total number level levels group groups condition conditions test tested
    task tasks activity activation activations area areas region regions brain
    """.split()
)


# --------------------------------------------------------------------------- metrics
def _check_scores(scores, positive) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive)
    if scores.ndim != 1 or positive.shape != scores.shape:
        raise ValueError(
            f"scores and positive must be 1D and of the same length; got shapes "
            f"{scores.shape} and {positive.shape}."
        )
    if positive.dtype != bool:
        if not np.isin(positive, (0, 1)).all():
            raise ValueError("positive must hold booleans (or 0/1).")
        positive = positive.astype(bool)
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN; replace them first (e.g. by -inf).")
    n_pos = int(positive.sum())
    if n_pos == 0 or n_pos == len(positive):
        raise ValueError(
            f"The AUC needs at least one positive and one negative term; got {n_pos} positive "
            f"of {len(positive)}."
        )
    return scores, positive


def ranking_auc(scores, positive) -> float:
    """ROC AUC of scores that should rank the positive items first.

    The probability that a random positive item scores higher than a random negative one,
    ties counting one half (the Mann-Whitney U statistic over the number of pairs).

    Parameters
    ----------
    scores : array-like of :obj:`float`
        One score per item (higher: ranked first). Infinite values are allowed, NaN is not.
    positive : array-like of :obj:`bool`
        Which items are positive (e.g. the study's own terms).

    Returns
    -------
    :obj:`float`
        In [0, 1]; 0.5 is chance, 1 ranks every positive item before every negative one.

    Raises
    ------
    ValueError
        Shapes differ, scores contain NaN, or all items (or none) are positive.
    """
    scores, positive = _check_scores(scores, positive)
    ranks = stats.rankdata(scores)  # ascending, ties averaged
    n_pos = int(positive.sum())
    n_neg = len(scores) - n_pos
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def own_term_rank(scores, positive) -> float:
    """Mean rank of the positive items when sorted by decreasing score (1 = first).

    Parameters
    ----------
    scores : array-like of :obj:`float`
        One score per item (higher: ranked first).
    positive : array-like of :obj:`bool`
        Which items are positive.

    Returns
    -------
    :obj:`float`
        Mean rank of the positive items, ties averaged.

    Raises
    ------
    ValueError
        As :func:`ranking_auc`.
    """
    scores, positive = _check_scores(scores, positive)
    return float(stats.rankdata(-scores)[positive].mean())


def zscore_within_study(scores: np.ndarray) -> np.ndarray:
    """Z-score each study's (row's) scores across terms; a constant row becomes all zeros."""
    scores = np.asarray(scores, dtype=np.float64)
    centred = scores - scores.mean(axis=1, keepdims=True)
    sd = centred.std(axis=1, keepdims=True)
    return np.divide(centred, sd, out=np.zeros_like(centred), where=sd > 0)


def _own_term_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Secondary, frequency-confounded: mean over studies of the own-term AUC among terms."""
    keep = (positive.sum(axis=1) > 0) & (positive.sum(axis=1) < positive.shape[1])
    return float(np.mean([ranking_auc(s, p) for s, p in zip(scores[keep], positive[keep])]))


def summarize_scores(scores: np.ndarray, positive: np.ndarray) -> dict:
    """Summarise one decoder's (studies x terms) score matrix.

    Returns
    -------
    :obj:`dict`
        ``per_term_auc`` (mean over terms of the AUC across studies, raw scores),
        ``per_term_auc_z`` (the same after z-scoring each study's scores across terms) and
        ``own_term_auc_confounded`` (the per-study metric, secondary: frequency-confounded).
    """
    from nimare_mnm.evaluation import per_term_auc

    raw = per_term_auc(scores, positive)
    z = per_term_auc(zscore_within_study(scores), positive)
    return {
        "per_term_auc": float(np.nanmean(raw)),
        "per_term_auc_z": float(np.nanmean(z)),
        "own_term_auc_confounded": _own_term_auc(scores, positive),
    }


# --------------------------------------------------------------------------- vocabulary
def _is_stop_like(term: str) -> bool:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    words = term.lower().split()
    return all(w in ENGLISH_STOP_WORDS or w in STOP_LIKE_WORDS or w.isdigit() for w in words)


def content_terms(
    studyset,
    train_ids: Sequence[str],
    test_ids: Sequence[str],
    max_train_fraction: float = 0.3,
    min_test: int = 5,
    frequency_threshold: float = 0.001,
) -> dict:
    """Select the benchmark's content terms and record which studies use them.

    Parameters
    ----------
    studyset : :class:`nimare.nimads.Studyset`
        NeuroQuery, with its abstract term counts (``neuroquery7547_abstract_count``).
    train_ids, test_ids : sequence of :obj:`str`
        Training and test study ids (in the order the outputs follow).
    max_train_fraction : :obj:`float`, default=0.3
        Terms used by more of the training abstracts are too common to be content.
    min_test : :obj:`int`, default=5
        Minimum number of test studies using the term, and of test studies not using it.
    frequency_threshold : :obj:`float`, default=0.001
        A study uses a term when its abstract count is at least this.

    Returns
    -------
    :obj:`dict`
        ``terms`` (list), ``train_counts`` (training studies using each term),
        ``train_positive`` and ``test_positive`` (sparse / dense boolean studies x terms).
    """
    from nimare_mnm.datasets import NEUROQUERY_GROUP, term_usage

    terms, row_of, usage = term_usage(studyset, NEUROQUERY_GROUP, frequency_threshold)
    if len(row_of) != len(studyset.study_ids):
        raise ValueError("Expected one analysis per study (NeuroQuery's layout).")
    terms = np.asarray(terms)
    train_rows, test_rows = row_of.get_indexer(train_ids), row_of.get_indexer(test_ids)
    if (train_rows < 0).any() or (test_rows < 0).any():
        raise ValueError("Some training or test ids are not in the studyset.")
    train_pos = sp.csr_matrix(usage[train_rows])
    test_pos = usage[test_rows].toarray()
    train_counts = np.asarray(train_pos.sum(axis=0)).ravel()
    test_counts = test_pos.sum(axis=0)
    keep = (
        (train_counts > 0)
        & (train_counts <= max_train_fraction * len(train_rows))
        & (test_counts >= min_test)
        & (len(test_rows) - test_counts >= min_test)
        & ~np.array([_is_stop_like(t) for t in terms])
    )
    LGR.info("%d content terms of %d.", keep.sum(), len(terms))
    return {
        "terms": [str(t) for t in terms[keep]],
        "train_counts": train_counts[keep].astype(np.int64),
        "train_positive": train_pos[:, keep].tocsc(),
        "test_positive": test_pos[:, keep],
    }


# --------------------------------------------------------------------------- decoders
class MeanMapDecoder:
    """The plain correlation decoder: term map = mean map of the training studies using it.

    A term's score for a map is the Pearson r between the map's brain vector and the term's
    mean training brain vector (supervoxel densities).
    """

    def fit(self, brain: np.ndarray, positive: sp.spmatrix) -> MeanMapDecoder:
        """Term maps from training brain vectors (n, d) and term use (n, n_terms)."""
        positive = sp.csc_matrix(positive, dtype=np.float64)
        counts = np.asarray(positive.sum(axis=0)).ravel()
        if (counts == 0).any():
            raise ValueError("Every term needs at least one training study.")
        self.term_maps_ = np.asarray((positive.T @ brain) / counts[:, None])
        return self

    def scores(self, brain: np.ndarray) -> np.ndarray:
        """(n_maps, n_terms) Pearson r between each brain vector and each term map."""
        from nimare_mnm.evaluation import pairwise_correlation

        return pairwise_correlation(brain, self.term_maps_)


def mnm_decoder_scores(decoder, imgs, terms: Sequence[str]) -> tuple[np.ndarray, float]:
    """Scores of a fitted MNMDecoder for every image (its public ``transform``).

    Returns
    -------
    scores : :class:`numpy.ndarray`
        (n_images, n_terms), terms in the given order.
    median_ms : :obj:`float`
        Median transform time per image.
    """
    out, times = [], []
    for img in imgs:
        t0 = time.perf_counter()
        frame = decoder.transform(img)
        times.append(time.perf_counter() - t0)
        out.append(frame["score"].reindex(list(terms)).to_numpy(dtype=np.float64))
    scores = np.stack(out)
    if np.isnan(scores).any():
        raise ValueError("MNMDecoder returned no score for some terms of the vocabulary.")
    return scores, 1000 * float(np.median(times))


def nimare_correlation_scores(
    studyset, train_ids, terms, test_maps, mask_img, check_imgs=(), frequency_threshold=0.001
) -> dict:
    """NiMARE's CorrelationDecoder (MKDA chi-square maps) on the training studies.

    Its ``transform`` is the Pearson r between the masked image and every term map
    (NiftiMasker, then ``pearson``); to score every test map it is applied to the masked maps
    directly, and checked against ``transform`` on the images of ``check_imgs``.

    Parameters
    ----------
    studyset : :class:`nimare.nimads.Studyset`
        NeuroQuery with its abstract term annotation.
    train_ids : sequence of :obj:`str`
        Training studies.
    terms : sequence of :obj:`str`
        Vocabulary (without the group prefix).
    test_maps : :class:`numpy.ndarray` or sparse
        (n_maps, n_mask_voxels) maps over the voxels of ``mask_img``.
    mask_img : :class:`nibabel.nifti1.Nifti1Image`
        The mask the maps live in.
    check_imgs : sequence of (index, image)
        Test maps as images, to check the vectorised scores against ``transform``.
    frequency_threshold : :obj:`float`, default=0.001
        A study uses a term when its abstract count is at least this.

    Returns
    -------
    :obj:`dict`
        ``scores`` (n_maps, n_terms), ``fit_seconds``, ``transform_median_ms`` (of the
        checked images), ``max_check_difference``.
    """
    from nimare.decode.continuous import CorrelationDecoder
    from nimare.meta.cbma.mkda import MKDAChi2

    from nimare_mnm.decoder import NEUROQUERY_GROUP
    from nimare_mnm.evaluation import pairwise_correlation

    block = studyset.label_block()
    labels = [str(lb) for lb in block.labels]
    wanted = [NEUROQUERY_GROUP + t for t in terms]
    col = {lb: j for j, lb in enumerate(labels)}
    row_of = pd.Index(np.asarray(studyset.study_ids).astype(str))
    rows = np.sort(row_of.get_indexer(list(train_ids)))
    values = block.values.tocsc()[:, [col[w] for w in wanted]][rows]
    frame = pd.DataFrame(values.toarray().astype(np.float64), columns=wanted)
    frame.insert(0, "id", np.asarray(studyset.ids).astype(str)[rows])
    fit_set = studyset.filter_study_ids(list(row_of[rows])).with_annotations_df(
        frame, name=FEATURE_GROUP, replace=True
    )
    decoder = CorrelationDecoder(
        feature_group=FEATURE_GROUP,
        features=wanted,
        frequency_threshold=frequency_threshold,
        meta_estimator=MKDAChi2(),
        target_image="z_desc-association",
        n_cores=1,
    )
    t0 = time.perf_counter()
    decoder.fit(fit_set)
    fit_seconds = time.perf_counter() - t0
    missing = sorted(set(wanted) - set(decoder.results_.maps))
    if missing:
        raise ValueError(f"The CorrelationDecoder made no map for {missing[:5]}.")
    # Term maps over the decoder's mask, brought onto the test maps' mask.
    masker = decoder.results_.masker
    term_maps = masker.inverse_transform(np.stack([decoder.results_.maps[w] for w in wanted]))
    from nilearn.maskers import NiftiMasker

    ours = NiftiMasker(mask_img).fit()
    term_maps = ours.transform(term_maps)
    scores = np.empty((test_maps.shape[0], len(wanted)))
    for start in range(0, len(scores), 128):  # bounded memory: maps are 228,483 voxels long
        block = test_maps[start : start + 128]
        block = block.toarray() if sp.issparse(block) else np.asarray(block)
        scores[start : start + 128] = pairwise_correlation(block, term_maps)
    times, worst = [], 0.0
    for index, img in check_imgs:
        t0 = time.perf_counter()
        r = decoder.transform(img)["r"].reindex(wanted).to_numpy(dtype=np.float64)
        times.append(time.perf_counter() - t0)
        worst = max(worst, float(np.max(np.abs(r - scores[index]))))
    if worst > 1e-3:
        raise RuntimeError(
            f"Vectorised CorrelationDecoder scores differ from its transform by {worst:.2g}: "
            "the test maps' mask and the decoder's differ."
        )
    return {
        "scores": scores,
        "fit_seconds": fit_seconds,
        "transform_median_ms": 1000 * float(np.median(times)) if times else None,
        "max_check_difference": worst,
    }
