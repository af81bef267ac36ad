"""Decoding comparison: NiMARE's CorrelationDecoder against MNMDecoder on the test studies.

:func:`run_decoding_comparison` decodes the peak density map of each of a seeded sample of the
protocol's test studies (:func:`~nimare_mnm.evaluation.protocol_split`) with two decoders that
share one vocabulary, the NeuroQuery abstract terms used by most training studies:

- NiMARE's :class:`~nimare.decode.continuous.CorrelationDecoder`, fitted on the training studies
  only, with NiMARE's default meta-estimator and target (MKDA chi-square association z-maps,
  Neurosynth-style): a term's score is the Pearson r between the map and the term's map;
- nimare-mnm's :class:`~nimare_mnm.decoder.MNMDecoder` with the pretrained model (trained on the
  protocol's training split only): a term's score is its similarity to the map in the shared
  hyperbolic space.

For each study and decoder, the ROC AUC of the decoder's term scores separates the study's own
abstract terms (count > 0) from the other vocabulary terms; the report gives its mean and
median over studies, the mean rank of the own terms, the fit time and the median transform
time per image, and the same AUC for a map-blind reference that ranks terms by their training
frequency. It writes ``decoding.json``.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats

LGR = logging.getLogger(__name__)

__all__ = ["ranking_auc", "own_term_rank", "run_decoding_comparison"]

#: NeuroQuery's abstract term annotation (NiMARE's feature group name).
FEATURE_GROUP = "neuroquery7547_abstract_count"

#: Why the CorrelationDecoder uses NiMARE's defaults (recorded in decoding.json).
CORRELATION_DECODER_CHOICE = (
    "NiMARE's default meta-estimator and target image (MKDAChi2, z_desc-association: each "
    "term's studies against all other training studies, Neurosynth's association test), so "
    "the baseline is the decoder NiMARE users get. Measured on a 2-core machine beside another "
    "job: NiMARE 0.22 computes the training studies' MKDA maps once (about 35 s for 12,030 "
    "studies) and then spends about 1 to 5 s per term, mostly copying that term's subset of "
    "the maps (the chi-square itself takes about 0.3 s), so 100 terms fit in a few minutes. "
    "MKDADensity per term (target z) was not faster: it recomputes each term's maps (no "
    "shared precomputation) and measures consistency rather than specificity. The training "
    "studyset carries only the vocabulary's annotation columns; NiMARE keeps the same studies "
    "(those with at least one abstract term), so the maps are the same as with all 7,547 "
    "columns (checked on two terms, largest difference 0.0), with less copying."
)


# --------------------------------------------------------------------------- metrics
def _check_scores(scores, positive) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive)
    if scores.ndim != 1 or positive.shape != scores.shape:
        raise ValueError(
            f"scores and positive must be 1D and of the same length; got shapes "
            f"{scores.shape} and {positive.shape}."
        )
    if positive.dtype != bool:
        if not np.isin(positive, (0, 1)).all():
            raise ValueError("positive must hold booleans (or 0/1).")
        positive = positive.astype(bool)
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN; replace them first (e.g. by -inf).")
    n_pos = int(positive.sum())
    if n_pos == 0 or n_pos == len(positive):
        raise ValueError(
            f"The AUC needs at least one positive and one negative term; got {n_pos} positive "
            f"of {len(positive)}."
        )
    return scores, positive


def ranking_auc(scores, positive) -> float:
    """ROC AUC of scores that should rank the positive items first.

    The probability that a random positive item scores higher than a random negative one,
    ties counting one half (the Mann-Whitney U statistic over the number of pairs).

    Parameters
    ----------
    scores : array-like of :obj:`float`
        One score per item (higher: ranked first). Infinite values are allowed, NaN is not.
    positive : array-like of :obj:`bool`
        Which items are positive (e.g. the study's own terms).

    Returns
    -------
    :obj:`float`
        In [0, 1]; 0.5 is chance, 1 ranks every positive item before every negative one.

    Raises
    ------
    ValueError
        Shapes differ, scores contain NaN, or all items (or none) are positive.
    """
    scores, positive = _check_scores(scores, positive)
    ranks = stats.rankdata(scores)  # ascending, ties averaged
    n_pos = int(positive.sum())
    n_neg = len(scores) - n_pos
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def own_term_rank(scores, positive) -> float:
    """Mean rank of the positive items when sorted by decreasing score (1 = first).

    Parameters
    ----------
    scores : array-like of :obj:`float`
        One score per item (higher: ranked first).
    positive : array-like of :obj:`bool`
        Which items are positive.

    Returns
    -------
    :obj:`float`
        Mean rank of the positive items, ties averaged.

    Raises
    ------
    ValueError
        As :func:`ranking_auc`.
    """
    scores, positive = _check_scores(scores, positive)
    return float(stats.rankdata(-scores)[positive].mean())


def _summary(aucs: np.ndarray, ranks: np.ndarray) -> dict:
    return {
        "mean_auc": round(float(np.mean(aucs)), 4),
        "median_auc": round(float(np.median(aucs)), 4),
        "std_auc": round(float(np.std(aucs)), 4),
        "mean_own_term_rank": round(float(np.mean(ranks)), 2),
    }


# --------------------------------------------------------------------------- data
def _top_terms(
    values: sp.csc_matrix, labels: np.ndarray, rows: np.ndarray, n_terms: int, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Columns of the ``n_terms`` labels used by most of the given rows, and their counts."""
    used = (values[rows] >= threshold).astype(np.int64)
    counts = np.asarray(used.sum(axis=0)).ravel()
    n_used = int((counts > 0).sum())
    if n_used < n_terms:
        raise ValueError(
            f"n_terms={n_terms} but the training studies use only {n_used} terms of "
            f"{FEATURE_GROUP!r}."
        )
    # Most frequent first; ties broken by the label, so the vocabulary is deterministic.
    order = np.lexsort((labels, -counts))[:n_terms]
    return order, counts[order]


def _correlation_training_set(studyset, values: sp.csc_matrix, rows, columns, labels):
    """Return the training studies, annotated with the vocabulary's columns only."""
    analysis_ids = np.asarray(studyset.ids).astype(str)[rows]
    frame = pd.DataFrame(
        values[:, columns][rows].toarray().astype(np.float64), columns=list(labels[columns])
    )
    frame.insert(0, "id", analysis_ids)
    study_ids = np.asarray(studyset.study_ids).astype(str)[rows]
    subset = studyset.filter_study_ids(list(study_ids))
    return subset.with_annotations_df(frame, name=FEATURE_GROUP, replace=True)


def _mnm_decoder(vocab: list[str], threshold: float, fit_set):
    """Fit the pretrained MNMDecoder on the vocabulary (refit from the studies if needed)."""
    from nimare_mnm.decoder import MNMDecoder
    from nimare_mnm.encoder import MNMEncoder

    t0 = time.perf_counter()
    decoder = MNMDecoder(features=vocab, frequency_threshold=threshold).fit()
    fit_seconds = time.perf_counter() - t0
    missing = sorted(set(vocab) - set(decoder.features_))
    how = "pretrained: the shipped model's term points, restricted to the vocabulary"
    if missing:
        LGR.info(
            "%d vocabulary terms are not in the pretrained vocabulary (%s); embedding the "
            "vocabulary from the training studies' annotations.",
            len(missing),
            ", ".join(missing[:10]),
        )
        t0 = time.perf_counter()
        decoder = MNMDecoder(
            encoder=MNMEncoder.load_pretrained(),
            feature_group=FEATURE_GROUP,
            features=vocab,
            frequency_threshold=threshold,
        ).fit(fit_set)
        fit_seconds = time.perf_counter() - t0
        how = (
            f"pretrained encoder, vocabulary embedded from the training studies' annotations "
            f"({len(missing)} terms were missing from the pretrained vocabulary)"
        )
        missing = sorted(set(vocab) - set(decoder.features_))
        if missing:
            raise RuntimeError(f"MNMDecoder could not embed the terms {missing}.")
    return decoder, fit_seconds, how


def _scores(frame: pd.DataFrame, column: str, index: list[str]) -> np.ndarray:
    values = frame[column].reindex(index).to_numpy(dtype=np.float64)
    return np.where(np.isnan(values), -np.inf, values)


# --------------------------------------------------------------------------- the run
def run_decoding_comparison(
    data_dir=None,
    out_dir=None,
    n_terms: int = 100,
    n_test_studies: int = 200,
    seed: int = 0,
    max_train_studies: int | None = None,
    frequency_threshold: float = 0.001,
) -> dict:
    """Compare NiMARE's CorrelationDecoder and MNMDecoder on the test studies' maps.

    Parameters
    ----------
    data_dir : path-like, optional
        Folder with ``neuroquery/`` (argument, ``NIMARE_MNM_DATA``, NiMARE's default).
    out_dir : path-like, optional
        Where ``decoding.json`` goes; nothing is written without it.
    n_terms : :obj:`int`, default=100
        Vocabulary size: the NeuroQuery abstract terms used by most training studies.
    n_test_studies : :obj:`int`, default=200
        Test studies decoded: a seeded sample of the test studies with a peak inside the brain
        mask and at least one, but not every, vocabulary term in their abstract.
    seed : :obj:`int`, default=0
        Seed of the test sample (and of the training subsample below). The test split itself
        is always the protocol's.
    max_train_studies : :obj:`int`, optional
        Fit the CorrelationDecoder, and pick the vocabulary, on a seeded subset of this many
        training studies (quick checks); None uses every training study.
    frequency_threshold : :obj:`float`, default=0.001
        A study uses a term when its abstract count is at least this (NiMARE's default).

    Returns
    -------
    :obj:`dict`
        ``decoders`` (per decoder: ``mean_auc``, ``median_auc``, ``std_auc``,
        ``mean_own_term_rank``, ``fit_seconds``, ``transform_median_ms``, ``settings``), the
        map-blind ``frequency_prior`` reference, a ``paired`` comparison, the vocabulary, split
        sizes, ``seed``, ``commit``, ``total_seconds`` and ``per_study`` records.

    Raises
    ------
    ValueError
        Invalid settings, or too few training terms or eligible test studies for them.
    """
    from nimare.decode.continuous import CorrelationDecoder
    from nimare.meta.cbma.mkda import MKDAChi2

    from nimare_mnm.benchmark import _commit
    from nimare_mnm.brain import PeakDensity
    from nimare_mnm.datasets import load_neuroquery
    from nimare_mnm.decoder import NEUROQUERY_GROUP
    from nimare_mnm.encoder import _ids_digest
    from nimare_mnm.evaluation import protocol_split

    for name, value, low in (("n_terms", n_terms, 2), ("n_test_studies", n_test_studies, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")
    if max_train_studies is not None and (
        isinstance(max_train_studies, bool)
        or not isinstance(max_train_studies, (int, np.integer))
        or max_train_studies < 2
    ):
        raise ValueError(
            f"max_train_studies must be None or an integer >= 2, got {max_train_studies!r}."
        )
    if not np.isfinite(frequency_threshold) or frequency_threshold <= 0:
        raise ValueError(f"frequency_threshold must be > 0, got {frequency_threshold!r}.")

    t_start = time.perf_counter()
    studyset = load_neuroquery(data_dir)
    study_of_row = np.asarray(studyset.study_ids).astype(str)
    if len(np.unique(study_of_row)) != len(study_of_row):
        raise ValueError("Expected one analysis per study (NeuroQuery's layout).")
    block = studyset.label_block()
    labels = np.asarray([str(lb) for lb in block.labels])
    in_group = np.flatnonzero(np.char.startswith(labels.astype(str), NEUROQUERY_GROUP))
    if not len(in_group):
        raise ValueError(f"The studyset has no {FEATURE_GROUP!r} annotation.")
    values = block.values.tocsc()
    row_of = pd.Index(study_of_row)

    train_ids, test_ids = protocol_split(study_of_row)
    train_rows = row_of.get_indexer(train_ids)
    # NiMARE drops studies without any annotation value: keep the same ones explicitly.
    any_term = np.diff(values[:, in_group].tocsr().indptr) > 0
    fit_rows = np.sort(train_rows[any_term[train_rows]])
    if max_train_studies is not None and max_train_studies < len(fit_rows):
        rng_train = np.random.default_rng(seed + 1)
        fit_rows = np.sort(rng_train.choice(fit_rows, max_train_studies, replace=False))
    columns, counts = _top_terms(
        values[:, in_group], labels[in_group], fit_rows, n_terms, frequency_threshold
    )
    columns = in_group[columns]
    vocab = [lb[len(NEUROQUERY_GROUP) :] for lb in labels[columns]]
    LGR.info("Vocabulary: %d terms, from %r to %r.", n_terms, vocab[0], vocab[-1])

    # Test studies: at least one own term and one other term, and a non-empty map.
    test_rows = np.sort(row_of.get_indexer(test_ids))
    own = (values[test_rows][:, columns] >= frequency_threshold).toarray()
    n_own = own.sum(axis=1)
    candidates = test_rows[(n_own > 0) & (n_own < n_terms)]
    density = PeakDensity()
    map_ids, maps = density.transform(studyset.filter_study_ids(list(study_of_row[candidates])))
    nonempty = np.diff(maps.tocsr().indptr) > 0
    eligible = np.flatnonzero(nonempty)
    if len(eligible) < n_test_studies:
        raise ValueError(
            f"n_test_studies={n_test_studies} but only {len(eligible)} test studies have a "
            f"peak in the brain mask and between 1 and {n_terms - 1} of the {n_terms} "
            "vocabulary terms."
        )
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(eligible, n_test_studies, replace=False))
    chosen_ids = np.asarray(map_ids[chosen]).astype(str)
    maps = maps.tocsr()[chosen]
    positives = values[row_of.get_indexer(chosen_ids)][:, columns] >= frequency_threshold
    positives = positives.toarray()
    imgs = [density.to_img(maps[i].toarray().ravel()) for i in range(n_test_studies)]

    # NiMARE's CorrelationDecoder, on the training studies only.
    LGR.info("Fitting NiMARE's CorrelationDecoder on %d training studies.", len(fit_rows))
    fit_set = _correlation_training_set(studyset, values, fit_rows, columns, labels)
    corr = CorrelationDecoder(
        feature_group=FEATURE_GROUP,
        features=vocab,
        frequency_threshold=frequency_threshold,
        meta_estimator=MKDAChi2(),
        target_image="z_desc-association",
        n_cores=1,
    )
    t0 = time.perf_counter()
    corr.fit(fit_set)
    corr_fit_seconds = time.perf_counter() - t0
    corr_index = [NEUROQUERY_GROUP + t for t in vocab]
    unmapped = sorted(set(corr_index) - set(corr.results_.maps))
    if unmapped:
        raise ValueError(
            f"The CorrelationDecoder made no map for {len(unmapped)} terms ({unmapped[:5]}): "
            "MKDAChi2 needs studies with and without each term; use more training studies."
        )

    LGR.info("Fitting MNMDecoder.")
    mnm, mnm_fit_seconds, mnm_how = _mnm_decoder(vocab, frequency_threshold, fit_set)
    pretrained_ids = np.asarray(mnm.encoder_.study_ids_).astype(str)

    # Decode every test map with both decoders.
    scores = {"CorrelationDecoder": [], "MNMDecoder": []}
    times = {"CorrelationDecoder": [], "MNMDecoder": []}
    n_nan = {"CorrelationDecoder": 0, "MNMDecoder": 0}
    decoders = (
        ("CorrelationDecoder", corr, "r", corr_index),
        ("MNMDecoder", mnm, "score", vocab),
    )
    for img in imgs:
        for name, decoder, column, index in decoders:
            t0 = time.perf_counter()
            out = decoder.transform(img)
            times[name].append(time.perf_counter() - t0)
            s = _scores(out, column, index)
            n_nan[name] += int(np.isneginf(s).sum())
            scores[name].append(s)

    frequency = counts.astype(np.float64)
    all_scores = {k: np.stack(v) for k, v in scores.items()}
    all_scores["frequency_prior"] = np.broadcast_to(frequency, positives.shape)
    aucs, ranks = {}, {}
    for name, sc in all_scores.items():
        aucs[name] = np.array([ranking_auc(s, p) for s, p in zip(sc, positives)])
        ranks[name] = np.array([own_term_rank(s, p) for s, p in zip(sc, positives)])

    settings = {
        "CorrelationDecoder": {
            "class": "nimare.decode.continuous.CorrelationDecoder",
            "meta_estimator": "nimare.meta.cbma.mkda.MKDAChi2 (defaults: MKDAKernel r=10 mm)",
            "target_image": "z_desc-association",
            "feature_group": FEATURE_GROUP,
            "frequency_threshold": frequency_threshold,
            "n_cores": 1,
            "n_training_studies": int(len(fit_rows)),
            "score": "Pearson r between the test map and the term's map",
            "why": CORRELATION_DECODER_CHOICE,
            "transform_note": "most of the transform time is nilearn's NiftiMasker.transform, "
            "which runs gc.collect() twice per image (about 0.24 s each once NiMARE is "
            "imported: 430,000 live Python objects)",
        },
        "MNMDecoder": {
            "class": "nimare_mnm.MNMDecoder",
            "model": mnm_how,
            "score": "similarity between the map's brain point and the term's text point in "
            "the shared space (whole-brain map)",
            "fit_note": "fit loads the shipped model and selects the vocabulary's term points; "
            "training the model (offline, on the protocol's training split) is not counted",
        },
    }
    fit_seconds = {"CorrelationDecoder": corr_fit_seconds, "MNMDecoder": mnm_fit_seconds}
    decoders = {}
    for name in ("CorrelationDecoder", "MNMDecoder"):
        decoders[name] = {
            **_summary(aucs[name], ranks[name]),
            "fit_seconds": round(fit_seconds[name], 2),
            "transform_median_ms": round(1000 * float(np.median(times[name])), 1),
            "n_missing_scores": n_nan[name],
            "settings": settings[name],
        }
    diff = aucs["MNMDecoder"] - aucs["CorrelationDecoder"]
    wilcoxon_p = float(stats.wilcoxon(diff).pvalue) if np.any(diff != 0) else 1.0
    run = {
        "task": "rank the vocabulary for each test study's peak density map (Gaussian, FWHM "
        "9 mm); positives: the study's own abstract terms in the vocabulary (count > 0)",
        "n_terms": int(n_terms),
        "n_test_studies": int(n_test_studies),
        "seed": int(seed),
        "vocabulary_source": f"the {n_terms} NeuroQuery abstract terms ({FEATURE_GROUP}) used "
        "by most training studies, ties broken alphabetically",
        "decoders": decoders,
        "frequency_prior": {
            **_summary(aucs["frequency_prior"], ranks["frequency_prior"]),
            "note": "map-blind reference: every map gets the terms ranked by their number of "
            "training studies",
        },
        "paired": {
            "mnm_minus_correlation_mean_auc": round(float(diff.mean()), 4),
            "mnm_better_fraction": round(float((diff > 0).mean()), 4),
            "wilcoxon_p": wilcoxon_p,
        },
        "mean_own_terms_per_study": round(float(positives.sum(axis=1).mean()), 2),
        "split": "protocol_split: ids sorted, default_rng(0) permutation, first 10 % test",
        "n_train": int(len(train_ids)),
        "n_test": int(len(test_ids)),
        "n_train_used": int(len(fit_rows)),
        "n_test_eligible": int(len(eligible)),
        "test_ids_sha256": _ids_digest(chosen_ids),
        "test_ids_disjoint_from_pretrained_model": bool(
            not np.isin(chosen_ids, pretrained_ids).any()
        ),
        "vocabulary": [{"term": t, "n_training_studies": int(c)} for t, c in zip(vocab, counts)],
        "commit": _commit(),
        "machine": f"{platform.machine()}, python {platform.python_version()}",
        "total_seconds": round(time.perf_counter() - t_start, 1),
        "per_study": [
            {
                "id": sid,
                "n_own_terms": int(p.sum()),
                "auc_correlation": round(float(a), 4),
                "auc_mnm": round(float(b), 4),
            }
            for sid, p, a, b in zip(
                chosen_ids, positives, aucs["CorrelationDecoder"], aucs["MNMDecoder"]
            )
        ],
    }
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "decoding.json").write_text(json.dumps(run, indent=2) + "\n")
    return run
