"""The trainable text side: TF-IDF of vocabulary terms beside the sentence embedding."""

import hashlib
import pickle

import numpy as np
import pytest
import scipy.sparse as sp

from nimare_mnm.evaluation import recall_at_k
from nimare_mnm.features import prepare_brain
from nimare_mnm.losses import LossConfig
from nimare_mnm.model import MNMConfig, embed_all
from nimare_mnm.term_features import TermAugmentedEncoder, TermFeatures
from nimare_mnm.training import TrainConfig, train

TEXTS = [
    "Working memory load in the prefrontal cortex",
    "Spatial working memory and the parietal cortex",
    "Fear conditioning in the amygdala",
    "Episodic memory retrieval",
]


def test_fit_keeps_terms_used_by_enough_texts_with_their_frequencies():
    candidates = ["working memory", "prefrontal cortex", "amygdala", "memory", "grid cells"]
    features = TermFeatures.fit(TEXTS, candidates, min_df=1)
    # "memory" alone is only in the last text: the tokenizer reads "working memory" as one
    # term; "grid cells" is in no text.
    assert list(features.terms) == ["amygdala", "memory", "prefrontal cortex", "working memory"]
    np.testing.assert_allclose(features.frequencies, [0.25, 0.25, 0.25, 0.5])
    assert list(TermFeatures.fit(TEXTS, candidates, min_df=2).terms) == ["working memory"]


def test_transform_is_idf_weighted_and_unit_norm():
    features = TermFeatures(["working memory", "prefrontal cortex"], [0.5, 0.05])
    x = features.transform(["working memory in the prefrontal cortex", "nothing known", ""])
    assert x.dtype == np.float32 and x.shape == (3, 2)
    np.testing.assert_allclose(np.linalg.norm(x[0]), 1.0, rtol=1e-6)
    # The rarer term weighs more: idf = 1 - log(frequency).
    ratio = (1 - np.log(0.05)) / (1 - np.log(0.5))
    np.testing.assert_allclose(x[0, 1] / x[0, 0], ratio, rtol=1e-5)
    assert not x[1:].any()


def test_round_trips_through_pickle_and_dict():
    features = TermFeatures.fit(TEXTS, ["working memory", "amygdala"], min_df=1)
    query = ["fear and the amygdala during working memory"]
    for copy in (pickle.loads(pickle.dumps(features)), TermFeatures.from_dict(features.to_dict())):
        np.testing.assert_array_equal(copy.transform(query), features.transform(query))
        assert list(copy.terms) == list(features.terms)


@pytest.mark.parametrize(
    ("terms", "frequencies", "match"),
    [
        ([], [], "at least one term"),
        (["a1", "a2"], [0.5], "One frequency per term"),
        (["a1"], [0.0], r"in \(0, 1\]"),
        (["a1", "a1"], [0.5, 0.5], "unique"),
        (["amygdala", "Working Memory"], [0.5, 0.5], r"does not keep 1 of the terms"),
    ],
)
def test_bad_vocabularies_are_rejected(terms, frequencies, match):
    with pytest.raises(ValueError, match=match):
        TermFeatures(terms, frequencies)


def test_fit_without_any_frequent_term_says_so():
    with pytest.raises(ValueError, match="No candidate term occurs in 3"):
        TermFeatures.fit(TEXTS, ["amygdala"], min_df=3)
    with pytest.raises(ValueError, match="record"):
        TermFeatures.from_dict({"terms": ["a1"]})


class _Blind:
    """A sentence encoder that knows nothing of the domain: a fixed random vector per text."""

    dimension = 16

    def encode(self, texts):
        return np.stack(
            [
                np.random.default_rng(int(hashlib.sha256(t.encode()).hexdigest()[:8], 16)).normal(
                    size=self.dimension
                )
                for t in texts
            ]
        ).astype(np.float32)


def test_augmented_encoder_puts_the_sentence_embedding_first():
    features = TermFeatures(["working memory", "amygdala"], [0.5, 0.5])
    encoder = TermAugmentedEncoder(_Blind(), features)
    x = encoder.encode(["amygdala", "working memory"])
    assert x.shape == (2, 18)
    np.testing.assert_array_equal(x[:, :16], _Blind().encode(["amygdala", "working memory"]))
    np.testing.assert_array_equal(x[:, 16:], [[0, 1], [1, 0]])
    assert encoder.encode("amygdala").shape == (1, 18)


