"""The model behind the web app: loaded once, shared by every request, safe under concurrency.

:class:`MNMService` holds one fitted :class:`~nimare_mnm.MNMDecoder` (and its encoder), and,
when a data folder is given, the NeuroQuery studies that retrieval returns. Requests run in a
thread pool; the model is called under one lock (PyTorch already uses every core for one
query), the figures under another (matplotlib is not thread-safe), and recent predictions are
kept in a small cache so that the viewer, the glass brain and the downloads of one query reuse
the same prediction.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from nimare_mnm.confidence import MAX_QUERY_CHARS
from nimare_mnm.text import validate_texts

LGR = logging.getLogger(__name__)

__all__ = ["Decoding", "MNMService", "Prediction", "PUBMED_URL"]

#: Link to a study, by PubMed id (NeuroQuery's and Neurosynth's study ids are PMIDs).
PUBMED_URL = "https://pubmed.ncbi.nlm.nih.gov/{}/"


@dataclass
class Prediction:
    """A query's prediction, as the pages show it.

    Attributes
    ----------
    text : :obj:`str`
        The query.
    result : :class:`nimare.results.MetaResult`
        What :meth:`MNMEncoder.transform <nimare_mnm.MNMEncoder.transform>` returned.
    studies : :class:`pandas.DataFrame` or None
        The nearest studies (``id``, ``score``, ``title``, ``year``, ``journal``), best first;
        None without a corpus.
    """

    text: str
    result: object
    studies: pd.DataFrame | None = None

    @property
    def query(self) -> pd.Series:
        """The query row: ``radius``, ``generality``, ``confidence``, ``terms``."""
        return self.result.tables["query"].iloc[0]

    @property
    def levels(self) -> pd.DataFrame:
        """One row per region of every level (see ``MNMEncoder.transform``)."""
        return self.result.tables["levels"]


@dataclass
class Decoding:
    """A decoded brain map: ranked terms, and the nearest studies when a corpus is loaded."""

    terms: pd.DataFrame
    coverage: float
    studies: pd.DataFrame | None = None
    warnings: list[str] = field(default_factory=list)


class MNMService:
    """A fitted model shared by the web app's requests.

    Parameters
    ----------
    decoder : :class:`~nimare_mnm.MNMDecoder`
        A fitted decoder; its ``encoder_`` predicts the maps.
    corpus : :class:`nimare.nimads.Studyset`, optional
        The studies retrieval returns (for the pretrained model: NeuroQuery, see
        :func:`~nimare_mnm.load_neuroquery`). Without it the pages show no studies.
    study_info : :class:`pandas.DataFrame`, optional
        ``title``, ``year``, ``journal`` indexed by study id (see :meth:`load`).
    n_studies : :obj:`int`, default=20
        Studies listed per query or decoded map.
    cache_size : :obj:`int`, default=64
        Predictions kept (least recently used first out); 0 turns the cache off.
    """

    def __init__(
        self,
        decoder,
        corpus=None,
        study_info: pd.DataFrame | None = None,
        n_studies: int = 20,
        cache_size: int = 64,
    ) -> None:
        if getattr(decoder, "encoder_", None) is None:
            from sklearn.exceptions import NotFittedError

            raise NotFittedError(
                "The web app needs a fitted MNMDecoder: fit it, or use "
                "MNMDecoder.load_pretrained() or MNMDecoder.from_checkpoint()."
            )
        self.decoder = decoder
        self.encoder = decoder.encoder_
        self.corpus = corpus
        if corpus is not None and study_info is None:
            study_info = study_table(corpus)
        self.study_info = study_info
        self.n_studies = int(n_studies)
        self.cache_size = int(cache_size)
        self._model_lock = threading.Lock()
        self._cache_lock = threading.Lock()
        self._cache: OrderedDict[str, Prediction] = OrderedDict()
        # Warm the text model and every lazily built structure with one query.
        self._predict("brain")

    # ------------------------------------------------------------------ construction
    @classmethod
    def load(
        cls,
        model: str | None = None,
        data_dir: str | None = None,
        device: str = "auto",
        **kwargs,
    ) -> MNMService:
        """Load the pretrained model (or a checkpoint) and, given a data folder, its studies.

        Parameters
        ----------
        model : :obj:`str`, optional
            A checkpoint folder written by ``MNMDecoder.save_checkpoint`` (default: the
            pretrained model shipped with the package).
        data_dir : :obj:`str`, optional
            Folder holding ``neuroquery/`` (and optionally ``neurosynth/``, whose metadata add
            each study's year and journal). Without it no studies are listed.
        device : :obj:`str`, default="auto"
            Where the model runs.
        **kwargs
            Passed to :class:`MNMService`.
        """
        from nimare_mnm import MNMDecoder

        if model:
            decoder = MNMDecoder.from_checkpoint(model, device=device)
        else:
            decoder = MNMDecoder.load_pretrained(device=device)
        corpus = info = None
        if data_dir is not None:
            from nimare_mnm.datasets import load_neuroquery

            corpus = load_neuroquery(data_dir, annotations=False, download=False)
            info = study_table(corpus, neurosynth_metadata(data_dir))
        return cls(decoder, corpus=corpus, study_info=info, **kwargs)

    # ------------------------------------------------------------------ queries
    @staticmethod
    def check_query(text) -> str:
        """Return the query stripped of surrounding blanks, or raise ValueError saying why."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError("Type a query: the text is empty.")
        text = text.strip()
        if len(text) > MAX_QUERY_CHARS:
            raise ValueError(
                f"The query has {len(text):,} characters; at most {MAX_QUERY_CHARS:,} are "
                "accepted (an abstract is about 2,000)."
            )
        validate_texts(text, MAX_QUERY_CHARS)
        return text

    def predict(self, text: str) -> Prediction:
        """Predict the maps of a query and list its nearest studies (cached).

        Raises
        ------
        ValueError
            An empty or overlong query.
        """
        text = self.check_query(text)
        with self._cache_lock:
            if text in self._cache:
                self._cache.move_to_end(text)
                return self._cache[text]
        prediction = self._predict(text)
        if self.cache_size > 0:
            with self._cache_lock:
                self._cache[text] = prediction
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return prediction

    def _predict(self, text: str) -> Prediction:
        with self._model_lock, warnings.catch_warnings():
            # Low confidence is shown on the page (the "confidence" figure), not warned.
            warnings.simplefilter("ignore", UserWarning)
            result = self.encoder.transform(text)
            scores = None
            if self.corpus is not None:
                scores = self.encoder.retrieval_scores(text).iloc[:, 0]
        studies = None
        if scores is not None:
            top = scores[scores.index.isin(self.study_info.index)]
            top = top.sort_values(ascending=False, kind="stable").iloc[: self.n_studies]
            studies = self._describe(top)
        return Prediction(text, result, studies)

    def retrieve(self, text: str, k: int):
        """Return the ``k`` studies nearest to a query as a NiMARE Studyset (for ALE, MKDA).

        Raises
        ------
        LookupError
            No corpus was loaded.
        """
        text = self.check_query(text)
        if self.corpus is None:
            raise LookupError(
                "No studies are loaded: start the app with --data-dir (the folder holding "
                "neuroquery/) to retrieve studies."
            )
        with self._model_lock:
            return self.encoder.retrieve(text, k=k, studyset=self.corpus)

    # ------------------------------------------------------------------ brain maps
    def decode(self, img, sign: str = "positive") -> Decoding:
        """Decode a brain map into terms and, with a corpus, studies.

        Raises
        ------
        ValueError, TypeError
            The decoder's own checks (a 4D image, infinite values, an image outside MNI
            space, a map without data).
        """
        with self._model_lock, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            terms = self.decoder.transform(img, sign=sign)
            studies = None
            if self.study_info is not None:
                studies = self.decoder.decode_studies(img, k=self.n_studies, sign=sign)
        messages = list(dict.fromkeys(str(w.message) for w in caught))
        if studies is not None:
            studies = self._describe(studies["score"])
        return Decoding(terms, float(terms.attrs["coverage"]), studies, messages)

    # ------------------------------------------------------------------ helpers
    def _describe(self, scores: pd.Series) -> pd.DataFrame:
        """Scores indexed by study id -> a table with rank, title, year, journal and a link."""
        ids = pd.Index(scores.index.astype(str), name="id")
        out = pd.DataFrame({"rank": np.arange(1, len(ids) + 1), "score": scores.to_numpy()})
        out.index = ids
        info = self.study_info if self.study_info is not None else pd.DataFrame()
        for column in ("title", "year", "journal"):
            values = info[column].reindex(ids) if column in info else pd.Series(index=ids)
            out[column] = values.fillna("").astype(str).to_numpy()
        out["pubmed"] = [PUBMED_URL.format(i) if i.isdigit() else "" for i in ids]
        return out


def study_table(corpus, extra: pd.DataFrame | None = None) -> pd.DataFrame:
    """Title, year and journal of every study of a Studyset, indexed by study id.

    Parameters
    ----------
    corpus : :class:`nimare.nimads.Studyset`
        The studies.
    extra : :class:`pandas.DataFrame`, optional
        Further metadata indexed by study id (e.g. :func:`neurosynth_metadata`); it fills
        what the corpus lacks (``"n/a"`` or empty).
    """
    meta = corpus.metadata
    ids = meta["study_id"] if "study_id" in meta else meta["id"]
    table = meta.assign(id=ids.astype(str)).drop_duplicates("id").set_index("id")
    out = pd.DataFrame(index=table.index)
    for column in ("title", "year", "journal"):
        values = table[column] if column in table else pd.Series("", index=table.index)
        values = values.astype(str).replace({"n/a": "", "nan": "", "None": ""})
        if extra is not None and column in extra:
            fill = extra[column].reindex(out.index).astype(str).replace({"nan": ""})
            values = values.where(values != "", fill.fillna(""))
        out[column] = values.fillna("")
    return out


def neurosynth_metadata(data_dir) -> pd.DataFrame | None:
    """Neurosynth's study metadata (title, year, journal by PubMed id), or None when absent."""
    from nimare_mnm.datasets import CORPORA, locate_corpus

    spec = CORPORA["neurosynth"]
    try:
        files = locate_corpus(
            spec, data_dir, download=False, files={"metadata": spec.files["metadata"]}
        )
    except FileNotFoundError:
        return None
    table = pd.read_table(files["metadata"], dtype=str, usecols=["id", "title", "year", "journal"])
    return table.drop_duplicates("id").set_index("id")
