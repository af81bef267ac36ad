"""The evaluation protocol: the test split, the validation split and the metrics.

Test split (shared by tests, benchmarks and reports): study ids sorted ascending (as integers
when every id is a number, as NeuroQuery's PubMed ids are), permuted with
``numpy.random.default_rng(0)``; the first 10 % are the test studies. Model selection uses a
validation split carved from the remaining training studies only, so the test studies are
never seen before the final score.

Metrics (pure numpy/scipy, all scores as plain floats):

- :func:`retrieval_metrics`: Recall@k in both directions and mix & match;
- :func:`map_correlation`: per-study Pearson r between predicted and true maps;
- :func:`peak_auc`: per-study ROC AUC of the predicted values at the reported peaks;
- :func:`generality_spearman`: rank correlation between term generality and frequency.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
from scipy import stats

__all__ = [
    "protocol_split",
    "validation_split",
    "recall_at_k",
    "sorted_ids",
    "retrieval_metrics",
    "map_correlation",
    "peak_auc",
    "generality_spearman",
    "recall_hits",
    "pairwise_correlation",
    "per_term_auc",
    "TermRanks",
    "paired_bootstrap",
]

_TIES = ("best", "average", "worst")


def sorted_ids(ids: Sequence) -> np.ndarray:
    """Study ids in ascending order: numeric when all ids are integers, else lexicographic."""
    ids = np.asarray([str(i) for i in ids], dtype=object)
    if len(set(ids)) != len(ids):
        raise ValueError("Study ids must be unique.")
    if all(i.isdigit() for i in ids):
        return ids[np.argsort([int(i) for i in ids], kind="stable")]
    return np.sort(ids)


def protocol_split(
    ids: Sequence, test_fraction: float = 0.1, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Split study ids into the protocol's training and test parts.

    Parameters
    ----------
    ids : sequence
        Study ids.
    test_fraction : :obj:`float`, default=0.1
        Fraction of studies in the test part (rounded down).
    seed : :obj:`int`, default=0
        Seed of :func:`numpy.random.default_rng`.

    Returns
    -------
    train_ids, test_ids : :class:`numpy.ndarray`
        Disjoint, both in the permuted order.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}.")
    ordered = sorted_ids(ids)
    permuted = ordered[np.random.default_rng(seed).permutation(len(ordered))]
    n_test = int(len(permuted) * test_fraction)
    return permuted[n_test:], permuted[:n_test]


def validation_split(
    train_ids: Sequence, fraction: float = 0.1, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Carve a validation part out of training ids only (never from the test part).

    Parameters
    ----------
    train_ids : sequence
        Training study ids (e.g. the first output of :func:`protocol_split`).
    fraction : :obj:`float`, default=0.1
        Fraction used for validation.
    seed : :obj:`int`, default=0
        Seed; the permutation uses ``default_rng(seed + 1)`` so that it differs from the
        test split's.

    Returns
    -------
    fit_ids, val_ids : :class:`numpy.ndarray`
    """
    ordered = sorted_ids(train_ids)
    permuted = ordered[np.random.default_rng(seed + 1).permutation(len(ordered))]
    n_val = max(1, int(len(permuted) * fraction))
    return permuted[n_val:], permuted[:n_val]


def recall_at_k(
    similarity: np.ndarray, k: int | Sequence[int] = 10, *, ties: str = "best"
) -> dict[int, float]:
    """Recall@k (%) of the matching item (the diagonal) in a query x key similarity matrix.

    Parameters
    ----------
    similarity : :class:`numpy.ndarray`
        (n, n) similarities; row i's correct key is column i.
    k : :obj:`int` or sequence of :obj:`int`
        Cut-offs.
    ties : {"best", "average", "worst"}, default="best"
        How wrong keys exactly as similar as the right one count. ``"best"`` ranks the right
        key before them (the original behaviour, which favours the model: a constant
        similarity gives 100 %); ``"worst"`` ranks it after them; ``"average"`` gives the
        expected recall when ties are broken at random (a constant similarity gives chance,
        ``k / n``). The protocol's :func:`retrieval_metrics` uses ``"average"``.

    Returns
    -------
    :obj:`dict`
        ``{k: recall in percent}``.
    """
    ks = [k] if isinstance(k, int) else list(k)
    return {
        kk: float(100.0 * np.mean(hits))
        for kk, hits in recall_hits(similarity, ks, ties=ties).items()
    }


