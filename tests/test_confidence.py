"""Query confidence: the vocabulary's coverage of a query, its calibration, and its warnings."""

import warnings

import numpy as np
import pytest

from nimare_mnm.confidence import (
    MAX_QUERY_CHARS,
    QueryVocabulary,
    calibrate_threshold,
    vocabulary_from_texts,
    words,
)

VOCABULARY = QueryVocabulary(
    ["working memory", "memory", "back", "saccades", "fear", "Default Mode", "network"]
)

#: Queries a user tried that got confident-looking maps (issue 15).
NONSENSE = ["😱🧠", "???", "a", "工作记忆", "Arbeitsgedächtnis"]
#: The queries of README.rst and of the demo.
README_QUERIES = ["working memory", "finger tapping", "fear conditioning", "visual motion"]


def test_words_split_on_punctuation_and_keep_other_scripts():
    assert words("N-back, Working-Memory!") == ["n", "back", "working", "memory"]
    assert words("工作记忆 ???") == ["工作记忆"]
    assert words("😱🧠") == []


@pytest.mark.parametrize(
    "query, confidence, terms",
    [
        ("working memory", 1.0, ["working memory"]),  # the longest term wins
        ("Working-Memory load", 2 / 3, ["working memory"]),
        ("memory", 1.0, ["memory"]),
        ("saccade", 1.0, ["saccades"]),  # a final plural s is ignored
        ("n-back", 1.0, ["back"]),  # a stop word that is a term counts
        ("the default mode network", 1.0, ["default mode", "network"]),
        ("Arbeitsgedächtnis und working memory", 0.5, ["working memory"]),
        ("???", 0.0, []),
        ("a", 0.0, []),  # only a stop word: nothing to recognise
        ("1234", 0.0, []),
        ("工作记忆", 0.0, []),
    ],
)
def test_recognise_hand_cases(query, confidence, terms):
    assert VOCABULARY.recognise(query) == (pytest.approx(confidence), terms)


def test_words_of_a_multi_word_term_count_even_when_stop_words():
    # "n" is a single letter and "back" a stop word: only the term makes them content.
    assert QueryVocabulary(["n back"]).recognise("n-back") == (1.0, ["n back"])
    assert QueryVocabulary(["n back"]).recognise("n-back pizza") == (
        pytest.approx(2 / 3),
        ["n back"],
    )


def test_vocabulary_refuses_to_be_empty():
    with pytest.raises(ValueError, match="at least one term"):
        QueryVocabulary(["", "??"])


def test_threshold_is_the_quantile_of_real_queries():
    queries = ["working memory"] * 98 + ["fear and trembling"] * 1 + ["???"]  # 1.0, 0.5, 0.0
    assert calibrate_threshold(VOCABULARY, queries, quantile=0.0) == 0.0
    assert calibrate_threshold(VOCABULARY, queries, quantile=0.01) == 0.5
    assert calibrate_threshold(VOCABULARY, queries, quantile=0.5) == 1.0
    with pytest.raises(ValueError, match="at least one query"):
        calibrate_threshold(VOCABULARY, [])
    with pytest.raises(ValueError, match="quantile"):
        calibrate_threshold(VOCABULARY, queries, quantile=1.0)


def test_vocabulary_from_texts_keeps_words_of_several_texts():
    texts = ["Fear of spiders in the amygdala", "amygdala and fear", "spiders, 2 of them"]
    assert vocabulary_from_texts(texts) == ["amygdala", "fear", "spiders"]
    assert vocabulary_from_texts(texts, min_df=3) == []


@pytest.fixture(scope="module")
def encoder():
    from nimare_mnm import MNMEncoder

    return MNMEncoder.load_pretrained(device="cpu")


def test_pretrained_model_is_calibrated(encoder):
    assert len(encoder.vocabulary_) > 1000
    assert 0 < encoder.confidence_threshold_ < 1
    assert encoder.training_["query_confidence"]["calibration"] == "validation titles"


@pytest.mark.parametrize("query", NONSENSE)
def test_nonsense_queries_warn_and_say_so_in_the_query_table(encoder, query):
    with pytest.warns(UserWarning, match="barely recognised"):
        result = encoder.transform(query)
    table = result.tables["query"]
    assert table["confidence"].iloc[0] == 0.0 and table["terms"].iloc[0] == ""


def test_readme_queries_do_not_warn(encoder):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        results = encoder.transform(README_QUERIES)
    confidence = [r.tables["query"]["confidence"].iloc[0] for r in results]
    assert min(confidence) >= encoder.confidence_threshold_
    assert results[0].tables["query"]["terms"].iloc[0] == "working memory"
    table = encoder.confidence(README_QUERIES + ["???"], warn=False)
    assert list(table["low"]) == [False] * len(README_QUERIES) + [True]


def test_nothing_recognised_always_warns(encoder):
    import copy

    uncalibrated = copy.copy(encoder)
    uncalibrated.confidence_threshold_ = 0.0  # e.g. 1 % of a small validation set scored 0
    with pytest.warns(UserWarning, match="barely recognised"):
        table = uncalibrated.confidence(["???", "working memory"])
    assert list(table["low"]) == [True, False]


def test_overlong_query_is_refused_with_its_length(encoder):
    query = "working memory " * (MAX_QUERY_CHARS // 15 + 1)
    with pytest.raises(ValueError, match=f"{len(query):,} characters"):
        encoder.transform(query)
    with pytest.raises(ValueError, match="more than the"):
        encoder.confidence(query)


def test_checkpoint_without_vocabulary_reports_nan(encoder, tmp_path, caplog):
    from nimare_mnm import MNMEncoder

    path = tmp_path / "model"
    encoder.save_checkpoint(path)
    copy = MNMEncoder.from_checkpoint(path, device="cpu")
    assert copy.vocabulary_.terms == encoder.vocabulary_.terms
    assert copy.confidence_threshold_ == encoder.confidence_threshold_
    # A checkpoint written before vocabularies were recorded (and without a decoder).
    import json

    config = json.loads((path / "config.json").read_text())
    config.pop("vocabulary"), config.pop("query_confidence"), config.pop("decoder", None)
    (path / "config.json").write_text(json.dumps(config))
    with caplog.at_level("WARNING"):
        old = MNMEncoder.from_checkpoint(path, device="cpu")
    assert "records no vocabulary" in caplog.text
    table = old.confidence(["working memory"])
    assert np.isnan(table["confidence"].iloc[0]) and not table["low"].iloc[0]
