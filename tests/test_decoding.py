"""Tests of the frequency-controlled decoding benchmark (nimare_mnm.experiments.decoding)."""

import numpy as np
import pytest
from conftest import requires_data

from nimare_mnm.experiments.decoding import (
    STOP_LIKE_WORDS,
    MeanMapDecoder,
    content_terms,
    own_term_rank,
    ranking_auc,
    summarize_scores,
    zscore_within_study,
)


def test_ranking_auc_hand_example():
    # Positives 0.9 and 0.3, negatives 0.8 and 0.1: 0.9 beats both, 0.3 beats 0.1 only.
    scores = [0.9, 0.8, 0.3, 0.1]
    positive = [True, False, True, False]
    assert ranking_auc(scores, positive) == pytest.approx(3 / 4)
    # Own terms at ranks 1 and 3.
    assert own_term_rank(scores, positive) == pytest.approx(2.0)
    # Perfect, reversed and 0/1 labels.
    assert ranking_auc([3, 2, 1], [1, 0, 0]) == 1.0
    assert ranking_auc([1, 2, 3], [1, 0, 0]) == 0.0


def test_ranking_auc_ties_and_infinities():
    # Tie with one negative counts one half: (0.5 + 1) / 2.
    assert ranking_auc([1.0, 1.0, 0.0], [True, False, False]) == pytest.approx(0.75)
    # A constant score is chance, whatever the labels.
    assert ranking_auc(np.zeros(5), [True, False, True, False, False]) == pytest.approx(0.5)
    assert own_term_rank(np.zeros(4), [True, False, False, False]) == pytest.approx(2.5)
    # -inf (a term without a score) ranks last.
    assert ranking_auc([-np.inf, 0.2, 0.1], [True, False, False]) == 0.0


def test_ranking_auc_matches_pairwise_count():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 40).astype(float)  # many ties
    positive = rng.random(40) < 0.3
    pos, neg = scores[positive], scores[~positive]
    pairs = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    assert ranking_auc(scores, positive) == pytest.approx(pairs.mean())


@pytest.mark.parametrize(
    "scores, positive, match",
    [
        ([0.1, 0.2], [True, True], "one positive and one negative"),
        ([0.1, 0.2], [False, False], "one positive and one negative"),
        ([0.1, 0.2, 0.3], [True, False], "same length"),
        ([0.1, np.nan], [True, False], "NaN"),
        ([0.1, 0.2], [2, 0], "booleans"),
    ],
)
def test_ranking_auc_rejects_bad_input(scores, positive, match):
    with pytest.raises(ValueError, match=match):
        ranking_auc(scores, positive)


def test_frequency_prior_wins_the_confounded_metric_but_not_the_per_term_auc():
    # Terms used by many studies are, study by study, more often "own" terms: a map-blind
    # frequency ranking wins the per-study metric, and gets exactly chance per term.
    rng = np.random.default_rng(0)
    frequency = np.linspace(0.01, 0.5, 40)
    positive = rng.random((300, 40)) < frequency
    prior = np.tile(frequency, (300, 1))
    summary = summarize_scores(prior, positive)
    assert summary["per_term_auc"] == 0.5 and summary["per_term_auc_z"] == 0.5
    assert summary["own_term_auc_confounded"] > 0.7
    # A decoder that reads a (planted) map signal wins per term.
    planted = positive + rng.normal(0, 0.5, positive.shape)
    assert summarize_scores(planted, positive)["per_term_auc"] > 0.8


def test_zscore_within_study():
    z = zscore_within_study(np.array([[1.0, 2.0, 3.0], [4.0, 4.0, 4.0]]))
    np.testing.assert_allclose(z[0], [-1.2247449, 0.0, 1.2247449], rtol=1e-6)
    np.testing.assert_array_equal(z[1], 0.0)  # a constant row carries no ranking


def test_mean_map_decoder():
    import scipy.sparse as sp

    # Term 0 is used by studies active in the first half of the vector, term 1 by the rest.
    rng = np.random.default_rng(0)
    brain = rng.random((20, 10)) * 0.1
    brain[:10, :5] += 1.0
    brain[10:, 5:] += 1.0
    positive = sp.csr_matrix(np.repeat(np.eye(2), 10, axis=0))
    decoder = MeanMapDecoder().fit(brain, positive)
    np.testing.assert_allclose(decoder.term_maps_[0], brain[:10].mean(axis=0))
    test = np.zeros((2, 10))
    test[0, :5] = test[1, 5:] = 1.0
    scores = decoder.scores(test)
    assert scores[0, 0] > 0.9 and scores[1, 1] > 0.9 and scores[0, 1] < -0.9
    with pytest.raises(ValueError, match="at least one"):
        MeanMapDecoder().fit(brain, sp.csr_matrix(np.zeros((20, 1))))


@requires_data
def test_content_terms_on_neuroquery(neuroquery):
    ids = np.unique(np.asarray(neuroquery.study_ids).astype(str))
    train, test = ids[:3000], ids[3000:3600]
    terms = content_terms(neuroquery, train, test)
    n = len(terms["terms"])
    assert 100 < n < 7547
    assert terms["test_positive"].shape == (600, n)
    assert terms["train_positive"].shape == (3000, n)
    assert (terms["train_counts"] <= 0.3 * 3000).all() and (terms["train_counts"] > 0).all()
    used = terms["test_positive"].sum(axis=0)
    assert (used >= 5).all() and (600 - used >= 5).all()
    for term in terms["terms"]:
        assert not set(term.split()) <= STOP_LIKE_WORDS
    assert "study" not in terms["terms"] and "amygdala" in terms["terms"]