def recall_hits(
    similarity: np.ndarray, k: Sequence[int], *, ties: str = "average"
) -> dict[int, np.ndarray]:
    """Per query, whether its matching item (the diagonal) is among its k most similar keys.

    Parameters
    ----------
    similarity : :class:`numpy.ndarray`
        (n, n) similarities; row i's correct key is column i.
    k : sequence of :obj:`int`
        Cut-offs.
    ties : {"best", "average", "worst"}, default="average"
        See :func:`recall_at_k`.

    Returns
    -------
    :obj:`dict`
        ``{k: (n,) array}`` of hits in [0, 1] (fractional with ``ties="average"``: the
        probability of a hit when ties are broken at random). Their mean is the recall; the
        per-query values are what a paired bootstrap resamples.
    """
    if ties not in _TIES:
        raise ValueError(f"ties must be one of {_TIES}, got {ties!r}.")
    similarity = np.asarray(similarity)
    if similarity.ndim != 2 or similarity.shape[0] != similarity.shape[1]:
        raise ValueError("similarity must be a square (queries x keys) matrix.")
    if not np.isfinite(similarity).all():
        raise ValueError("similarity contains NaN or infinite values.")
    above, tied = _above_and_tied(similarity)
    rank = above  # number of keys more similar than the right one
    out = {}
    for kk in k:
        if ties == "best":
            hit = (rank < kk).astype(float)
        elif ties == "worst":
            hit = (rank + tied < kk).astype(float)
        else:  # the right key's position is uniform over rank .. rank + tied
            hit = np.clip((kk - rank) / (tied + 1.0), 0.0, 1.0)
        out[int(kk)] = hit
    return out


