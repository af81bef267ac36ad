"""Term maps: the mean brain vector of the studies using each term, training studies only."""

import numpy as np
import pytest
import scipy.sparse as sp

from nimare_mnm.term_maps import build_term_maps


def _corpus():
    # 6 studies, 4 brain dimensions, 3 terms. Study "t1" (the test study) has a peak of its own
    # (dimension 3) and uses every term.
    ids = ["a", "b", "c", "d", "e", "t1"]
    brain = np.array(
        [
            [1.0, 0, 0, 0],
            [3.0, 0, 0, 0],
            [0, 2.0, 0, 0],
            [0, 4.0, 0, 0],
            [1.0, 1.0, 1.0, 0],
            [0, 0, 0, 100.0],
        ]
    )
    usage = sp.csr_matrix(
        np.array(
            [
                [1, 1, 0],  # a: memory, working memory
                [1, 1, 0],  # b
                [1, 0, 0],  # c: memory
                [1, 0, 0],  # d
                [0, 0, 1],  # e: rare term
                [1, 1, 1],  # t1: everything
            ],
            dtype=bool,
        )
    )
    return ids, brain, usage, ["memory", "working memory", "rare"]


def test_maps_are_means_of_the_training_studies_using_each_term():
    ids, brain, usage, terms = _corpus()
    maps = build_term_maps(ids, brain, usage, terms, train_ids=ids[:5], min_studies=2)
    assert list(maps.terms) == ["memory", "working memory"]  # "rare": one training study
    np.testing.assert_allclose(maps.maps[0], brain[:4].mean(axis=0))
    np.testing.assert_allclose(maps.maps[1], brain[:2].mean(axis=0))
    assert list(maps.n_studies) == [4, 2]
    assert maps.sources_of("working memory") == ["a", "b"]
    assert sorted(maps.sources_of("memory")) == ["a", "b", "c", "d"]
    with pytest.raises(KeyError, match="rare"):
        maps.sources_of("rare")


def test_term_cones_pair_rows_with_the_terms_whose_maps_they_built():
    from nimare_mnm.encoder import _term_usage_rows

    ids, brain, usage, terms = _corpus()
    maps = build_term_maps(ids, brain, usage, terms, train_ids=ids[:5], min_studies=2)
    # Training rows in another order, the test study among them, and two term rows appended.
    rows = ["t1", "e", "d", "c", "b", "a"]
    paired = _term_usage_rows(maps, rows, len(rows) + 2).toarray()
    assert paired.shape == (8, 2)
    expected = {"a": [1, 1], "b": [1, 1], "c": [1, 0], "d": [1, 0], "e": [0, 0], "t1": [0, 0]}
    np.testing.assert_array_equal(paired[:6], [expected[i] for i in rows])
    assert not paired[6:].any()  # the term rows themselves use no term
    with pytest.raises(ValueError, match="not among the training studies"):
        _term_usage_rows(maps, ["a", "b"], 2)


def test_a_test_study_never_builds_a_term_map():
    ids, brain, usage, terms = _corpus()
    maps = build_term_maps(ids, brain, usage, terms, train_ids=ids[:5], min_studies=1)
    # The planted peak of the test study (dimension 3) is in no map, and it is no source.
    assert np.all(maps.maps[:, 3] == 0)
    assert "t1" not in set(maps.study_ids)
    maps.check_excludes(["t1"])
    # Built from every study, the leak is caught.
    leaky = build_term_maps(ids, brain, usage, terms, min_studies=1)
    assert np.all(leaky.maps[:, 3] > 0)
    with pytest.raises(ValueError, match="training studies only"):
        leaky.check_excludes(["t1"])


def test_bad_inputs_are_refused():
    ids, brain, usage, terms = _corpus()
    with pytest.raises(ValueError, match="Expected brain"):
        build_term_maps(ids[:5], brain, usage, terms)
    bad = brain.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        build_term_maps(ids, bad, usage, terms)
    with pytest.raises(ValueError, match="No term is used by 10"):
        build_term_maps(ids, brain, usage, terms, min_studies=10)
    with pytest.raises(ValueError, match="min_studies"):
        build_term_maps(ids, brain, usage, terms, min_studies=0)


@pytest.mark.realdata
@pytest.mark.slow
def test_encoder_trains_on_term_maps_of_its_training_rows_only(neuroquery, data_dir, tmp_path):
    from nimare_mnm import MNMEncoder
    from nimare_mnm.datasets import NEUROQUERY_GROUP, term_usage
    from nimare_mnm.utils import ids_digest

    ids = np.unique(np.asarray(neuroquery.study_ids).astype(str))[:400]
    subset = neuroquery.filter_study_ids(list(ids))
    enc = MNMEncoder(
        preset="nimare-mnm-cones", epochs=1, batch_size=128, device="cpu", data_dir=str(data_dir)
    ).fit(subset)
    record = enc.training_["term_maps"]
    # Study points are the studies only, not the term rows.
    assert len(enc.study_ids_) == enc.training_["n_studies"] <= 400
    # The same maps, counted by hand from the studies training did not validate on.
    terms, usage_ids, usage = term_usage(subset, NEUROQUERY_GROUP)
    fit_ids = np.setdiff1d(np.asarray(enc.study_ids_).astype(str), enc.validation_ids_)
    rows = usage_ids.get_indexer(fit_ids)
    counts = np.asarray(usage[rows].sum(axis=0)).ravel()
    kept = counts >= record["min_studies"]
    assert record["n_terms"] == int(kept.sum()) > 0
    builders = rows[np.asarray(usage[rows][:, kept].sum(axis=1)).ravel() > 0]
    expected = [i for i in np.asarray(usage_ids) if i in set(usage_ids[builders])]
    order = [i for i in np.asarray(enc.study_ids_).astype(str) if i in set(expected)]
    assert record["source_ids_sha256"] == ids_digest(order)
    assert not set(order) & set(enc.validation_ids_)
    # The model records which studies built each map, and its checkpoint keeps the record.
    assert list(enc.term_map_terms_) == list(np.asarray(terms)[kept])
    for j in np.flatnonzero(kept)[:20]:
        users = set(usage_ids[rows[np.asarray(usage[rows][:, j].todense()).ravel() > 0]])
        assert set(enc.term_map_studies(terms[j])) == users
    with pytest.raises(KeyError, match="No term map for .* term_map_terms_"):
        enc.term_map_studies(str(np.asarray(terms)[~kept][0]))
    enc.save_checkpoint(tmp_path / "ckpt")
    loaded = MNMEncoder.from_checkpoint(tmp_path / "ckpt", device="cpu")
    assert list(loaded.term_map_terms_) == list(enc.term_map_terms_)
    assert (loaded.term_map_sources_ != enc.term_map_sources_).nnz == 0
    word = str(enc.term_map_terms_[0])
    assert list(loaded.term_map_studies(word)) == list(enc.term_map_studies(word))
