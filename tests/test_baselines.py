import pickle
import warnings

import numpy as np
import pytest
from conftest import requires_data
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from nimare_mnm.experiments.baselines import NeuroQueryBaseline, neuroquery_vocabulary


def _word(prefix, i):
    # the neuroquery tokenizer drops digits-only tokens' context: spell indices as letters
    return prefix + "".join(chr(97 + int(c)) for c in f"{i:03d}")


def _corpus(seed=0, n=100, n_signal=20, n_filler=400, d=50):
    """Studies mention 2 signal words (each with its own map) and 10 filler words (none)."""
    rng = np.random.default_rng(seed)
    signal = [_word("sig", i) for i in range(n_signal)]
    filler = [_word("fill", i) for i in range(n_filler)]
    maps = np.zeros((n_signal, d))
    for i in range(n_signal):
        maps[i, rng.choice(d, 5, replace=False)] = 1.0
    texts, brain = [], []
    for _ in range(n):
        k = rng.choice(n_signal, size=2, replace=False)
        words = [signal[i] for i in k] + list(rng.choice(filler, size=10, replace=False))
        rng.shuffle(words)
        texts.append(" ".join(words))
        brain.append(maps[k].sum(0) + 0.1 * rng.random(d))
    return texts, np.asarray(brain), signal, filler, maps


@pytest.fixture(scope="module")
def fitted():
    texts, brain, signal, filler, maps = _corpus()
    model = NeuroQueryBaseline(vocabulary=signal + filler, n_components=10)
    return model.fit(texts, brain), texts, brain, signal, filler, maps


def test_each_word_predicts_its_own_map(fitted):
    model, texts, brain, signal, filler, maps = fitted
    assert model.regression_.regression_.coef_.shape[0] == maps.shape[1]
    # NeuroQuery's selective ridge keeps the informative terms and drops the filler
    kept = set(model.vocabulary_[model.selected_features_])
    assert kept == set(signal)
    for predict in (model.predict, model.predict_raw):
        pred = predict(signal)
        assert pred.shape == (len(signal), maps.shape[1])
        corr = np.corrcoef(pred, maps)[: len(signal), len(signal) :]
        np.testing.assert_array_equal(corr.argmax(axis=1), np.arange(len(signal)))
        assert np.diag(corr).min() > 0.5
    # a filler word is not a selected feature: only the NMF smoothing gives it a map
    unsmoothed = clone(model).set_params(smoothing_weight=0.0).fit(texts, brain)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the word is known: no "no vocabulary term" warning
        assert np.any(model.predict([filler[0]]))
        assert not np.any(unsmoothed.predict([filler[0]]))
    assert 0 < model.alpha_
    assert model.document_frequency_.shape == model.vocabulary_.shape
    assert model.document_frequency_.max() <= 100


def test_raw_predictions_include_the_mean_map(fitted):
    model, texts, brain, *_ = fitted
    with pytest.warns(UserWarning, match="no vocabulary term"):
        raw = model.predict_raw(["nothing known here"])
    np.testing.assert_allclose(raw[0], model.regression_.regression_.intercept_)
    # in-sample raw predictions are close to the targets' scale, not the z-maps' scale
    assert abs(model.predict_raw(texts).mean() - brain.mean()) < 0.2 * brain.mean()


def test_nmf_smoothing_is_not_all_zeros(fitted):
    from neuroquery.nmf import CovarianceSmoothing

    model, texts, *_ = fitted
    smoothing = model.regression_.smoothing_
    assert np.count_nonzero(smoothing.V_) > 0.1 * smoothing.V_.size
    assert np.all(np.isfinite(smoothing.normalized_V_))
    X = model.transform_text(texts).toarray()
    # the smoothing moves features: 0.9 x + 0.1 x V V^T differs from 0.9 x
    assert not np.allclose(smoothing.transform(X), 0.9 * X)
    # the package's own NMF, under scikit-learn >= 1.2, is the all-zero bug being fixed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        package = CovarianceSmoothing(n_components=10).fit(X)
    assert not np.any(package.V_)


def test_tfidf_uses_training_document_frequencies(fitted):
    model, texts, *_ = fitted
    tfidf = model.transform_text(texts[:3]).toarray()
    np.testing.assert_allclose(np.linalg.norm(tfidf, axis=1), 1.0)
    # a common word weighs less than a rare one within the same text
    vocab = list(model.vocabulary_)
    df = model.document_frequency_
    common, rare = vocab[int(np.argmax(df))], vocab[int(np.argmin(df))]
    weights = model.transform_text([f"{common} {rare}"]).toarray()[0]
    assert weights[vocab.index(rare)] > weights[vocab.index(common)]


def test_pickle_round_trip(fitted):
    model, *_, signal, _, _ = fitted
    clone = pickle.loads(pickle.dumps(model))
    np.testing.assert_allclose(clone.predict(signal[:3]), model.predict(signal[:3]))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_errors():
    texts, brain, signal, filler, _ = _corpus(n=30)
    model = NeuroQueryBaseline(vocabulary=signal + filler, n_components=5)
    with pytest.raises(NotFittedError):
        model.predict(["sigaaa"])
    with pytest.raises(ValueError, match="empty"):
        model.fit([], brain[:0])
    with pytest.raises(ValueError, match="pair up"):
        model.fit(texts, brain[:-1])
    with pytest.raises(ValueError, match="single string"):
        model.fit("sigaaa", brain[:1])
    with pytest.raises(ValueError, match="2-D"):
        model.fit(texts, brain[:, 0])
    with pytest.raises(ValueError, match="n_components"):
        NeuroQueryBaseline(vocabulary=signal, n_components=25).fit(texts, brain)
    bad = brain.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.fit(texts, bad)
    model.fit(texts, brain)
    with pytest.raises(ValueError, match="empty"):
        model.predict([])
    with pytest.raises(ValueError, match="strings"):
        model.predict([1, 2])


@requires_data
def test_neuroquery_vocabulary(data_dir):
    vocabulary = neuroquery_vocabulary(data_dir)
    assert len(vocabulary) == 7547 and len(set(vocabulary)) == 7547
    assert "working memory" in vocabulary and "amygdala" in vocabulary


def test_neuroquery_vocabulary_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="NeuroQuery"):
        neuroquery_vocabulary(tmp_path, download=False)