def _above_and_tied(similarity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the keys scored above the right one (the diagonal) and the wrong keys tied with it.

    Scores within a few units in the last place of the matrix's precision count as ties:
    identical predictions can come out of a matrix product with last-bit differences that
    depend on the BLAS kernel and the row's position, and a floor that predicts the same map
    for every query must score chance on every machine, not a ranking decided by round-off.
    """
    eps = np.finfo(similarity.dtype).eps if np.issubdtype(similarity.dtype, np.floating) else 0
    tol = 16 * eps * max(1.0, float(np.abs(similarity).max(initial=0.0)))
    correct = np.diag(similarity)[:, None]
    above = (similarity > correct + tol).sum(axis=1)
    tied = (np.abs(similarity - correct) <= tol).sum(axis=1) - 1  # minus the right key itself
    return above, tied


def _percentile_rank(similarity: np.ndarray) -> np.ndarray:
    """Per row, the % of wrong keys scored below the right one (ties count half)."""
    above, tied = _above_and_tied(similarity)
    below = similarity.shape[1] - 1 - above - tied
    return 100.0 * (below + 0.5 * tied) / (similarity.shape[1] - 1)


def retrieval_metrics(similarity: np.ndarray, ks: Sequence[int] = (5, 10, 100)) -> dict:
    """Recall@k in both directions and mix & match for paired texts and brain maps.

    Parameters
    ----------
    similarity : :class:`numpy.ndarray`
        (n, n) similarities between n texts (rows) and the n brain maps (columns) of the same
        studies, in the same order: the right partner of text i is brain map i.
    ks : sequence of :obj:`int`, default=(5, 10, 100)
        Recall cut-offs.

    Returns
    -------
    :obj:`dict`
        ``"text_to_brain_recall@k"`` and ``"brain_to_text_recall@k"`` for every k (%),
        ``"mix_match"`` (text -> brain) and ``"mix_match_brain_to_text"`` (%), all floats.

    Notes
    -----
    Recall@k is the % of queries whose right partner is among their k most similar
    candidates (:func:`recall_at_k` with ``ties="average"``: a candidate scored exactly as
    high as the right partner is placed before it half of the time on average, so ties never
    favour the model and a constant similarity scores chance, ``k / n``). Mix & match
    (NeuroQuery, Dockès et al. 2020; Text2Brain, Ngo et al. 2022) is the mean percentile rank
    of the right partner: for each query, the % of wrong candidates scored lower than the
    right partner, ties counting half, averaged over queries. Chance is 50 %, perfect 100 %.
    """
    similarity = np.asarray(similarity, dtype=float)
    if similarity.ndim != 2 or similarity.shape[0] != similarity.shape[1]:
        raise ValueError(
            "similarity must be a square (texts x brain maps) matrix with the right partners "
            f"on the diagonal, got shape {similarity.shape}."
        )
    if similarity.shape[0] < 2:
        raise ValueError("similarity must compare at least 2 studies.")
    ks = [int(k) for k in ks]
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive integers, got {ks}.")
    out = {}
    for name, sim in (("text_to_brain", similarity), ("brain_to_text", similarity.T)):
        for k, value in recall_at_k(sim, ks, ties="average").items():
            out[f"{name}_recall@{k}"] = value
    out["mix_match"] = float(_percentile_rank(similarity).mean())
    out["mix_match_brain_to_text"] = float(_percentile_rank(similarity.T).mean())
    return out


def _check_rows(name: str, array, n_rows: int | None = None) -> None:
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (studies x voxels) array, got {array.ndim}-D.")
    if n_rows is not None and array.shape[0] != n_rows:
        raise ValueError(f"{name} has {array.shape[0]} rows, expected {n_rows}.")


def map_correlation(
    predicted: np.ndarray, true: np.ndarray | sp.spmatrix, chunk_size: int = 128
) -> np.ndarray:
    """Pearson correlation between each predicted map and the matching true map.

    Parameters
    ----------
    predicted : :class:`numpy.ndarray`
        (n, v) predicted maps (dense).
    true : :class:`numpy.ndarray` or :mod:`scipy.sparse` matrix
        (n, v) true maps, dense or sparse (e.g. CSR).
    chunk_size : :obj:`int`, default=128
        Rows processed at a time: memory stays bounded by a few ``chunk_size x v`` float64
        arrays, and a sparse ``true`` is never densified beyond ``chunk_size`` rows.

    Returns
    -------
    :class:`numpy.ndarray`
        (n,) Pearson r per study, in row order. The protocol's map score is its mean.

    Raises
    ------
    ValueError
        On mismatched shapes, non-finite values, or a constant row in either input (its
        correlation is undefined), naming the first such row.
    """
    if sp.issparse(true):
        true = sp.csr_matrix(true)
    else:
        true = np.asarray(true)
    predicted = np.asarray(predicted)
    _check_rows("predicted", predicted)
    _check_rows("true", true)
    if predicted.shape != true.shape:
        raise ValueError(
            f"predicted {predicted.shape} and true {true.shape} maps must have the same shape."
        )
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}.")
    n = predicted.shape[0]
    r = np.empty(n)
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        centred = []
        for name, block in (("predicted", predicted[start:stop]), ("true", true[start:stop])):
            block = block.toarray() if sp.issparse(block) else block
            block = np.array(block, dtype=np.float64)  # a copy: centred in place below
            if not np.isfinite(block).all():
                row = start + int(np.flatnonzero(~np.isfinite(block).all(axis=1))[0])
                raise ValueError(f"{name} map of row {row} contains NaN or infinite values.")
            scale = np.abs(block).max(axis=1, initial=0.0)
            block -= block.mean(axis=1, keepdims=True)
            norm = np.sqrt(np.einsum("ij,ij->i", block, block))
            # a spread below float rounding of the values (or none at all) is a constant map
            flat = (norm == 0) | (norm <= 1e-10 * scale * np.sqrt(block.shape[1]))
            if flat.any():
                row = start + int(np.flatnonzero(flat)[0])
                raise ValueError(
                    f"The {name} map of row {row} is constant: its correlation is undefined."
                )
            centred.append((block, norm))
        (p, pn), (t, tn) = centred
        r[start:stop] = np.einsum("ij,ij->i", p, t) / (pn * tn)
    return np.clip(r, -1.0, 1.0)


def peak_auc(
    predicted: np.ndarray, peak_index: Sequence[np.ndarray], chunk_size: int = 64
) -> np.ndarray:
    """ROC AUC of each predicted map at the study's reported peaks against all other voxels.

    Parameters
    ----------
    predicted : :class:`numpy.ndarray`
        (n, v) predicted maps over the v voxels of the mask.
    peak_index : sequence of :class:`numpy.ndarray`
        n integer arrays: the mask voxel indices (0 .. v-1) of each study's reported peaks.
        Repeated indices (several peaks in one voxel) count once.
    chunk_size : :obj:`int`, default=64
        Rows sorted at a time (bounds the memory to ``chunk_size x v`` values).

    Returns
    -------
    :class:`numpy.ndarray`
        (n,) AUC per study: the probability that a peak voxel scores higher than a non-peak
        voxel, ties counting half (0.5 = chance).

    Raises
    ------
    ValueError
        On a length mismatch, non-finite predictions, or a study whose peak list is empty,
        out of range or covers every voxel (naming the study's row).

    Notes
    -----
    The AUC is the Mann-Whitney statistic ``U / (n_pos n_neg)`` with ``U = R_pos -
    n_pos (n_pos + 1) / 2``, where ``R_pos`` is the sum of the peak voxels' ranks among all
    voxels, ties getting their average rank (as :func:`scipy.stats.rankdata`). Each row is
    sorted once and the average ranks of the peaks read off with binary search, which gives
    the same ranks as ``rankdata`` without ranking every voxel (1,345 x 228,483 takes
    seconds).
    """
    predicted = np.asarray(predicted)
    _check_rows("predicted", predicted)
    n, v = predicted.shape
    if len(peak_index) != n:
        raise ValueError(f"peak_index has {len(peak_index)} entries but predicted has {n} rows.")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}.")
    peaks = []
    for row, idx in enumerate(peak_index):
        idx = np.asarray(idx)
        if idx.size and not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"peak_index[{row}] must hold integers, got dtype {idx.dtype}.")
        idx = np.unique(idx.astype(np.int64).ravel())
        if idx.size == 0:
            raise ValueError(f"Study in row {row} has no peak voxel: its AUC is undefined.")
        if idx[0] < 0 or idx[-1] >= v:
            raise ValueError(
                f"peak_index[{row}] has voxel indices outside 0..{v - 1} "
                f"(min {idx[0]}, max {idx[-1]})."
            )
        if idx.size == v:
            raise ValueError(f"Every voxel is a peak of the study in row {row}: AUC undefined.")
        peaks.append(idx)
    auc = np.empty(n)
    for start in range(0, n, chunk_size):
        block = predicted[start : start + chunk_size]
        if not np.isfinite(block).all():
            row = start + int(np.flatnonzero(~np.isfinite(block).all(axis=1))[0])
            raise ValueError(f"predicted map of row {row} contains NaN or infinite values.")
        ordered = np.sort(block, axis=1)
        for offset, values in enumerate(ordered):
            row = start + offset
            pos = block[offset, peaks[row]]
            lower = np.searchsorted(values, pos, side="left")  # voxels scored below
            upper = np.searchsorted(values, pos, side="right")
            # 1-based average rank of a value tied over positions lower .. upper - 1
            rank_sum = np.sum((lower + upper + 1) / 2.0)
            n_pos = pos.size
            u = rank_sum - n_pos * (n_pos + 1) / 2.0
            auc[row] = u / (n_pos * (v - n_pos))
    return auc


def generality_spearman(generality: Sequence[float], frequency: Sequence[float]) -> float:
    """Spearman correlation between term generality and term frequency.

    Parameters
    ----------
    generality : sequence of :obj:`float`
        A generality score per term (e.g. closeness of its embedding to the origin).
    frequency : sequence of :obj:`float`
        The number of studies using each term, in the same order.

    Returns
    -------
    :obj:`float`
        Spearman's rho (:func:`scipy.stats.spearmanr`): positive when frequent terms are
        scored more general.

    Raises
    ------
    ValueError
        On different lengths, fewer than 3 terms, non-finite values, or a constant input
        (rho undefined).
    """
    generality = np.asarray(generality, dtype=float).ravel()
    frequency = np.asarray(frequency, dtype=float).ravel()
    if generality.shape != frequency.shape:
        raise ValueError(
            f"generality ({generality.size} terms) and frequency ({frequency.size} terms) "
            "must have the same length."
        )
    if generality.size < 3:
        raise ValueError(f"Need at least 3 terms for a rank correlation, got {generality.size}.")
    for name, values in (("generality", generality), ("frequency", frequency)):
        if not np.isfinite(values).all():
            raise ValueError(f"{name} contains NaN or infinite values.")
        if np.all(values == values[0]):
            raise ValueError(f"{name} is constant: the rank correlation is undefined.")
    return float(stats.spearmanr(generality, frequency).statistic)


def pairwise_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation between every row of ``a`` and every row of ``b``.

    Parameters
    ----------
    a, b : :class:`numpy.ndarray`
        (n, v) and (m, v) maps or vectors.

    Returns
    -------
    :class:`numpy.ndarray`
        (n, m) correlations; a constant row correlates 0 with everything.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"Expected 2-D arrays with as many columns, got {a.shape}, {b.shape}.")
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    a /= np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b /= np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return a @ b.T


def per_term_auc(
    scores: np.ndarray, positive: np.ndarray, weights: np.ndarray | None = None
) -> np.ndarray:
    """ROC AUC of each term's scores across studies (frequency-controlled decoding).

    For term j, the probability that a study using it (``positive[:, j]``) gets a higher
    score for it than a study not using it, ties counting half. A score that is the same for
    every study (any map-blind prior, such as the term's frequency) gives exactly 0.5, so
    term frequency cannot win this metric; only how the score varies with the map can.

    Parameters
    ----------
    scores : :class:`numpy.ndarray`
        (n_studies, n_terms) decoder scores (NaN not allowed).
    positive : :class:`numpy.ndarray`
        (n_studies, n_terms) booleans: which studies use which term.
    weights : :class:`numpy.ndarray`, optional
        (n_studies,) non-negative study weights, e.g. how often a bootstrap resample drew
        each study (the AUC of the resampled studies without building them).

    Returns
    -------
    :class:`numpy.ndarray`
        (n_terms,) AUCs; NaN for a term without both a positive and a negative study.

    Notes
    -----
    The Mann-Whitney count is taken along each term's sorted scores: a positive study counts
    the (weighted) negative studies scored below it, plus half of those tied with it. It
    equals the rank formula (checked against :func:`scipy.stats.rankdata` in the tests).
    """
    return TermRanks(scores, positive).auc(weights)


class TermRanks:
    """Each term's scores sorted once, so that :meth:`auc` for many study weightings is fast.

    A bootstrap over studies changes only the weights; the order of the scores and their tie
    groups stay the same. See :func:`per_term_auc` for the parameters.
    """

    def __init__(self, scores: np.ndarray, positive: np.ndarray) -> None:
        scores = np.asarray(scores, dtype=np.float64)
        positive = np.asarray(positive, dtype=bool)
        if scores.ndim != 2 or scores.shape != positive.shape:
            raise ValueError(
                f"scores {scores.shape} and positive {positive.shape} must be 2-D and of the "
                "same shape (studies x terms)."
            )
        if np.isnan(scores).any():
            raise ValueError("scores contain NaN.")
        # Terms as rows: every operation below runs along contiguous memory.
        by_term = np.ascontiguousarray(scores.T)
        self.n_studies = scores.shape[0]
        self.order = np.argsort(by_term, axis=1, kind="stable")
        values = np.take_along_axis(by_term, self.order, axis=1)
        self.positive = np.take_along_axis(np.ascontiguousarray(positive.T), self.order, axis=1)
        n = self.n_studies
        index = np.arange(n)[None, :]
        new = np.ones(values.shape, dtype=bool)
        new[:, 1:] = values[:, 1:] != values[:, :-1]
        self.has_ties = not new.all()
        if self.has_ties:
            self.start = np.maximum.accumulate(np.where(new, index, 0), axis=1)
            last = np.ones(values.shape, dtype=bool)
            last[:, :-1] = new[:, 1:]
            ends = np.where(last, index, n - 1)[:, ::-1]
            self.end = np.ascontiguousarray(np.minimum.accumulate(ends, axis=1)[:, ::-1])

    def auc(self, weights: np.ndarray | None = None) -> np.ndarray:
        """Per-term AUC with the given study weights (None: every study once)."""
        n = self.n_studies
        w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
        if w.shape != (n,) or (w < 0).any():
            raise ValueError(f"weights must be {n} non-negative numbers.")
        # float32 halves the memory traffic; sums of study counts stay exact in it.
        sorted_w = w.astype(np.float32)[self.order]
        pos_w = np.where(self.positive, sorted_w, np.float32(0.0))
        neg_w = sorted_w - pos_w
        cum = np.cumsum(neg_w, axis=1)  # negatives at or below each sorted position
        if self.has_ties:
            # A positive counts the negatives below its tie group, and half of those in it.
            start_cum = np.take_along_axis(cum, self.start, axis=1)
            before = start_cum - np.take_along_axis(neg_w, self.start, axis=1)
            tied = np.take_along_axis(cum, self.end, axis=1) - before
            below = before + 0.5 * tied
        else:
            below = cum - neg_w
        u = np.einsum("ij,ij->i", pos_w, below, dtype=np.float64)
        n_pos = pos_w.sum(axis=1, dtype=np.float64)
        n_neg = neg_w.sum(axis=1, dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)


def paired_bootstrap(
    difference, n_studies: int, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> dict:
    """Paired bootstrap confidence interval of a difference between two rows over studies.

    Parameters
    ----------
    difference : callable
        ``difference(idx)`` returns the statistic of one row minus that of the other on the
        studies ``idx`` (an integer array, with repeats): for example the difference of mean
        per-study map r, or of mean per-term AUC recomputed on the resampled studies. Both
        rows see the same resample: the bootstrap is paired.
    n_studies : :obj:`int`
        Number of test studies.
    n_boot : :obj:`int`, default=1000
        Resamples.
    seed : :obj:`int`, default=0
        Seed of the resampling.
    level : :obj:`float`, default=0.95
        Coverage of the percentile interval.

    Returns
    -------
    :obj:`dict`
        ``difference`` (on all studies), ``low`` and ``high`` (percentile interval),
        ``n_boot``.
    """
    if n_studies < 2:
        raise ValueError(f"The bootstrap needs at least 2 studies, got {n_studies}.")
    if not 0 < level < 1 or n_boot < 1:
        raise ValueError(f"level must be in (0, 1) and n_boot >= 1, got {level}, {n_boot}.")
    rng = np.random.default_rng(seed)
    diffs = np.array(
        [difference(rng.integers(0, n_studies, n_studies)) for _ in range(n_boot)], dtype=float
    )
    tail = 100 * (1 - level) / 2
    low, high = np.nanpercentile(diffs, [tail, 100 - tail])
    return {
        "difference": float(difference(np.arange(n_studies))),
        "low": float(low),
        "high": float(high),
        "n_boot": int(n_boot),
    }
