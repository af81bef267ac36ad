"""Tests of the decoding comparison (NiMARE's CorrelationDecoder against MNMDecoder)."""

import json

import numpy as np
import pytest
from conftest import requires_data
from nimare_mnm.decoding_comparison import own_term_rank, ranking_auc, run_decoding_comparison


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


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_terms": 1}, "n_terms"),
        ({"n_test_studies": 0}, "n_test_studies"),
        ({"n_terms": 2.5}, "n_terms"),
        ({"max_train_studies": 1}, "max_train_studies"),
        ({"frequency_threshold": 0}, "frequency_threshold"),
    ],
)
def test_run_rejects_bad_settings(kwargs, match):
    # Checked before any data is read.
    with pytest.raises(ValueError, match=match):
        run_decoding_comparison(data_dir="/nonexistent", **kwargs)


@requires_data
def test_run_decoding_comparison_end_to_end(data_dir, tmp_path):
    run = run_decoding_comparison(
        data_dir=data_dir, out_dir=tmp_path, n_terms=8, n_test_studies=5, max_train_studies=300
    )
    on_disk = json.loads((tmp_path / "decoding.json").read_text())
    assert on_disk["decoders"].keys() == run["decoders"].keys()
    assert set(run["decoders"]) == {"CorrelationDecoder", "MNMDecoder"}
    assert run["n_terms"] == 8 and run["n_test_studies"] == 5 and run["seed"] == 0
    assert len(run["vocabulary"]) == 8 and len(run["per_study"]) == 5
    counts = [v["n_training_studies"] for v in run["vocabulary"]]
    assert counts == sorted(counts, reverse=True)
    assert run["n_train_used"] == 300
    assert run["n_train"] + run["n_test"] == 13459
    assert run["test_ids_disjoint_from_pretrained_model"] is True
    assert "vocabulary_source" in run and "commit" in run and run["total_seconds"] > 0
    for name, record in run["decoders"].items():
        assert 0.0 <= record["mean_auc"] <= 1.0, name
        assert 0.0 <= record["median_auc"] <= 1.0, name
        assert 1.0 <= record["mean_own_term_rank"] <= 8.0, name
        assert record["fit_seconds"] > 0 and record["transform_median_ms"] > 0, name
        assert record["settings"]
    settings = run["decoders"]["CorrelationDecoder"]["settings"]
    assert settings["target_image"] == "z_desc-association"
    assert "MKDAChi2" in settings["meta_estimator"]
    for study in run["per_study"]:
        assert 1 <= study["n_own_terms"] < 8
        assert 0.0 <= study["auc_correlation"] <= 1.0
        assert 0.0 <= study["auc_mnm"] <= 1.0
    assert 0.0 <= run["frequency_prior"]["mean_auc"] <= 1.0
