"""Query confidence: how much of a query the model's vocabulary recognises.

A text encoder turns any string into a point, and the model then predicts a map for it, so a
query the model cannot understand ("???", an emoji, a language it was not trained on) still
gets a confident-looking map. Like neuroquery.org, which tells its users when a query holds
no term it knows, nimare-mnm measures how much of a query its vocabulary covers: the
vocabulary is the terms used by the training studies (NeuroQuery's term list for a model
trained on NeuroQuery), and a query's **confidence** is the fraction of its content words
(words that are not English stop words, numbers or single characters; a stop word that is
itself a term, such as "back" in "n-back", counts) inside a recognised term. It is 1 for
"working memory", 0 for "???" or "Arbeitsgedächtnis", and in between for a query that mixes
known and unknown words.

The threshold below which :class:`~nimare_mnm.MNMEncoder` warns is calibrated on validation
queries (the titles of the validation studies, see :func:`calibrate_threshold`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import lru_cache

import numpy as np

__all__ = [
    "MAX_QUERY_CHARS",
    "QueryVocabulary",
    "calibrate_threshold",
    "vocabulary_from_texts",
    "words",
]

#: Longest query accepted, in characters (about ten abstracts). Longer texts take seconds
#: to embed and are better summarised or split by the caller.
MAX_QUERY_CHARS = 20_000

#: Fraction of validation queries allowed below the warning threshold.
CALIBRATION_QUANTILE = 0.01

_WORD = re.compile(r"[^\W_]+")


@lru_cache(maxsize=1)
def _stop_words() -> frozenset[str]:
    """scikit-learn's English stop words (imported on first use: this module stays cheap)."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)


def words(text: str) -> list[str]:
    """Lower-case word tokens of a text (letters and digits; punctuation splits words).

    Parameters
    ----------
    text : :obj:`str`
        Any text.

    Returns
    -------
    :obj:`list` of :obj:`str`
    """
    return _WORD.findall(text.lower())


class QueryVocabulary:
    """The terms a model knows, and how much of a query they cover.

    Parameters
    ----------
    terms : iterable of :obj:`str`
        Vocabulary terms (one or more words each, e.g. NeuroQuery's ``"working memory"``).
        They are matched case-insensitively, punctuation counting as a word break
        (``"n-back"`` matches ``"n back"``), and a final plural ``s`` is ignored.

    Attributes
    ----------
    terms : :obj:`frozenset` of :obj:`str`
        The normalised terms.
    max_words : :obj:`int`
        Words in the longest term.
    """

    def __init__(self, terms: Iterable[str]) -> None:
        normalised = {" ".join(words(str(term))) for term in terms}
        normalised.discard("")
        if not normalised:
            raise ValueError("A query vocabulary needs at least one term.")
        self.terms = frozenset(normalised)
        self.max_words = max(term.count(" ") + 1 for term in self.terms)
        # Stop words that are terms of the vocabulary ("back" in "n-back") are content.
        self._stop = _stop_words() - self.terms

    def _is_content(self, word: str) -> bool:
        return len(word) > 1 and word not in self._stop and any(c.isalpha() for c in word)

    def __len__(self) -> int:
        return len(self.terms)

    def _known(self, gram: str) -> str | None:
        if gram in self.terms:
            return gram
        variant = gram[:-1] if gram.endswith("s") else gram + "s"
        return variant if variant in self.terms else None

    def recognise(self, text: str) -> tuple[float, list[str]]:
        """Confidence of one query and the vocabulary terms found in it.

        Parameters
        ----------
        text : :obj:`str`
            One query.

        Returns
        -------
        confidence : :obj:`float`
            Fraction of the query's content words that lie inside a recognised term, in
            [0, 1]; 0 when the query has no content word at all ("a", "???", "1234").
        terms : :obj:`list` of :obj:`str`
            The recognised terms, longest first, in order of appearance within a length.
        """
        tokens = words(text)
        content = {i for i, token in enumerate(tokens) if self._is_content(token)}
        covered: set[int] = set()
        found: list[str] = []
        for n in range(min(self.max_words, len(tokens)), 0, -1):
            for i in range(len(tokens) - n + 1):
                term = self._known(" ".join(tokens[i : i + n]))
                if term is None:
                    continue
                span = set(range(i, i + n))
                if n == 1 and i not in content:
                    continue  # a stop word that happens to be a term says nothing
                if not span <= covered and term not in found:
                    found.append(term)
                covered |= span
        # Words inside a recognised multi-word term ("n back") are content too.
        content |= covered
        return (len(covered) / len(content) if content else 0.0), found

    def confidence(self, texts: Sequence[str]) -> np.ndarray:
        """Confidence of each text (see :meth:`recognise`).

        Parameters
        ----------
        texts : sequence of :obj:`str`
            Queries.

        Returns
        -------
        :class:`numpy.ndarray`
            float64, one value per text.
        """
        return np.array([self.recognise(text)[0] for text in texts], dtype=np.float64)


def calibrate_threshold(
    vocabulary: QueryVocabulary,
    queries: Sequence[str],
    quantile: float = CALIBRATION_QUANTILE,
) -> float:
    """Warning threshold: the confidence that ``quantile`` of real queries fall below.

    Parameters
    ----------
    vocabulary : :class:`QueryVocabulary`
        The model's vocabulary.
    queries : sequence of :obj:`str`
        Real queries the model was not trained on, e.g. the titles of the validation studies.
    quantile : :obj:`float`, default=0.01
        Fraction of those queries allowed below the threshold (and so warned about).

    Returns
    -------
    :obj:`float`
        The threshold; a query whose confidence is below it gets a warning.
    """
    if len(queries) == 0:
        raise ValueError("Calibrating the confidence threshold needs at least one query.")
    if not 0 <= quantile < 1:
        raise ValueError(f"quantile must be in [0, 1), got {quantile!r}.")
    confidence = np.sort(vocabulary.confidence(queries))
    # At most floor(quantile * n) queries lie strictly below the value at that position.
    return float(confidence[min(int(quantile * len(confidence)), len(confidence) - 1)])


def vocabulary_from_texts(texts: Iterable[str], min_df: int = 2) -> list[str]:
    """Words used by at least ``min_df`` texts (a vocabulary for studies without terms).

    Parameters
    ----------
    texts : iterable of :obj:`str`
        The training studies' texts.
    min_df : :obj:`int`, default=2
        Smallest number of texts a word must appear in.

    Returns
    -------
    :obj:`list` of :obj:`str`
        Sorted words (no English stop words, numbers or single characters).
    """
    from collections import Counter

    stop = _stop_words()
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(
            {w for w in words(text) if len(w) > 1 and w not in stop and any(map(str.isalpha, w))}
        )
    return sorted(word for word, n in counts.items() if n >= min_df)
