"""The trainable text side: TF-IDF of vocabulary terms next to the sentence embedding.

A frozen sentence encoder (all-MiniLM-L6-v2) blurs a study's long list of terms into one
384-d vector, and a text head on top of it can only recombine that vector. With
:class:`TermFeatures` the text head also reads which vocabulary terms a text uses (TF-IDF,
L2-normalised): its first layer then holds one learned vector per term, an embedding bag
trained with the rest of the model, while the sentence embedding still carries the words
outside the vocabulary and free-text queries. :class:`TermAugmentedEncoder` puts the two
side by side; it is what :class:`~nimare_mnm.encoder.MNMEncoder` feeds the model when its
preset sets ``term_features``.

Terms are found in a text with the ``neuroquery`` package's tokenizer
(:class:`neuroquery.tokenization.TextVectorizer`: multi-word terms, its stop words, no
stemming), so "working memory" is one term and "memory" another.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["TermAugmentedEncoder", "TermFeatures"]


class TermFeatures:
    """TF-IDF of a fixed vocabulary of terms in texts.

    Parameters
    ----------
    terms : sequence of :obj:`str`
        The vocabulary (lower-case; multi-word terms allowed).
    frequencies : sequence of :obj:`float`
        Fraction of the training texts using each term (its inverse document frequency is
        ``1 - log(frequency)``).

    Attributes
    ----------
    terms : :class:`numpy.ndarray`
        The vocabulary, in feature order.
    frequencies : :class:`numpy.ndarray`
        float64 document frequency of each term.
    """

    def __init__(self, terms: Sequence[str], frequencies: Sequence[float]) -> None:
        from neuroquery.tokenization import TextVectorizer

        terms = np.asarray([str(t) for t in terms], dtype=object)
        frequencies = np.asarray(frequencies, dtype=np.float64)
        if not len(terms):
            raise ValueError("TermFeatures needs at least one term.")
        if frequencies.shape != terms.shape:
            raise ValueError(
                f"One frequency per term is needed: {len(terms)} terms, {frequencies.shape} "
                "frequencies."
            )
        if not np.all((frequencies > 0) & (frequencies <= 1)):
            raise ValueError("Term frequencies must be in (0, 1].")
        if len(set(terms)) != len(terms):
            raise ValueError("The terms must be unique.")
        self._vectorizer = TextVectorizer.from_vocabulary(
            list(terms), frequencies=list(frequencies), add_unigrams=False, norm="l2"
        ).fit()
        # The tokenizer may reorder its vocabulary; keep our order.
        found = list(self._vectorizer.get_vocabulary())
        self._order = None
        if found != list(terms):
            column = {term: i for i, term in enumerate(found)}
            lost = [t for t in terms if t not in column]
            if lost:
                raise ValueError(
                    f"neuroquery's tokenizer does not keep {len(lost)} of the terms as they are "
                    f"(e.g. {lost[:3]}): give them lower-case, as its vocabulary writes them."
                )
            self._order = np.asarray([column[t] for t in terms])
        self.terms = terms
        self.frequencies = frequencies

    def __len__(self) -> int:
        return len(self.terms)

    def __getstate__(self) -> dict:
        # The tokenizer is rebuilt from the vocabulary: pickles stay small and portable.
        return {"terms": self.terms, "frequencies": self.frequencies}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["terms"], state["frequencies"])

    def to_dict(self) -> dict:
        """Return the vocabulary and frequencies as a JSON-serialisable dict."""
        return {"terms": [str(t) for t in self.terms], "frequencies": self.frequencies.tolist()}

    @classmethod
    def from_dict(cls, record: dict) -> TermFeatures:
        """Rebuild from :meth:`to_dict`'s output (e.g. a checkpoint's configuration)."""
        try:
            return cls(record["terms"], record["frequencies"])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"Incomplete term features record: {exc}") from exc

    def __repr__(self) -> str:
        return f"TermFeatures({len(self)} terms)"

    @classmethod
    def fit(
        cls, texts: Sequence[str], candidates: Sequence[str], min_df: int = 10
    ) -> TermFeatures:
        """Keep the candidate terms used by at least ``min_df`` of ``texts``.

        Parameters
        ----------
        texts : sequence of :obj:`str`
            Training texts.
        candidates : sequence of :obj:`str`
            Possible terms (e.g. the NeuroQuery vocabulary of the training studies).
        min_df : :obj:`int`, default=10
            Fewest texts a term must occur in.

        Returns
        -------
        :class:`TermFeatures`

        Raises
        ------
        ValueError
            No texts, or no candidate term used by ``min_df`` texts.
        """
        texts = [str(t) for t in texts]
        if not texts:
            raise ValueError("TermFeatures.fit needs at least one text.")
        if min_df < 1:
            raise ValueError(f"min_df must be at least 1, got {min_df}.")
        candidates = sorted({str(c).strip().lower() for c in candidates} - {""})
        if not candidates:
            raise ValueError("No candidate terms were given.")
        counts = cls(candidates, np.ones(len(candidates))).transform(texts)
        df = (counts > 0).sum(axis=0)
        keep = np.flatnonzero(df >= min_df)
        if not len(keep):
            raise ValueError(
                f"No candidate term occurs in {min_df} or more of the {len(texts)} texts."
            )
        return cls(np.asarray(candidates, dtype=object)[keep], df[keep] / len(texts))

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        """(n_texts, n_terms) float32 TF-IDF, each row of unit norm (or zero)."""
        features = self._vectorizer.transform([str(t) for t in texts])
        features = np.asarray(features.toarray(), dtype=np.float32)
        return features if self._order is None else features[:, self._order]


class TermAugmentedEncoder:
    """A sentence encoder's embedding, followed by the TF-IDF of vocabulary terms.

    Parameters
    ----------
    sentence_encoder : object with an ``encode(texts)`` method
        E.g. a :class:`~nimare_mnm.text.TextEncoder`; its embeddings come first.
    term_features : :class:`TermFeatures`
        The vocabulary part.
    """

    def __init__(self, sentence_encoder, term_features: TermFeatures) -> None:
        self.sentence_encoder = sentence_encoder
        self.term_features = term_features

    def __repr__(self) -> str:
        return f"TermAugmentedEncoder({self.sentence_encoder!r}, {self.term_features!r})"

    def encode(self, texts, cache: bool | None = None) -> np.ndarray:
        """(n_texts, sentence_dim + n_terms) float32 inputs of the model's text head.

        ``cache`` is passed on to a :class:`~nimare_mnm.text.TextEncoder`.
        """
        from nimare_mnm.text import TextEncoder

        texts = [texts] if isinstance(texts, str) else list(texts)
        if isinstance(self.sentence_encoder, TextEncoder):
            sentence = self.sentence_encoder.encode(texts, cache=cache)
        else:
            sentence = self.sentence_encoder.encode(texts)
        sentence = np.asarray(sentence, dtype=np.float32)
        return np.hstack([sentence, self.term_features.transform(texts)])
