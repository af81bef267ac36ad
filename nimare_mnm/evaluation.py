"""The evaluation protocol: the test split, the validation split and retrieval metrics.

Test split (shared by tests, benchmarks and reports): study ids sorted ascending (as integers
when every id is a number, as NeuroQuery's PubMed ids are), permuted with
``numpy.random.default_rng(0)``; the first 10 % are the test studies. Model selection uses a
validation split carved from the remaining training studies only, so the test studies are
never seen before the final score.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["protocol_split", "validation_split", "recall_at_k", "sorted_ids"]


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


def recall_at_k(similarity: np.ndarray, k: int | Sequence[int] = 10) -> dict[int, float]:
    """Recall@k (%) of the matching item (the diagonal) in a query x key similarity matrix.

    Parameters
    ----------
    similarity : :class:`numpy.ndarray`
        (n, n) similarities; row i's correct key is column i.
    k : :obj:`int` or sequence of :obj:`int`
        Cut-offs.

    Returns
    -------
    :obj:`dict`
        ``{k: recall in percent}``.
    """
    similarity = np.asarray(similarity)
    if similarity.ndim != 2 or similarity.shape[0] != similarity.shape[1]:
        raise ValueError("similarity must be a square (queries x keys) matrix.")
    if not np.isfinite(similarity).all():
        raise ValueError("similarity contains NaN or infinite values.")
    correct = np.diag(similarity)
    # rank = number of keys strictly more similar than the right one
    rank = (similarity > correct[:, None]).sum(axis=1)
    ks = [k] if isinstance(k, int) else list(k)
    return {kk: float(100.0 * np.mean(rank < kk)) for kk in ks}
