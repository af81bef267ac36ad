import numpy as np
import pytest
import scipy.sparse as sp
from conftest import requires_data

from nimare_mnm.evaluation import (
    generality_spearman,
    map_correlation,
    peak_auc,
    protocol_split,
    recall_at_k,
    retrieval_metrics,
    sorted_ids,
    validation_split,
)


def test_protocol_split_follows_the_mission():
    ids = [str(i) for i in [30, 4, 200, 1000, 7, 55, 12, 9, 81, 600, 2, 3]]
    train, test = protocol_split(ids)
    ordered = np.array(sorted(ids, key=int), dtype=object)  # numeric, not lexicographic
    expected = ordered[np.random.default_rng(0).permutation(len(ordered))]
    assert list(test) == list(expected[:1]) and list(train) == list(expected[1:])
    assert set(train).isdisjoint(test) and len(train) + len(test) == len(ids)
    # the order the ids come in does not matter
    t2, s2 = protocol_split(ids[::-1])
    assert list(s2) == list(test) and list(t2) == list(train)


def test_validation_comes_from_training_ids_only():
    ids = [str(i) for i in range(1000)]
    train, test = protocol_split(ids)
    fit, val = validation_split(train)
    assert set(val) <= set(train) and set(val).isdisjoint(test)
    assert len(val) == 90 and set(fit) | set(val) == set(train)


def test_sorted_ids_and_duplicates():
    assert list(sorted_ids(["b", "a", "c"])) == ["a", "b", "c"]
    assert list(sorted_ids(["10", "9", "100"])) == ["9", "10", "100"]
    with pytest.raises(ValueError, match="unique"):
        sorted_ids(["1", "1"])


def test_recall_at_k():
    sim = np.array([[0.9, 0.1, 0.0], [0.8, 0.5, 0.2], [0.1, 0.2, 0.3]])
    # row 0: rank 0; row 1: rank 1; row 2: rank 0
    assert recall_at_k(sim, (1, 2)) == {1: pytest.approx(200 / 3), 2: 100.0}
    with pytest.raises(ValueError, match="NaN"):
        recall_at_k(np.full((2, 2), np.nan))
    with pytest.raises(ValueError, match="square"):
        recall_at_k(np.zeros((2, 3)))