def _vocabulary_corpus(n=360, n_terms=24, dim=48, seed=0):
    """Studies whose map is the sum of the maps of the 3 terms their text uses."""
    rng = np.random.default_rng(seed)
    terms = [f"term{chr(97 + i // 26)}{chr(97 + i % 26)}" for i in range(n_terms)]
    term_maps = np.abs(rng.normal(size=(n_terms, dim))) ** 3
    used = np.stack([rng.choice(n_terms, 3, replace=False) for _ in range(n)])
    texts = [" ".join(terms[j] for j in row) + f" study {i}" for i, row in enumerate(used)]
    brain = term_maps[used].sum(axis=1) + 0.05 * rng.random((n, dim))
    return texts, terms, brain.astype(np.float32)


def test_term_features_learn_what_a_blind_sentence_encoder_misses():
    texts, terms, brain = _vocabulary_corpus()
    features = TermFeatures.fit(texts, terms, min_df=5)
    assert len(features) == len(terms)
    inputs = {
        "sentence only": _Blind().encode(texts),
        "with term features": TermAugmentedEncoder(_Blind(), features).encode(texts),
    }
    val = np.arange(300, 360)
    recall = {}
    for name, text in inputs.items():
        result = train(
            text,
            brain,
            model_config=MNMConfig(text_dim=text.shape[1], brain_dim=brain.shape[1]),
            loss_config=LossConfig(contrastive="angle"),
            train_config=TrainConfig(epochs=15, batch_size=60, seed=0, show_progress=False),
            val_rows=val,
        )
        t = embed_all(result.model, text[val], "text")
        b = embed_all(result.model, prepare_brain(brain[val])["brain"], "brain")
        similarity = result.model.similarity("angle", t, b).detach().numpy()
        recall[name] = recall_at_k(similarity, (10,))[10]
    # 60 held-out studies: chance Recall@10 is 16.7 %. Blind text cannot beat chance by much;
    # the vocabulary carries the signal.
    assert recall["sentence only"] < 35.0
    assert recall["with term features"] > recall["sentence only"] + 30.0, recall


def test_term_usage_must_match_the_rows():
    text = np.zeros((40, 4), dtype=np.float32)
    brain = np.abs(np.random.default_rng(0).normal(size=(40, 6))).astype(np.float32)
    with pytest.raises(ValueError, match="term_usage must be"):
        train(
            text,
            brain,
            loss_config=LossConfig(w_term_cones=0.1),
            term_text=np.zeros((3, 4), dtype=np.float32),
            term_usage=sp.csr_matrix((39, 3), dtype=bool),
        )
    with pytest.raises(ValueError, match="go together"):
        train(text, brain, term_text=np.zeros((3, 4), dtype=np.float32))


@pytest.mark.realdata
@pytest.mark.slow
def test_encoder_reads_the_terms_of_its_training_texts(neuroquery, data_dir, tmp_path):
    from nimare_mnm import MNMEncoder

    ids = np.unique(np.asarray(neuroquery.study_ids).astype(str))[:400]
    subset = neuroquery.filter_study_ids(list(ids))
    enc = MNMEncoder(
        preset="nimare-mnm", epochs=1, batch_size=128, device="cpu", data_dir=str(data_dir)
    ).fit(subset)
    features = enc.term_features_
    assert enc.model_.config.text_dim == 384 + len(features)
    # Frequencies are counts over the texts training fitted on, the validation texts left out.
    n_fit = enc.training_["n_studies"] - len(enc.validation_ids_)
    counts = features.frequencies * n_fit
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-6)
    assert counts.min() >= 10 and "working memory" in set(features.terms)
    queries = ["working memory", "spatial working memory in the prefrontal cortex"]
    expected = enc.embed_text(queries)
    enc.save_checkpoint(tmp_path / "model")
    loaded = MNMEncoder.from_checkpoint(tmp_path / "model", device="cpu")
    assert list(loaded.term_features_.terms) == list(features.terms)
    np.testing.assert_allclose(loaded.embed_text(queries), expected, rtol=1e-5, atol=1e-6)
    copy = pickle.loads(pickle.dumps(enc))
    np.testing.assert_allclose(copy.embed_text(queries), expected, rtol=1e-6, atol=1e-7)
    # The term part of the input moves the point: a term the vocabulary knows counts.
    with_term = enc._encode_texts(["working memory"])
    assert with_term[0, 384:].any()
