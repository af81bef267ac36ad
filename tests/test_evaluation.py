import numpy as np
import pytest
from conftest import requires_data

from nimare_mnm.evaluation import protocol_split, recall_at_k, sorted_ids, validation_split


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
    sub = arrays.subset(arrays.ids[[3, 1]])
    assert list(sub.ids) == list(arrays.ids[[3, 1]])
    np.testing.assert_array_equal(sub.brain, arrays.brain[[3, 1]])
    with pytest.raises(KeyError, match="Unknown study ids"):
        arrays.subset(["not-a-study"])