def test_recall_at_k_ties():
    sim = np.ones((4, 4))  # every key tied with the right one
    assert recall_at_k(sim, 1) == {1: 100.0}  # the original behaviour is kept by default
    assert recall_at_k(sim, (1, 2), ties="worst") == {1: 0.0, 2: 0.0}
    assert recall_at_k(sim, (1, 2, 4), ties="average") == {1: 25.0, 2: 50.0, 4: 100.0}
    # row 0: one key above, one tied -> right key at position 1 or 2 (0-based), each 1/2
    sim = np.array([[0.5, 0.9, 0.5], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    assert recall_at_k(sim, 2, ties="average")[2] == pytest.approx(100 * (0.5 + 1 + 1) / 3)
    with pytest.raises(ValueError, match="ties"):
        recall_at_k(sim, 1, ties="random")


def test_round_off_is_a_tie_not_a_ranking():
    # The same prediction for every query, as a matrix product may return it: last-bit
    # differences between rows (they depend on the BLAS kernel) must not rank the keys.
    n = 60
    rng = np.random.default_rng(0)
    sim = 0.3 + rng.integers(-3, 4, size=(n, n)) * np.finfo(float).eps
    assert len(np.unique(sim)) > 1
    out = retrieval_metrics(sim, ks=(10,))
    assert out["text_to_brain_recall@10"] == pytest.approx(100 * 10 / n)
    assert out["brain_to_text_recall@10"] == pytest.approx(100 * 10 / n)
    assert out["mix_match"] == pytest.approx(50.0)
    # a real difference, however small against the scores, still ranks
    sim = np.zeros((3, 3)) + np.diag([1e-9, 1e-9, 1e-9])
    assert recall_at_k(sim, 1, ties="average") == {1: 100.0}


def test_retrieval_metrics_perfect_and_reversed():
    n = 120
    perfect = retrieval_metrics(np.eye(n))
    assert set(perfect) == {
        "text_to_brain_recall@5",
        "text_to_brain_recall@10",
        "text_to_brain_recall@100",
        "brain_to_text_recall@5",
        "brain_to_text_recall@10",
        "brain_to_text_recall@100",
        "mix_match",
        "mix_match_brain_to_text",
    }
    assert all(value == 100.0 for value in perfect.values())
    assert all(isinstance(value, float) for value in perfect.values())
    worst = retrieval_metrics(-np.eye(n))  # the right partner always scores lowest
    assert worst["mix_match"] == 0.0 and worst["mix_match_brain_to_text"] == 0.0
    assert worst["text_to_brain_recall@10"] == 0.0 and worst["brain_to_text_recall@100"] == 0.0
    # a constant similarity carries no information: chance, not a perfect score
    flat = retrieval_metrics(np.zeros((n, n)), ks=(10,))
    assert flat["text_to_brain_recall@10"] == pytest.approx(100 * 10 / n)
    assert flat["mix_match"] == 50.0 and flat["mix_match_brain_to_text"] == 50.0


def test_retrieval_metrics_hand_example_and_directions():
    # text 0 -> brain 0 ranked 2nd of 3; text 1 and 2 ranked first.
    sim = np.array([[0.5, 0.9, 0.1], [0.0, 1.0, 0.2], [0.3, 0.4, 0.8]])
    out = retrieval_metrics(sim, ks=(1, 2))
    assert out["text_to_brain_recall@1"] == pytest.approx(200 / 3)
    assert out["text_to_brain_recall@2"] == 100.0
    # percentile ranks: 1/2, 2/2, 2/2 -> 83.33 %
    assert out["mix_match"] == pytest.approx(100 * (0.5 + 1 + 1) / 3)
    # brain -> text uses the columns: brain 1 sees text 1 (1.0) above text 0 (0.9)
    assert out["brain_to_text_recall@1"] == 100.0
    assert out["mix_match_brain_to_text"] == 100.0
    with pytest.raises(ValueError, match="square"):
        retrieval_metrics(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="positive"):
        retrieval_metrics(np.eye(3), ks=(0,))


def test_map_correlation_values_and_sparse_equals_dense():
    rng = np.random.default_rng(0)
    true = rng.random((300, 40)) * (rng.random((300, 40)) < 0.3)
    np.testing.assert_allclose(map_correlation(true, true), 1.0)
    np.testing.assert_allclose(map_correlation(-true, true), -1.0)
    pred = rng.standard_normal((300, 40)).astype(np.float32)
    dense = map_correlation(pred, true, chunk_size=7)
    expected = [np.corrcoef(p, t)[0, 1] for p, t in zip(pred, true)]
    np.testing.assert_allclose(dense, expected, rtol=1e-6)
    np.testing.assert_allclose(map_correlation(pred, sp.csr_matrix(true)), dense, rtol=1e-12)
    np.testing.assert_allclose(map_correlation(pred, sp.csc_matrix(true)), dense, rtol=1e-12)


def test_map_correlation_errors():
    pred = np.arange(12, dtype=float).reshape(3, 4)
    true = pred[::-1].copy()
    const = pred.copy()
    const[2] = 7.0
    with pytest.raises(ValueError, match="predicted map of row 2 is constant"):
        map_correlation(const, true)
    with pytest.raises(ValueError, match="true map of row 2 is constant"):
        map_correlation(true, sp.csr_matrix(const), chunk_size=2)
    with pytest.raises(ValueError, match="same shape"):
        map_correlation(pred, true[:2])
    nan = pred.copy()
    nan[1, 0] = np.nan
    with pytest.raises(ValueError, match="row 1"):
        map_correlation(nan, true)


def test_peak_auc_hand_examples():
    pred = np.array([[0.1, 0.9, 0.2, 0.8, 0.0], [0.1, 0.9, 0.2, 0.8, 0.0]])
    # row 0: the peaks hold the two maxima; row 1: the peak is the minimum
    np.testing.assert_allclose(peak_auc(pred, [np.array([1, 3]), np.array([4])]), [1.0, 0.0])
    # a constant map: every comparison is a tie -> 0.5, whatever the peaks
    np.testing.assert_allclose(peak_auc(np.ones((1, 6)), [np.array([0, 5])]), [0.5])
    # a peak tied with one of 3 negatives and above the two others: (2 + 0.5) / 3
    tie = np.array([[0.3, 0.3, 0.1, 0.2]])
    np.testing.assert_allclose(peak_auc(tie, [np.array([0, 0])]), [2.5 / 3])  # repeats count once


def test_peak_auc_matches_sklearn_on_random_data():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    pred = rng.standard_normal((40, 500)).round(1)  # rounding creates many ties
    peaks = [rng.choice(500, size=rng.integers(1, 30), replace=False) for _ in range(40)]
    auc = peak_auc(pred, peaks, chunk_size=9)
    for row, idx in enumerate(peaks):
        labels = np.zeros(500, dtype=bool)
        labels[idx] = True
        assert auc[row] == pytest.approx(roc_auc_score(labels, pred[row]), abs=1e-12)


def test_peak_auc_errors():
    pred = np.zeros((2, 5))
    with pytest.raises(ValueError, match="row 1 has no peak"):
        peak_auc(pred, [np.array([1]), np.array([], dtype=int)])
    with pytest.raises(ValueError, match="2 rows"):
        peak_auc(pred, [np.array([1])])
    with pytest.raises(ValueError, match="outside"):
        peak_auc(pred, [np.array([1]), np.array([5])])
    with pytest.raises(ValueError, match="integers"):
        peak_auc(pred, [np.array([1.0]), np.array([2])])
    with pytest.raises(ValueError, match="Every voxel"):
        peak_auc(pred, [np.array([1]), np.arange(5)])


def test_generality_spearman():
    assert generality_spearman([0.1, 0.5, 0.3, 0.9], [1, 10, 5, 200]) == pytest.approx(1.0)
    assert generality_spearman([3, 2, 1], [1, 2, 3]) == pytest.approx(-1.0)
    # ranks (3, 2, 1, 4) against (1, 2, 3, 4): 1 - 6 * (4 + 0 + 4 + 0) / (4 * 15) = 0.2
    rho = generality_spearman([3, 2, 1, 5], [1, 2, 3, 4])
    assert isinstance(rho, float) and rho == pytest.approx(0.2)
    with pytest.raises(ValueError, match="same length"):
        generality_spearman([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="constant"):
        generality_spearman([1, 2, 3], [4, 4, 4])
    with pytest.raises(ValueError, match="at least 3"):
        generality_spearman([1, 2], [1, 2])


@requires_data
def test_protocol_split_on_neuroquery(neuroquery):
    train, test = protocol_split(neuroquery.study_ids)
    assert len(test) == 1345 and len(train) == 12114


@requires_data
def test_corpus_arrays_align_texts_and_maps(neuroquery, vectorizer, tmp_path):
    from nimare_mnm.features import corpus_arrays
    from nimare_mnm.text import TextEncoder

    ids = list(neuroquery.study_ids[:40])
    arrays = corpus_arrays(
        neuroquery, ids=ids, vectorizer=vectorizer, encoder=TextEncoder(cache_dir=tmp_path)
    )
    assert len(arrays.ids) == 40 and set(arrays.ids) == set(ids)  # all have peaks
    assert arrays.text.shape == (len(arrays.ids), 384)
    assert arrays.brain.shape == (len(arrays.ids), vectorizer.n_components_)
    assert (arrays.brain.sum(1) > 0).all()
    np.testing.assert_allclose(np.linalg.norm(arrays.text, axis=1), 1, atol=1e-5)
    # Each text row is the embedding of that study's text (rows follow arrays.ids).
    rows = [0, 7, 39]
    studies = [arrays.texts.loc[arrays.ids[i]] for i in rows]
    np.testing.assert_allclose(
        arrays.text[rows], TextEncoder(cache=False).encode(studies), atol=1e-5
    )
    sub = arrays.subset(arrays.ids[[3, 1]])
    assert list(sub.ids) == list(arrays.ids[[3, 1]])
    np.testing.assert_array_equal(sub.brain, arrays.brain[[3, 1]])
    with pytest.raises(KeyError, match="Unknown study ids"):
        arrays.subset(["not-a-study"])


# ------------------------------------------------------------------ benchmark v2 statistics
def test_recall_hits_average_to_recall_at_k():
    from nimare_mnm.evaluation import recall_hits

    rng = np.random.default_rng(0)
    sim = np.round(rng.random((30, 30)), 1)  # many ties
    for ties in ("best", "average", "worst"):
        hits = recall_hits(sim, [1, 5], ties=ties)
        assert recall_at_k(sim, (1, 5), ties=ties) == {
            k: pytest.approx(100 * hits[k].mean()) for k in (1, 5)
        }
    # A constant similarity: every query hits with probability k / n.
    np.testing.assert_allclose(recall_hits(np.ones((4, 4)), [2])[2], 0.5)


def test_per_term_auc_hand_example():
    from nimare_mnm.evaluation import per_term_auc

    # Term 0: positives (studies 0, 2) score 0.9 and 0.3, negatives 0.8 and 0.1 -> 3 of 4
    # pairs right. Term 1: the positive ties with one negative and beats the other two.
    scores = np.array([[0.9, 0.5], [0.8, 0.5], [0.3, 0.2], [0.1, 0.7]])
    positive = np.array([[True, True], [False, False], [True, False], [False, False]])
    np.testing.assert_allclose(per_term_auc(scores, positive), [0.75, (0.5 + 1) / 3])
    # A map-blind score (the same for every study) is exactly chance, whatever the labels.
    constant = np.tile([5.0, 1.0], (4, 1))
    np.testing.assert_array_equal(per_term_auc(constant, positive), [0.5, 0.5])
    # A term nobody (or everybody) uses has no AUC.
    assert np.isnan(per_term_auc(scores[:, :1], np.zeros((4, 1), bool)))[0]
    with pytest.raises(ValueError, match="same shape"):
        per_term_auc(scores, positive[:, :1])


def test_per_term_auc_weights_equal_repeated_studies():
    from nimare_mnm.evaluation import TermRanks, per_term_auc
    from nimare_mnm.experiments.decoding import ranking_auc

    rng = np.random.default_rng(1)
    scores = np.round(rng.random((50, 6)) * 3)  # ties
    positive = rng.random((50, 6)) < 0.3
    expected = [ranking_auc(scores[:, j], positive[:, j]) for j in range(6)]
    np.testing.assert_allclose(per_term_auc(scores, positive), expected)
    weights = rng.integers(0, 3, 50)
    rows = np.repeat(np.arange(50), weights)
    repeated = [ranking_auc(scores[rows, j], positive[rows, j]) for j in range(6)]
    np.testing.assert_allclose(TermRanks(scores, positive).auc(weights), repeated)


def test_paired_bootstrap_intervals():
    from nimare_mnm.evaluation import paired_bootstrap

    # A row that beats the other by exactly 0.1 on every study: the interval is that point.
    a = np.linspace(0, 1, 40)
    out = paired_bootstrap(lambda idx: (a[idx] + 0.1).mean() - a[idx].mean(), 40, n_boot=200)
    assert out["difference"] == pytest.approx(0.1)
    assert out["low"] == pytest.approx(0.1) and out["high"] == pytest.approx(0.1)
    # Noise: the interval is centred on the full-sample difference and, for a mean, about
    # as wide as the normal-theory interval 2 * 1.96 * sd / sqrt(n).
    rng = np.random.default_rng(0)
    for n in (50, 2000):
        x, y = rng.normal(0.05, 1, n), rng.normal(0, 1, n)
        ci = paired_bootstrap(lambda idx, x=x, y=y: x[idx].mean() - y[idx].mean(), n)
        assert ci["difference"] == pytest.approx(x.mean() - y.mean()) and ci["n_boot"] == 1000
        normal = 2 * 1.959964 * (x - y).std() / np.sqrt(n)
        assert ci["high"] - ci["low"] == pytest.approx(normal, rel=0.1)
        assert (ci["low"] + ci["high"]) / 2 == pytest.approx(ci["difference"], abs=0.1 * normal)
    with pytest.raises(ValueError, match="at least 2"):
        paired_bootstrap(lambda idx: 0.0, 1)


def test_pairwise_correlation_matches_corrcoef():
    from nimare_mnm.evaluation import pairwise_correlation

    rng = np.random.default_rng(0)
    a, b = rng.random((4, 30)), rng.random((3, 30))
    expected = np.corrcoef(np.vstack([a, b]))[:4, 4:]
    np.testing.assert_allclose(pairwise_correlation(a, b), expected, atol=1e-12)
    assert (pairwise_correlation(np.ones((1, 30)), b) == 0).all()  # a constant row
    with pytest.raises(ValueError, match="columns"):
        pairwise_correlation(a, b[:, :5])


def test_neighbour_mean_in_bounded_chunks():
    from nimare_mnm.utils import neighbour_mean

    rng = np.random.default_rng(0)
    scores, vectors = rng.random((7, 40)), rng.random((40, 5)).astype(np.float16)
    top = np.argsort(-scores, axis=1)[:, :3]
    expected = vectors.astype(np.float32)[top].mean(axis=1)
    for bound in (1, 15, 2**25):  # one query at a time, a few, all at once
        np.testing.assert_allclose(
            neighbour_mean(scores, vectors, 3, max_elements=bound), expected, rtol=1e-3
        )
    assert neighbour_mean(scores, vectors, 100).shape == (7, 5)  # k capped at the candidates
