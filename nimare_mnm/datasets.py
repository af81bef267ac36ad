"""Corpora as NiMARE Studysets: NeuroQuery v1 and Neurosynth v7, with a text for every study.

The database files are found (or downloaded, for users who are online) by NiMARE's own
fetchers, :func:`nimare.extract.fetch_neuroquery` and :func:`nimare.extract.fetch_neurosynth`,
with keywords that select exactly the files nimare-mnm needs. The Studyset itself is built by
a fast path: the files are turned into NiMARE's parquet studyset tables, written once to a
writable cache, and read with :meth:`nimare.nimads.Studyset.from_parquet`. NiMARE's own
conversion (``return_type="studyset"``) goes through the legacy Dataset and takes more than
ten minutes and about 11 GB for NeuroQuery; the result here is the same studyset (checked on
a subset by the test suite) in seconds.

Every study gets a text, stored in the analysis-level text field ``"text"``:

- NeuroQuery: its title, its keywords, and the terms of its abstract ordered by TF-IDF
  (the abstracts themselves are not distributed);
- Neurosynth: its title plus the leading keys of its strongest LDA-50 topics.

:func:`study_texts` returns the text nimare-mnm embeds for each study of any Studyset, and
prefers a real abstract whenever the Studyset carries one (for example NiMARE's bundled
n-back/flanker studyset, whose study descriptions are abstracts).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from nimare_mnm.utils import (
    DATA_ENV,
    atomic_directory,
    file_fingerprint,
    get_cache_dir,
    get_data_dir,
)

LGR = logging.getLogger(__name__)

__all__ = [
    "CORPORA",
    "MNI_BOX",
    "NEUROQUERY_GROUP",
    "CorpusSpec",
    "annotation_term_counts",
    "as_studyset",
    "load_neuroquery",
    "load_neurosynth",
    "locate_corpus",
    "read_vocabulary",
    "study_texts",
    "study_titles",
    "term_usage",
]

#: World-coordinate bounding box (mm) of NiMARE's MNI152 2 mm template grid.
MNI_BOX = np.array([[-90.0, 90.0], [-126.0, 90.0], [-72.0, 108.0]])

# Bump when the tables written to the cache change, so stale caches are not reused.
_CACHE_FORMAT = 2

NEUROQUERY_KEYWORDS = {
    "version": "1",
    "source": ["abstract", "keywords"],
    "vocab": "neuroquery7547",
    "type": "count",
}
NEUROSYNTH_KEYWORDS = {"version": "7", "source": "abstract", "vocab": "LDA50", "type": "weight"}

_NQ = "data-neuroquery_version-1"
_NQ_FILES = {
    "coordinates": f"{_NQ}_coordinates.tsv.gz",
    "metadata": f"{_NQ}_metadata.tsv.gz",
    "abstract": f"{_NQ}_vocab-neuroquery7547_source-abstract_type-count_features.npz",
    "keywords": f"{_NQ}_vocab-neuroquery7547_source-keywords_type-count_features.npz",
    "vocabulary": f"{_NQ}_vocab-neuroquery7547_vocabulary.txt",
}
_NS = "data-neurosynth_version-7"
_NS_FILES = {
    "coordinates": f"{_NS}_coordinates.tsv.gz",
    "metadata": f"{_NS}_metadata.tsv.gz",
    "topics": f"{_NS}_vocab-LDA50_source-abstract_type-weight_features.npz",
    "vocabulary": f"{_NS}_vocab-LDA50_vocabulary.txt",
    "keys": f"{_NS}_vocab-LDA50_keys.tsv",
}


# --------------------------------------------------------------------------- file location
#: Prefix of NeuroQuery's abstract term annotation in the Studysets of
#: :func:`load_neuroquery` (NiMARE's label names).
NEUROQUERY_GROUP = "neuroquery7547_abstract_count__"


def _fetch_neuroquery(**kwargs):
    from nimare.extract import fetch_neuroquery

    return fetch_neuroquery(**kwargs)


def _fetch_neurosynth(**kwargs):
    from nimare.extract import fetch_neurosynth

    with warnings.catch_warnings():
        # NiMARE warns that the Neurosynth files are a frozen snapshot: that is what we want.
        warnings.simplefilter("ignore", FutureWarning)
        return fetch_neurosynth(**kwargs)


@dataclass(frozen=True)
class CorpusSpec:
    """What distinguishes one coordinate database: its files and how to read them.

    Parameters
    ----------
    name : :obj:`str`
        NiMARE's folder name (``"neuroquery"``).
    label : :obj:`str`
        Name in messages (``"NeuroQuery v1"``).
    fetcher : :obj:`str`
        Name of the NiMARE fetcher (a function of :mod:`nimare.extract`).
    keywords : :obj:`dict`
        The fetcher's keywords that select the files.
    files : :obj:`dict`
        Key -> file name of every file needed.
    texts : callable
        ``texts(files, metadata)``: one text per study (metadata order).
    space : callable
        ``space(coords, metadata)``: the template space of each peak.
    annotation : :obj:`tuple`
        ``(group, matrix file key)``: the annotation attached, NiMARE's label group.
    """

    name: str
    label: str
    fetcher: str
    keywords: dict
    files: dict
    texts: Callable
    space: Callable
    annotation: tuple[str, str]

    def fetch(self, **kwargs):
        """Call the NiMARE fetcher (looked up when called, so tests can replace it)."""
        return globals()[f"_{self.fetcher}"](**kwargs)


def _neuroquery_texts(files: dict, metadata: pd.DataFrame) -> list[str]:
    abstract = _read_npz(files["abstract"], len(metadata))
    keywords = _read_npz(files["keywords"], len(metadata))
    vocabulary = read_vocabulary(files["vocabulary"])
    return neuroquery_texts(list(metadata["title"]), abstract, keywords, vocabulary)


def _neurosynth_texts(files: dict, metadata: pd.DataFrame) -> list[str]:
    weights = _read_npz(files["topics"], len(metadata))
    keys = _topic_keys(files["keys"], n_words=8)
    return neurosynth_texts(list(metadata["title"]), weights, keys)


def _neurosynth_space(coords: pd.DataFrame, metadata: pd.DataFrame) -> np.ndarray:
    space = metadata.set_index(metadata["id"].astype(str))["space"]
    return space.reindex(coords["id"].astype(str)).fillna("UNKNOWN").to_numpy()


#: The corpora nimare-mnm reads; a new one is one entry (plus its text builder).
CORPORA = {
    "neuroquery": CorpusSpec(
        name="neuroquery",
        label="NeuroQuery v1",
        fetcher="fetch_neuroquery",
        keywords=NEUROQUERY_KEYWORDS,
        files=_NQ_FILES,
        texts=lambda files, metadata: _neuroquery_texts(files, metadata),
        # NeuroQuery's peaks are reported in MNI space
        space=lambda coords, metadata: "MNI",
        annotation=("neuroquery7547_abstract_count", "abstract"),
    ),
    "neurosynth": CorpusSpec(
        name="neurosynth",
        label="Neurosynth v7",
        fetcher="fetch_neurosynth",
        keywords=NEUROSYNTH_KEYWORDS,
        files=_NS_FILES,
        texts=lambda files, metadata: _neurosynth_texts(files, metadata),
        space=lambda coords, metadata: _neurosynth_space(coords, metadata),
        annotation=("LDA50_abstract_weight", "topics"),
    ),
}


def locate_corpus(
    spec: CorpusSpec,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    files: dict[str, str] | None = None,
) -> dict[str, str]:
    """Find (or fetch) a corpus's files; see :func:`load_neuroquery` for where it looks.

    Parameters
    ----------
    spec : :class:`CorpusSpec`
        The corpus (e.g. ``CORPORA["neuroquery"]``).
    data_dir : path-like, optional
        Folder holding the corpus folder.
    download : :obj:`bool`, default=True
        Let NiMARE's fetcher download missing files.
    files : :obj:`dict`, optional
        Only these of the corpus's files (key -> file name).

    Returns
    -------
    :obj:`dict`
        Key -> absolute path.
    """
    return _locate(
        spec.name, spec.label, spec.fetch, spec.keywords, files or spec.files, data_dir, download
    )


def _load_corpus(
    spec: CorpusSpec,
    data_dir,
    *,
    return_type: str,
    annotations: bool,
    cache_dir,
    download: bool,
    target: str,
):
    """Load one corpus as a Studyset (the body of :func:`load_neuroquery` and the like)."""
    _check_return_type(return_type)
    files = locate_corpus(spec, data_dir, download)
    metadata = _read_table(files["metadata"], f"{spec.label} metadata")

    def build():
        texts = spec.texts(files, metadata)
        coords = _read_table(files["coordinates"], f"{spec.label} coordinates")
        coords["space"] = spec.space(coords, metadata)
        return _tables(metadata, coords, texts, target)

    studyset = _from_cache(spec.name, files, cache_dir, target, build)
    if annotations:
        group, key = spec.annotation
        vocabulary = read_vocabulary(files["vocabulary"])
        labels = np.asarray([f"{group}__{t}" for t in vocabulary])
        matrix = _read_npz(files[key], len(metadata))
        studyset = _annotate(studyset, group, labels, matrix, metadata["id"])
    return _finish(studyset, return_type)


def _searched_dirs(name: str, data_dir: str | None) -> list[str]:
    from nimare.extract.utils import get_data_dirs

    return [os.path.join(os.path.expanduser(d), name) for d in get_data_dirs(data_dir)]


def _locate(
    name: str,
    label: str,
    fetcher: Callable,
    keywords: dict,
    required: dict[str, str],
    data_dir: str | os.PathLike | None,
    download: bool,
) -> dict[str, str]:
    """Find the files of one database, fetching them through NiMARE when allowed.

    Returns a mapping from the keys of ``required`` to absolute file paths. Raises
    FileNotFoundError naming the missing files, the folders searched and how to get them.
    """
    data_dir = get_data_dir(data_dir)
    searched = _searched_dirs(name, data_dir)
    for folder in searched:
        if all(os.path.isfile(os.path.join(folder, f)) for f in required.values()):
            # Ask NiMARE too, so that the keywords we document are the ones that work; it
            # skips every file that is already there.
            manifest = _quiet_fetch(fetcher, os.path.dirname(folder), keywords)
            _check_manifest(manifest, folder, required)
            return {key: os.path.join(folder, f) for key, f in required.items()}

    target = searched[0]
    created_dir = not os.path.isdir(target)
    before = set(os.listdir(target)) if not created_dir else set()
    error: BaseException | None = None
    if download:
        try:
            LGR.info(f"Downloading the {label} files into {target} with NiMARE's fetcher.")
            _quiet_fetch(fetcher, os.path.dirname(target), keywords)
        except Exception as exc:  # network errors come in many types (URLError, OSError...)
            error = exc
        else:
            if all(os.path.isfile(os.path.join(target, f)) for f in required.values()):
                return {key: os.path.join(target, f) for key, f in required.items()}
        _remove_partial_downloads(target, before, created_dir)

    missing = [f for f in required.values() if not os.path.isfile(os.path.join(target, f))]
    kw = ", ".join(f"{k}={v!r}" for k, v in keywords.items())
    fetch_name = getattr(fetcher, "__name__", "").lstrip("_")
    fetch_name = fetch_name if fetch_name.startswith("fetch_") else f"fetch_{name}"
    msg = (
        f"The {label} files needed by nimare-mnm were not found. Missing from {target}: "
        f"{', '.join(missing)}. Folders searched: {', '.join(searched)}. "
        f"Get them with nimare.extract.{fetch_name}(data_dir=DIR, {kw}) on a machine with "
        f"internet access, then pass data_dir=DIR or set {DATA_ENV}=DIR."
    )
    if error is not None:
        msg += f" (Download attempt failed: {type(error).__name__}: {error})"
    raise FileNotFoundError(msg) from error


def _quiet_fetch(fetcher: Callable, data_dir: str, keywords: dict):
    # NiMARE prints a line per file ("Downloading ...", "File exists ... Skipping.").
    with contextlib.redirect_stdout(io.StringIO()):
        return fetcher(data_dir=data_dir, return_type="files", **keywords)


def _check_manifest(manifest: list[dict], folder: str, required: dict[str, str]) -> None:
    listed = set()
    for database in manifest:
        listed.update(os.path.basename(database[k]) for k in ("coordinates", "metadata"))
        for feature in database["features"]:
            listed.update(os.path.basename(v) for v in feature.values())
    unlisted = set(required.values()) - listed
    if unlisted:  # pragma: no cover - guards against a change of NiMARE's manifest
        raise RuntimeError(
            f"NiMARE's fetcher no longer lists {sorted(unlisted)} for the keywords nimare-mnm "
            f"uses (folder {folder}); please report this to nimare-mnm."
        )


def _remove_partial_downloads(target: str, before: set[str], created_dir: bool) -> None:
    """Remove what a failed download left behind, so no partial corpus is ever read."""
    if not os.path.isdir(target):
        return
    for fname in set(os.listdir(target)) - before:
        with contextlib.suppress(OSError):
            os.remove(os.path.join(target, fname))
    if created_dir:
        with contextlib.suppress(OSError):
            os.rmdir(target)


# --------------------------------------------------------------------------- table building
def _read_table(path: str, what: str) -> pd.DataFrame:
    try:
        return pd.read_table(path)
    except Exception as exc:
        raise ValueError(f"Could not read the {what} file {path}: {exc}") from exc


def _read_npz(path: str, n_rows: int) -> sp.csr_matrix:
    try:
        matrix = sp.load_npz(path).tocsr()
    except Exception as exc:
        raise ValueError(f"Could not read the feature file {path}: {exc}") from exc
    if matrix.shape[0] != n_rows:
        raise ValueError(
            f"The feature file {path} has {matrix.shape[0]} rows but the metadata file has "
            f"{n_rows} studies; the files come from different releases."
        )
    return matrix


def read_vocabulary(path: str) -> np.ndarray:
    """Terms of a NiMARE vocabulary file, one per line."""
    with open(path, encoding="utf-8") as fh:
        return np.asarray([line.rstrip("\n") for line in fh if line.strip()], dtype=object)


def _coordinates_table(coords: pd.DataFrame, ids: pd.Index, target: str) -> pd.DataFrame:
    """Coordinates in ``target`` space, inside the MNI box, keyed by analysis id."""
    from nimare.utils import _transform_coordinates_to_space

    coords = coords[["id", "x", "y", "z", "space"]].copy()
    coords["id"] = coords["id"].astype(str)
    unknown = ~coords["id"].isin(ids)
    if unknown.any():
        LGR.info(f"Ignoring {int(unknown.sum())} peaks of studies absent from the metadata.")
        coords = coords[~unknown]
    coords = _transform_coordinates_to_space(coords.reset_index(drop=True), target)
    xyz = coords[["x", "y", "z"]].to_numpy(dtype=float)
    inside = np.all((xyz >= MNI_BOX[:, 0]) & (xyz <= MNI_BOX[:, 1]), axis=1)
    if not inside.all():
        LGR.info(
            f"Dropping {int((~inside).sum())} peaks outside the MNI152 box "
            f"({coords.loc[~inside, 'id'].nunique()} studies affected)."
        )
    coords = coords[inside]
    # Label the (already converted) peaks with a space NiMARE recognises, so the Studyset
    # neither re-transforms them nor warns about an unknown space.
    coords["space"] = "TAL" if "tal" in target.lower() else "MNI"
    coords["id"] = coords["id"] + "-1"
    return coords.reset_index(drop=True)


def _tfidf_order(counts: sp.csr_matrix) -> tuple[sp.csr_matrix, np.ndarray]:
    """TF-IDF (smooth idf, as scikit-learn) of a count matrix, and the idf vector."""
    n = counts.shape[0]
    df = np.bincount(counts.indices, minlength=counts.shape[1])
    idf = np.log((1.0 + n) / (1.0 + df)) + 1.0
    tfidf = counts.multiply(idf[None, :]).tocsr()
    tfidf.sort_indices()
    return tfidf, idf


def _ordered_terms(matrix: sp.csr_matrix, row: int, vocabulary: np.ndarray) -> list[str]:
    start, stop = matrix.indptr[row], matrix.indptr[row + 1]
    cols, vals = matrix.indices[start:stop], matrix.data[start:stop]
    order = np.lexsort((cols, -vals))  # highest weight first, ties by vocabulary order
    return [vocabulary[c] for c in cols[order]]


def neuroquery_texts(
    titles: list[str],
    abstract_counts: sp.csr_matrix,
    keyword_counts: sp.csr_matrix,
    vocabulary: np.ndarray,
) -> list[str]:
    """Build each NeuroQuery study's text from its title, keywords and abstract terms.

    Parameters
    ----------
    titles : :obj:`list` of :obj:`str`
        Article titles, one per study.
    abstract_counts, keyword_counts : :obj:`scipy.sparse.csr_matrix`
        Term counts (studies x vocabulary) in the abstract and in the keywords.
    vocabulary : :obj:`numpy.ndarray`
        The terms, one per column.

    Returns
    -------
    :obj:`list` of :obj:`str`
        ``"<title>. Keywords: k1; k2. Abstract terms: t1, t2, ..."``, the keywords and the
        abstract terms each ordered by TF-IDF over the corpus (highest first). Parts that a
        study lacks are left out.
    """
    abstract_tfidf, _ = _tfidf_order(abstract_counts)
    keyword_tfidf, _ = _tfidf_order(keyword_counts)
    texts = []
    for row, title in enumerate(titles):
        title = " ".join(str(title).split()) if isinstance(title, str) else ""
        parts = [title.rstrip(".")] if title else []
        keywords = _ordered_terms(keyword_tfidf, row, vocabulary)
        if keywords:
            parts.append("Keywords: " + "; ".join(keywords))
        terms = _ordered_terms(abstract_tfidf, row, vocabulary)
        if terms:
            parts.append("Abstract terms: " + ", ".join(terms))
        texts.append(". ".join(parts) + "." if parts else "")
    return texts


def _topic_keys(path: str, n_words: int) -> list[str]:
    keys = pd.read_table(path, header=None, names=["topic", "weight", "words"])
    return [" ".join(str(words).split()[:n_words]) for words in keys["words"]]


def neurosynth_texts(
    titles: list[str],
    topic_weights: sp.csr_matrix,
    topic_keys: list[str],
    n_topics: int = 3,
    min_weight: float = 0.05,
) -> list[str]:
    """Build each Neurosynth study's text from its title and its strongest LDA topics.

    Parameters
    ----------
    titles : :obj:`list` of :obj:`str`
        Article titles, one per study.
    topic_weights : :obj:`scipy.sparse.csr_matrix`
        LDA topic weights (studies x topics) from the abstracts.
    topic_keys : :obj:`list` of :obj:`str`
        The leading words of each topic.
    n_topics : :obj:`int`, default=3
        Number of strongest topics to describe.
    min_weight : :obj:`float`, default=0.05
        Topics weighing less than this in a study are not mentioned.

    Returns
    -------
    :obj:`list` of :obj:`str`
        ``"<title>. Topics: <keys of topic 1>; <keys of topic 2>; ..."``.
    """
    weights = topic_weights.toarray()
    texts = []
    for row, title in enumerate(titles):
        title = " ".join(str(title).split()) if isinstance(title, str) else ""
        order = np.argsort(-weights[row], kind="stable")[:n_topics]
        topics = [topic_keys[t] for t in order if weights[row, t] >= min_weight]
        parts = [title.rstrip(".")] if title else []
        if topics:
            parts.append("Topics: " + "; ".join(topics))
        texts.append(". ".join(parts) + "." if parts else "")
    return texts


def _na(values: pd.Series) -> list:
    # NiMARE's converter writes "n/a" for missing metadata; keep the same convention.
    return ["n/a" if pd.isna(v) else v for v in values]


#: A cache build's temporary folder untouched for this long was left by a killed process.
STALE_BUILD_SECONDS = 3600


def _remove_stale_builds(folder: Path, label: str) -> None:
    """Delete temporary build folders of ``label`` left behind by interrupted processes.

    A build writes into ``.<label>-<key>.tmp-*`` and renames it when complete; a process
    killed meanwhile (``kill -9``, a power cut) leaves the folder. One that has not changed
    for :data:`STALE_BUILD_SECONDS` is not another process's build in progress.
    """
    import time

    now = time.time()
    for tmp in folder.glob(f".{label}-*.tmp-*"):
        try:
            stale = tmp.is_dir() and now - tmp.stat().st_mtime > STALE_BUILD_SECONDS
        except OSError:  # removed by another process meanwhile
            continue
        if stale:
            LGR.info(f"Removing {tmp}, left by an interrupted cache build.")
            shutil.rmtree(tmp, ignore_errors=True)


def _write_tables(tables: dict[str, pd.DataFrame], directory: Path, name: str, sid: str):
    """Write NiMARE parquet studyset tables atomically into ``directory``."""
    import json

    with atomic_directory(directory, replace=False) as tmp:
        for table, frame in tables.items():
            frame.to_parquet(tmp / f"{table}.parquet", index=False)
        manifest = {
            "format": "nimare-studyset-parquet",
            "version": 1,
            "id": sid,
            "name": name,
            "tables": {t: f"{t}.parquet" for t in tables},
            "annotations": [],
        }
        (tmp / "studyset.json").write_text(json.dumps(manifest, indent=2))


def _tables(
    metadata: pd.DataFrame, coords: pd.DataFrame, texts: list[str], target: str
) -> dict[str, pd.DataFrame]:
    ids = metadata["id"].astype(str)
    aid = ids + "-1"
    meta_cols = {
        c: _na(metadata[c]) if c in metadata else ["n/a"] * len(ids)
        for c in ("authors", "journal", "year")
    }
    title = _na(metadata["title"])
    return {
        "studies": pd.DataFrame(
            {
                "study_id": ids,
                "name": title,
                "description": [None] * len(ids),
                "authors": meta_cols["authors"],
                "publication": meta_cols["journal"],
            }
        ),
        "analyses": pd.DataFrame(
            {"id": aid, "study_id": ids, "contrast_id": "1", "name": ["1"] * len(ids)}
        ),
        "coordinates": _coordinates_table(coords, pd.Index(ids), target),
        "metadata": pd.DataFrame(
            {"id": aid, "study_id": ids, "contrast_id": "1", **meta_cols, "title": title}
        ),
        "texts": pd.DataFrame({"id": aid, "study_id": ids, "contrast_id": "1", "text": texts}),
    }


def _annotate(studyset, name: str, labels: np.ndarray, matrix: sp.csr_matrix, ids: pd.Series):
    """Attach a study x label matrix as one annotation, without densifying it."""
    from nimare.nimads import AnnotationSet, ColumnStore, Studyset
    from nimare.studyset.store import replace

    store = studyset.store
    row_of = pd.Series(np.arange(store.n_analyses), index=store.analysis_full_key.astype(str))
    rows = row_of.reindex((ids.astype(str) + "-1").to_numpy()).to_numpy()
    if np.isnan(rows.astype(float)).any():  # pragma: no cover - tables are built together
        raise RuntimeError("Annotation rows do not match the studyset's analyses.")
    perm = sp.csr_matrix(
        (np.ones(len(rows)), (rows.astype(np.int64), np.arange(len(rows)))),
        shape=(store.n_analyses, len(rows)),
    )
    csc = (perm @ matrix).tocsc()
    csc.sort_indices()
    columns = ColumnStore(store.n_analyses)
    for j, label in enumerate(labels):
        lo, hi = csc.indptr[j], csc.indptr[j + 1]
        columns.add_sparse(str(label), csc.indices[lo:hi], csc.data[lo:hi].astype(float))
    ann = AnnotationSet(
        id=name, name=name, columns=columns, note_key_types={str(x): "number" for x in labels}
    )
    new = replace(store, annotations={**store.annotations, name: ann})
    return Studyset._wrap(studyset.view.__class__(new, context=studyset.view.context))


def _from_cache(
    label: str,
    files: dict[str, str],
    cache_dir,
    target: str,
    build: Callable[[], dict[str, pd.DataFrame]],
):
    from nimare.nimads import Studyset

    key = file_fingerprint(list(files.values()), _CACHE_FORMAT, target)
    directory = get_cache_dir(cache_dir) / f"{label}-{key}"
    _remove_stale_builds(directory.parent, label)
    if not (directory / "studyset.json").is_file():
        LGR.info(f"Building the {label} studyset tables (cached in {directory}).")
        _write_tables(build(), directory, name=label, sid=label)
    try:
        return Studyset.from_parquet(directory, target=target)
    except Exception as exc:
        raise ValueError(
            f"The cached {label} studyset in {directory} could not be read ({exc}); "
            "delete that folder to rebuild it."
        ) from exc


def _finish(studyset, return_type: str):
    if return_type == "studyset":
        return studyset
    from nimare.dataset import _quiet_dataset_deprecation

    with _quiet_dataset_deprecation():
        return studyset.to_dataset()


def _check_return_type(return_type: str) -> None:
    if return_type not in ("studyset", "dataset"):
        raise ValueError(
            f"return_type must be 'studyset' or 'dataset' (legacy), got {return_type!r}."
        )


# --------------------------------------------------------------------------- public loaders
def load_neuroquery(
    data_dir: str | os.PathLike | None = None,
    *,
    return_type: str = "studyset",
    annotations: bool = True,
    cache_dir: str | os.PathLike | None = None,
    download: bool = True,
    target: str = "mni152_2mm",
):
    """Load NeuroQuery v1 as a NiMARE Studyset with a text for every study.

    Parameters
    ----------
    data_dir : :obj:`str` or :obj:`os.PathLike`, optional
        Folder holding (or receiving) NiMARE's ``neuroquery/`` database folder. Defaults to
        the ``NIMARE_MNM_DATA`` environment variable, then NiMARE's own defaults
        (``NIMARE_SHARED_DATA``, ``NIMARE_DATA``, ``~/.nimare``).
    return_type : {"studyset", "dataset"}, default="studyset"
        ``"dataset"`` returns a legacy :class:`nimare.dataset.Dataset` (slow, deprecated by
        NiMARE).
    annotations : :obj:`bool`, default=True
        Attach the abstract term counts (7,547 NeuroQuery terms) as an annotation, with
        NiMARE's label names (``neuroquery7547_abstract_count__<term>``).
    cache_dir : :obj:`str` or :obj:`os.PathLike`, optional
        Writable folder for the parquet tables built on first load (see
        :func:`nimare_mnm.utils.get_cache_dir`). The data directory is never written to.
    download : :obj:`bool`, default=True
        If the files are absent, let NiMARE's fetcher download them (needs internet access).
    target : :obj:`str`, default="mni152_2mm"
        Template space of the returned coordinates.

    Returns
    -------
    :class:`nimare.nimads.Studyset` or :class:`nimare.dataset.Dataset`
        13,459 studies, one analysis each, with peaks inside the MNI152 box, the title in
        the metadata and nimare-mnm's text in the analysis text field ``"text"``.

    Raises
    ------
    FileNotFoundError
        If the files are missing (naming them, the folders searched and how to get them).
    """
    return _load_corpus(
        CORPORA["neuroquery"],
        data_dir,
        return_type=return_type,
        annotations=annotations,
        cache_dir=cache_dir,
        download=download,
        target=target,
    )


def load_neurosynth(
    data_dir: str | os.PathLike | None = None,
    *,
    return_type: str = "studyset",
    annotations: bool = True,
    cache_dir: str | os.PathLike | None = None,
    download: bool = True,
    target: str = "mni152_2mm",
):
    """Load Neurosynth v7 as a NiMARE Studyset with a text for every study.

    Parameters
    ----------
    data_dir : :obj:`str` or :obj:`os.PathLike`, optional
        Folder holding (or receiving) NiMARE's ``neurosynth/`` database folder. Defaults to
        the ``NIMARE_MNM_DATA`` environment variable, then NiMARE's own defaults.
    return_type : {"studyset", "dataset"}, default="studyset"
        ``"dataset"`` returns a legacy :class:`nimare.dataset.Dataset`.
    annotations : :obj:`bool`, default=True
        Attach the LDA-50 topic weights as an annotation, with NiMARE's label names
        (``LDA50_abstract_weight__<topic>``).
    cache_dir : :obj:`str` or :obj:`os.PathLike`, optional
        Writable folder for the parquet tables built on first load.
    download : :obj:`bool`, default=True
        If the files are absent, let NiMARE's fetcher download them (needs internet access).
    target : :obj:`str`, default="mni152_2mm"
        Template space of the returned coordinates; Talairach peaks are converted with
        NiMARE's ``tal2mni`` exactly as NiMARE's own conversion does.

    Returns
    -------
    :class:`nimare.nimads.Studyset` or :class:`nimare.dataset.Dataset`
        14,371 studies with title, authors, year and journal metadata, peaks inside the
        MNI152 box and nimare-mnm's text in the analysis text field ``"text"``.

    Raises
    ------
    FileNotFoundError
        If the files are missing (naming them, the folders searched and how to get them).
    """
    return _load_corpus(
        CORPORA["neurosynth"],
        data_dir,
        return_type=return_type,
        annotations=annotations,
        cache_dir=cache_dir,
        download=download,
        target=target,
    )


# --------------------------------------------------------------------------- texts per study
def as_studyset(data):
    """Return ``data`` as a :class:`nimare.nimads.Studyset`.

    Parameters
    ----------
    data : :class:`nimare.nimads.Studyset`, :class:`nimare.dataset.Dataset`, dict or path
        A Studyset, a legacy Dataset, or anything :class:`nimare.nimads.Studyset` accepts
        (a NIMADS dict or JSON path, a parquet studyset folder).

    Returns
    -------
    :class:`nimare.nimads.Studyset`
    """
    from nimare.dataset import Dataset
    from nimare.nimads import Studyset

    if isinstance(data, Studyset):
        return data
    if isinstance(data, Dataset):
        return Studyset.from_dataset(data)
    if isinstance(data, (str, os.PathLike, dict)):
        if isinstance(data, (str, os.PathLike)) and not os.path.exists(data):
            raise FileNotFoundError(f"No studyset at {os.fspath(data)}.")
        return Studyset(data)
    raise TypeError(
        "Expected a nimare.nimads.Studyset, a nimare.dataset.Dataset or a path to a studyset, "
        f"got {type(data).__name__}."
    )


def _first_text_per_study(store, field: str) -> dict[int, str]:
    if store.texts is None or field not in store.texts:
        return {}
    rows, values = store.texts.entries(field)
    out: dict[int, str] = {}
    for row, value in zip(rows, values):
        study = int(store.study_idx[int(row)])
        if study not in out and isinstance(value, str) and value.strip():
            out[study] = value
    return out


def study_texts(studyset, drop_missing: bool = False) -> pd.Series:
    """Return the text nimare-mnm embeds for each study, preferring real abstracts.

    Parameters
    ----------
    studyset : :class:`nimare.nimads.Studyset` or :class:`nimare.dataset.Dataset`
        The studies.
    drop_missing : :obj:`bool`, default=False
        Leave out (and log) studies without any text instead of raising.

    Returns
    -------
    :class:`pandas.Series`
        Indexed by study id (``studyset.study_ids`` order). For each study, in order of
        preference: its title followed by its abstract (the ``"abstract"`` text field, or
        the NIMADS study description), else the ``"text"`` field that
        :func:`load_neuroquery` / :func:`load_neurosynth` build, else its title.

    Raises
    ------
    ValueError
        If some studies have no text at all (the first few are named), unless
        ``drop_missing``; or if no study has one.
    """
    studyset = as_studyset(studyset)
    store = studyset.store
    view_studies = np.unique(store.study_idx[studyset.view.index])
    names = store.study_attrs.get("name") if "name" in store.study_attrs else None
    descriptions = (
        store.study_attrs.get("description") if "description" in store.study_attrs else None
    )
    abstracts = _first_text_per_study(store, "abstract")
    built = _first_text_per_study(store, "text")

    def clean(value) -> str:
        return " ".join(value.split()) if isinstance(value, str) else ""

    out, missing = {}, []
    for s in view_studies:
        sid = str(store.study_key[s])
        title = clean(names[s]) if names is not None else ""
        title = "" if title == "n/a" else title
        abstract = clean(abstracts.get(int(s))) or (
            clean(descriptions[s]) if descriptions is not None else ""
        )
        if abstract:
            text = f"{title.rstrip('.')}. {abstract}" if title else abstract
        else:
            text = clean(built.get(int(s))) or title
        if not text:
            missing.append(sid)
        out[sid] = text
    if missing and (not drop_missing or len(missing) == len(out)):
        raise ValueError(
            f"{len(missing)} studies have no title, abstract or text (e.g. {missing[:5]}); "
            "nimare-mnm needs a text for every study."
        )
    if missing:
        LGR.info("Leaving out %d studies without any text (e.g. %s).", len(missing), missing[:3])
        out = {sid: text for sid, text in out.items() if text}
    series = pd.Series(out, name="text")
    series.index.name = "study_id"
    return series


def study_titles(studyset) -> pd.Series | None:
    """Study titles by study id, when the studyset has them (None otherwise)."""
    try:
        meta = studyset.get_metadata(field="title")
    except Exception:  # noqa: BLE001 - titles are optional
        return None
    ids = np.asarray(studyset.study_ids).astype(str)
    if len(meta) != len(ids):
        return None
    titles = pd.Series(list(meta), index=ids)
    return titles[~titles.index.duplicated()]


def term_usage(
    studyset, group: str, threshold: float = 0.001, terms: list[str] | None = None
) -> tuple[list[str], pd.Index, sp.csr_matrix]:
    """Which studies use which terms of an annotation group.

    Parameters
    ----------
    studyset : :class:`nimare.nimads.Studyset`
        Studies with annotations (e.g. :data:`NEUROQUERY_GROUP` from :func:`load_neuroquery`).
    group : :obj:`str`
        Label prefix of the group (NiMARE's ``<group>__<term>`` label names).
    threshold : :obj:`float`, default=0.001
        A study uses a term when an annotation value of one of its analyses is at least this
        (NiMARE's ``frequency_threshold``).
    terms : :obj:`list` of :obj:`str`, optional
        Only these terms.

    Returns
    -------
    terms : :obj:`list` of :obj:`str`
        The group's terms, in label order.
    study_ids : :class:`pandas.Index`
        The studies (rows), in the studyset's order.
    usage : :class:`scipy.sparse.csr_matrix`
        Boolean (n_studies, n_terms): study uses term.

    Raises
    ------
    ValueError
        No label of the group.
    """
    group = group.rstrip("_") + "__"
    labels = list(studyset.get_labels()) if len(studyset.annotations) else []
    columns = [lb for lb in labels if lb.startswith(group)]
    if terms is not None:
        wanted = set(terms)
        columns = [lb for lb in columns if lb[len(group) :] in wanted]
    if not columns and terms is None:
        raise ValueError(
            f"The studyset has no annotation labels starting with {group!r}; "
            f"available groups: {sorted({lb.split('__')[0] for lb in labels})}."
        )
    block = studyset.label_block()
    col = {lb: j for j, lb in enumerate(block.labels)}
    used = sp.csr_matrix(block.values.tocsc()[:, [col[lb] for lb in columns]] >= threshold)
    # Analyses -> studies: a study uses a term when any of its analyses does.
    analysis_study = np.asarray(studyset.study_ids).astype(str)
    study_ids = pd.Index(pd.unique(analysis_study))
    to_study = sp.csr_matrix(
        (
            np.ones(len(analysis_study)),
            (study_ids.get_indexer(analysis_study), np.arange(len(analysis_study))),
        ),
        shape=(len(study_ids), len(analysis_study)),
    )
    usage = sp.csr_matrix((to_study @ used.astype(np.float64)) > 0)
    return [lb[len(group) :] for lb in columns], study_ids, usage


def annotation_term_counts(
    studyset, group: str, threshold: float = 0.001, terms: list[str] | None = None
) -> tuple[list[str], np.ndarray]:
    """Terms of an annotation group and the number of studies using each.

    Parameters
    ----------
    studyset, group, threshold, terms
        As for :func:`term_usage`.

    Returns
    -------
    terms : :obj:`list` of :obj:`str`
        The terms used by at least one study, in label order.
    counts : :class:`numpy.ndarray`
        int64 number of studies using each.

    Raises
    ------
    ValueError
        No label of the group, or no term used by any study.
    """
    found, _, usage = term_usage(studyset, group, threshold, terms)
    counts = np.asarray(usage.sum(axis=0)).ravel().astype(np.int64)
    keep = counts > 0
    if not keep.any():
        raise ValueError("No term of the vocabulary is used by any study.")
    return [str(t) for t in np.asarray(found, dtype=object)[keep]], counts[keep]
