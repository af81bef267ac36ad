"""The evaluation harness (benchmark v2): every row through its public estimator, scored alike.

:func:`run_benchmark` loads NeuroQuery, splits it with
:func:`~nimare_mnm.evaluation.protocol_split` and trains every row of :data:`ROWS` on the
training part:

- floors (:mod:`nimare_mnm.experiments.floors`): the average training map, a TF-IDF
  nearest-neighbour mean map and ridge regression from frozen MiniLM embeddings, each with its
  one setting chosen on a validation split carved from the training part;
- NeuroQuery (:class:`~nimare_mnm.experiments.baselines.NeuroQueryBaseline`), fitted once in a
  worker process beside the others;
- the neural rows, each trained with ``MNMEncoder(preset=...).fit(training studies)`` for every
  seed and scored only through the encoder's public methods: text -> brain ranking with
  :meth:`~nimare_mnm.MNMEncoder.similarity` between :meth:`~nimare_mnm.MNMEncoder.embed_studies`
  points, maps with :meth:`~nimare_mnm.MNMEncoder.predict_maps` (decoder head, or the
  neighbour mean whose size the encoder chose on validation), :meth:`~nimare_mnm.MNMEncoder.
  retrieve`'s ranking through :meth:`~nimare_mnm.MNMEncoder.retrieval_scores`, and term
  generality through :class:`~nimare_mnm.MNMDecoder`.

The decoding benchmark (:mod:`nimare_mnm.experiments.decoding`) runs on the same split with the
nimare-mnm encoders of every seed. Paired bootstrap intervals (resampling test studies) compare
nimare-mnm with the best other row, and the verdicts in ``quality.md`` follow from them.

``split="validation"`` scores the validation split instead (models trained on the rest of the
training part): use it while developing; the test split is scored once, at the end.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

LGR = logging.getLogger(__name__)

__all__ = [
    "FLOORS",
    "NEUROQUERY",
    "NEURAL_ROWS",
    "ROWS",
    "MODEL",
    "LADDERS",
    "BenchmarkConfig",
    "run_benchmark",
    "write_reports",
    "verdicts",
]

#: The query-blind and simple floors, in table order.
FLOORS = ("average training map", "TF-IDF nearest-neighbour mean", "ridge on frozen MiniLM")

#: NeuroQuery's own model (one fit: deterministic and the slowest row).
NEUROQUERY = "NeuroQuery"

#: Neural rows: an MNMEncoder preset and the encoder parameters that differ from its defaults.
NEURAL_ROWS: dict[str, dict] = {
    "CLIP (NeuroConText-style)": {"preset": "clip", "params": {}},
    "MERU": {"preset": "meru", "params": {}},
    # The MNM repository's optimisation settings (the rest are in the "mnm" preset).
    "MNM (reimplemented)": {
        "preset": "mnm",
        "params": {"batch_size": 4096, "learning_rate": 1e-4, "epochs": 200},
    },
    "nimare-mnm": {"preset": "nimare-mnm", "params": {}},
    # The default before the text hierarchy: v2 without the level term, brain radius <= 4.
    "nimare-mnm v2.1": {"preset": "nimare-mnm-v2.1", "params": {}},
    # Model v2 as first shipped: the default with the level term and no bound on the brain
    # radius.
    "nimare-mnm v2": {"preset": "nimare-mnm-v2", "params": {}},
    # The model before model v2: the text head reads MiniLM only.
    "nimare-mnm v1": {"preset": "nimare-mnm-v1", "params": {}},
    # Hierarchy candidate: term maps, term cones, a floor on the text radius and a bound on
    # the brain radius.
    "nimare-mnm + term cones": {"preset": "nimare-mnm-cones", "params": {}},
}

#: Every row, in table order.
ROWS = (*FLOORS, NEUROQUERY, *NEURAL_ROWS)

#: The row the verdicts are about.
MODEL = "nimare-mnm"

#: General-to-specific query ladders, fixed in code before any result was seen: a model whose
#: distance to the origin orders generality puts every step farther out than the one before.
LADDERS = (
    ("memory", "episodic memory", "autobiographical memory retrieval"),
    ("memory", "working memory", "spatial working memory", "spatial working memory load"),
    ("emotion", "fear", "fear conditioning", "fear extinction recall"),
    ("language", "semantic processing", "semantic categorization of written words"),
    ("vision", "face perception", "recognition of famous faces"),
    ("movement", "finger tapping", "sequential finger tapping with the right hand"),
    ("reward", "monetary reward", "anticipation of monetary reward"),
    ("attention", "visual attention", "covert shifts of visuospatial attention"),
)

#: Metrics kept per test study, for the paired bootstrap.
PER_STUDY = ("text_to_brain_recall@10", "map_r")


@dataclass
class BenchmarkConfig:
    """Settings of :func:`run_benchmark`.

    Parameters
    ----------
    data_dir : :obj:`str`, optional
        Folder with neuroquery/ and atlases/ (argument, ``NIMARE_MNM_DATA``, NiMARE's default).
    split : {"test", "validation"}, default="test"
        Which studies are scored. "validation" trains on the training part minus a validation
        split and scores that split: for development.
    rows : :obj:`list` of :obj:`str`, optional
        Names from :data:`ROWS` (default: all).
    seeds : :obj:`tuple` of :obj:`int`, default=(0, 1, 2)
        Seeds of every neural row.
    n_studies : :obj:`int`, optional
        A seeded random subset of the corpus (quick checks); None uses every study.
    epochs : :obj:`int`, optional
        Cap on the neural rows' epochs (quick checks); None keeps each row's own.
    device : :obj:`str`, default="auto"
        Torch device.
    neuroquery_components : :obj:`int`, default=300
        Rank of NeuroQuery's NMF smoothing (NeuroQuery's value).
    neuroquery_alphas : :obj:`tuple` of :obj:`float`, default=(1.0, 10.0, 100.0)
        Ridge penalties of NeuroQuery: those of the ``neuroquery`` package's training example.
        Its default grid of nine penalties costs about 2.5 times as long (85 minutes on two
        cores instead of 35), over the benchmark's hour.
    correlation_decoder_terms : :obj:`int`, default=100
        Content terms (a seeded sample) for NiMARE's CorrelationDecoder, whose fit costs about
        1-5 s per term; 0 skips it.
    retrieve_k : :obj:`int`, default=50
        Studies retrieved per query for the retrieval map figure (``retrieve``'s default).
    n_bootstrap : :obj:`int`, default=1000
        Resamples of the paired bootstrap.
    model : :obj:`str`, default="nimare-mnm"
        The neural row that the paired comparisons, the decoding benchmark and the verdicts
        are about (a candidate can be compared with every other row this way).
    """

    data_dir: str | None = None
    split: str = "test"
    rows: list = field(default_factory=lambda: list(ROWS))
    seeds: tuple = (0, 1, 2)
    n_studies: int | None = None
    epochs: int | None = None
    device: str = "auto"
    neuroquery_components: int = 300
    neuroquery_alphas: tuple = (1.0, 10.0, 100.0)
    correlation_decoder_terms: int = 100
    retrieve_k: int = 50
    n_bootstrap: int = 1000
    model: str = MODEL

    def __post_init__(self) -> None:
        if self.split not in ("test", "validation"):
            raise ValueError(f"split must be 'test' or 'validation', got {self.split!r}.")
        unknown = set(self.rows) - set(ROWS)
        if unknown:
            raise ValueError(f"Unknown rows {sorted(unknown)}; choose from {list(ROWS)}.")
        if not self.seeds:
            raise ValueError("At least one seed is needed.")
        if self.model not in NEURAL_ROWS:
            raise ValueError(f"model must be a neural row, one of {list(NEURAL_ROWS)}.")


# --------------------------------------------------------------------------- data
@dataclass
class _Split:
    """Everything the rows share: ids, texts, arrays, true maps, peaks and terms."""

    studyset: object
    train: object  # CorpusArrays of the training studies
    test: object  # CorpusArrays of the scored studies
    fit_rows: np.ndarray  # floors' validation split, rows of ``train``
    val_rows: np.ndarray
    true_maps: object  # sparse (n_test, n_voxels) densities
    peaks: list
    vectorizer: object
    terms: dict


def _prepare(cfg: BenchmarkConfig) -> _Split:
    from nimare_mnm.atlases import BrainLevels
    from nimare_mnm.datasets import load_neuroquery
    from nimare_mnm.densities import PeakDensity
    from nimare_mnm.evaluation import protocol_split, validation_split
    from nimare_mnm.experiments.decoding import content_terms
    from nimare_mnm.features import corpus_arrays
    from nimare_mnm.text import TextEncoder
    from nimare_mnm.vectorizer import BrainVectorizer

    studyset = load_neuroquery(cfg.data_dir)
    all_ids = np.unique(np.asarray(studyset.study_ids).astype(str))
    if cfg.n_studies is not None and cfg.n_studies < len(all_ids):
        rng = np.random.default_rng(0)
        all_ids = np.sort(rng.choice(all_ids, cfg.n_studies, replace=False))
        studyset = studyset.filter_study_ids(list(all_ids))
    train_ids, test_ids = protocol_split(all_ids)
    if cfg.split == "validation":
        train_ids, test_ids = validation_split(train_ids)
    vectorizer = BrainVectorizer(data_dir=cfg.data_dir).fit(BrainLevels(cfg.data_dir).fit())
    arrays = corpus_arrays(studyset, encoder=TextEncoder(), vectorizer=vectorizer)
    have = set(arrays.ids)
    train = arrays.subset([i for i in train_ids if i in have])
    test = arrays.subset([i for i in test_ids if i in have])
    fit_ids, val_ids = validation_split(train.ids)
    index = pd.Index(train.ids)
    test_set = studyset.filter_study_ids(list(test.ids))
    density = PeakDensity()
    sids, true_maps = density.transform(test_set)
    true_maps = true_maps[pd.Index(sids).get_indexer(test.ids)]
    return _Split(
        studyset=studyset,
        train=train,
        test=test,
        fit_rows=np.sort(index.get_indexer(fit_ids)),
        val_rows=np.sort(index.get_indexer(val_ids)),
        true_maps=true_maps,
        peaks=density.peak_voxels(test_set, test.ids),
        vectorizer=vectorizer,
        terms=content_terms(studyset, train.ids, test.ids),
    )


# --------------------------------------------------------------------------- scoring
def _map_scores(data: _Split, maps_of, chunk: int = 128) -> dict:
    """Per-study map r and peak AUC of predicted voxel maps, a chunk of studies at a time.

    ``maps_of(start, stop)`` returns the predicted (stop - start, n_voxels) maps.
    """
    from nimare_mnm.evaluation import map_correlation, peak_auc

    n = len(data.test.ids)
    r, auc = np.empty(n), np.full(n, np.nan)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        maps = maps_of(start, stop)
        r[start:stop] = map_correlation(maps, data.true_maps[start:stop])
        rows = [i for i in range(start, stop) if len(data.peaks[i])]
        if rows:
            local = np.asarray(rows) - start
            auc[rows] = peak_auc(maps[local], [data.peaks[i] for i in rows])
    return {"map_r": r, "peak_auc": auc}


def _score(similarity: np.ndarray, maps: dict) -> tuple[dict, dict]:
    """Summary metrics and per-study values of one fitted row."""
    from nimare_mnm.evaluation import recall_hits, retrieval_metrics

    summary = retrieval_metrics(similarity)
    summary["map_r"] = float(np.mean(maps["map_r"]))
    summary["peak_auc"] = float(np.nanmean(maps["peak_auc"]))
    per_study = {
        "text_to_brain_recall@10": 100.0 * recall_hits(similarity, [10])[10],
        "map_r": maps["map_r"],
    }
    return summary, per_study


def _vector_row(data: _Split, predicted: np.ndarray) -> tuple[dict, dict]:
    """Score a row that predicts brain vectors (floors, NeuroQuery)."""
    from nimare_mnm.evaluation import pairwise_correlation

    similarity = pairwise_correlation(predicted, data.test.brain)
    maps = _map_scores(data, lambda a, b: data.vectorizer.inverse_transform(predicted[a:b]))
    return _score(similarity, maps)


def _retrieval_map_r(data: _Split, encoder, k: int) -> float:
    """Mean map r of the mean map of the ``k`` studies ``retrieve`` ranks first per query."""
    scores = encoder.retrieval_scores(list(data.test.texts), cache=True)
    train_rows = pd.Index(data.train.ids).get_indexer(scores.index)
    if (train_rows < 0).any():
        raise RuntimeError("The encoder ranks studies outside the benchmark's training part.")
    from nimare_mnm.utils import neighbour_mean

    values = scores.to_numpy().T  # (n_test, n_train)
    mean = neighbour_mean(values, data.train.brain[train_rows], k)
    maps = _map_scores(data, lambda a, b: data.vectorizer.inverse_transform(mean[a:b]))
    return float(np.mean(maps["map_r"]))


# --------------------------------------------------------------------------- rows
def _floor_rows(data: _Split, names) -> dict:
    from nimare_mnm.experiments.floors import AverageMap, EmbeddingRidge, TfidfNeighbours

    train, fit, val = data.train, data.fit_rows, data.val_rows
    out = {}
    for name in names:
        t0 = time.perf_counter()
        if name == FLOORS[0]:
            predicted = AverageMap().fit(train.brain).predict(len(data.test.ids))
            setting = {}
        elif name == FLOORS[1]:
            texts = np.asarray(train.texts, dtype=object)
            model = TfidfNeighbours().fit(
                texts[fit], train.brain[fit], texts[val], train.brain[val]
            )
            predicted = model.predict(list(data.test.texts))
            setting = {"k": model.k_, "validation_r": model.validation_r_}
        else:
            model = EmbeddingRidge().fit(
                train.text[fit], train.brain[fit], train.text[val], train.brain[val]
            )
            predicted = model.predict(data.test.text)
            setting = {"alpha": model.alpha_, "validation_r": model.validation_r_}
        summary, per_study = _vector_row(data, predicted)
        summary["fit_seconds"] = time.perf_counter() - t0
        out[name] = {"runs": [summary], "per_study": per_study, "setting": setting}
        LGR.info("%s: %s", name, json.dumps(summary))
    return out


def _fit_neuroquery(train_texts, train_brain, test_texts, data_dir, n_components, alphas):
    """Fit the NeuroQuery baseline with one BLAS thread; return test vectors and fit time."""
    from threadpoolctl import threadpool_limits

    from nimare_mnm.experiments.baselines import NeuroQueryBaseline

    with threadpool_limits(1):
        t0 = time.perf_counter()
        model = NeuroQueryBaseline(data_dir=data_dir, n_components=n_components, alphas=alphas)
        model.fit(train_texts, train_brain)
        return model.predict(test_texts), time.perf_counter() - t0


def _ladders(encoder) -> dict:
    """Distances to the origin along :data:`LADDERS`; how many move outward monotonically."""
    rows = []
    for ladder in LADDERS:
        radius = encoder.radius(list(ladder))
        rows.append(
            {
                "queries": list(ladder),
                "radius": [round(float(x), 4) for x in radius],
                "outward": bool(np.all(np.diff(radius) > 0)),
            }
        )
    return {"n_outward": sum(r["outward"] for r in rows), "n_ladders": len(rows), "ladders": rows}


def _neural_run(data: _Split, cfg: BenchmarkConfig, name: str, seed: int) -> dict:
    """Train one neural row with one seed and score it through the encoder's public methods."""
    from scipy.stats import spearmanr

    from nimare_mnm import MNMDecoder, MNMEncoder

    spec = NEURAL_ROWS[name]
    params = dict(spec["params"])
    if cfg.epochs is not None:
        params["epochs"] = min(params.get("epochs", cfg.epochs), cfg.epochs)
    train_set = data.studyset.filter_study_ids(list(data.train.ids))
    test_set = data.studyset.filter_study_ids(list(data.test.ids))
    t0 = time.perf_counter()
    encoder = MNMEncoder(
        preset=spec["preset"], seed=seed, data_dir=cfg.data_dir, device=cfg.device, **params
    ).fit(train_set)
    fit_seconds = time.perf_counter() - t0
    ids, text_points, brain_points = encoder.embed_studies(test_set)
    order = pd.Index(ids).get_indexer(data.test.ids)
    if (order < 0).any():
        raise RuntimeError("embed_studies left out test studies that have a brain map.")
    similarity = encoder.similarity(text_points[order], brain_points[order])
    texts = list(data.test.texts)
    maps = _map_scores(data, lambda a, b: encoder.predict_maps(texts[a:b], cache=True))
    summary, per_study = _score(similarity, maps)
    summary["retrieve_map_r"] = _retrieval_map_r(data, encoder, cfg.retrieve_k)
    summary["fit_seconds"] = fit_seconds
    summary["torch_threads"] = _torch_threads()
    summary["best_epoch"] = encoder.training_["best_epoch"]
    summary["val_recall@10"] = encoder.training_["best_val_recall_at_10"]
    if hasattr(encoder, "n_neighbours_"):
        summary["n_neighbours"] = encoder.n_neighbours_
    decoder = None
    if encoder.model_.config.geometry == "lorentz":
        decoder = MNMDecoder(encoder=encoder, features=data.terms["terms"]).fit(train_set)
        index = pd.Index(decoder.features_).get_indexer(data.terms["terms"])
        frequency = data.terms["train_counts"]
        rho = spearmanr(decoder.term_radius_[index], np.log(frequency)).statistic
        summary["generality_rho"] = float(rho)
        ladders = _ladders(encoder)
        summary["ladders_outward"] = ladders["n_outward"]
        summary["radius"] = {
            "terms": _quantiles(decoder.term_radius_),
            "study_texts": _quantiles(_radius(encoder, text_points)),
            "brain": _quantiles(_radius(encoder, brain_points)),
        }
        summary["ladders"] = ladders["ladders"]
    LGR.info("%s seed %d: %s", name, seed, json.dumps(summary, default=str)[:2000])
    return {"summary": summary, "per_study": per_study, "decoder": decoder}


def _quantiles(values) -> dict:
    q = np.percentile(np.asarray(values, dtype=float), [5, 50, 95])
    return {"p5": float(q[0]), "median": float(q[1]), "p95": float(q[2])}


def _radius(encoder, points: np.ndarray) -> np.ndarray:
    """Hyperbolic distance of points to the origin."""
    return encoder.point_radius(points)


# --------------------------------------------------------------------------- decoding
def _decoding(data: _Split, cfg: BenchmarkConfig, decoders: list) -> dict:
    """Run the frequency-controlled decoding benchmark on the scored studies' density maps."""
    from nimare_mnm.densities import PeakDensity
    from nimare_mnm.evaluation import TermRanks, paired_bootstrap
    from nimare_mnm.experiments.decoding import (
        MeanMapDecoder,
        mnm_decoder_scores,
        nimare_correlation_scores,
        summarize_scores,
    )

    terms, positive = data.terms["terms"], data.terms["test_positive"]
    n_test = len(data.test.ids)
    density = PeakDensity()
    scores, costs = {}, {}
    t0 = time.perf_counter()
    mean_map = MeanMapDecoder().fit(data.train.brain, data.terms["train_positive"])
    scores["plain correlation decoder"] = mean_map.scores(data.test.brain)
    costs["plain correlation decoder"] = {"fit_and_score_seconds": time.perf_counter() - t0}
    frequency = data.terms["train_counts"].astype(np.float64)
    scores["frequency prior"] = np.broadcast_to(frequency, positive.shape).copy()
    active = np.diff(data.true_maps.tocsr().indptr).astype(np.float64)
    scores["term-blind control (active voxels)"] = np.repeat(active[:, None], len(terms), 1)
    mnm_runs = []
    if decoders:
        imgs = (density.to_img(data.true_maps[i].toarray().ravel()) for i in range(n_test))
        per_seed = [[] for _ in decoders]
        times = []
        for img in imgs:
            for j, decoder in enumerate(decoders):
                row, ms = mnm_decoder_scores(decoder, [img], terms)
                per_seed[j].append(row[0])
                times.append(ms)
        mnm_runs = [np.stack(rows) for rows in per_seed]
        costs["MNMDecoder"] = {"transform_median_ms": float(np.median(times))}

    correlation = None
    if cfg.correlation_decoder_terms:
        rng = np.random.default_rng(0)
        n_sub = min(cfg.correlation_decoder_terms, len(terms))
        subset = np.sort(rng.choice(len(terms), n_sub, replace=False))
        check = [(i, density.to_img(data.true_maps[i].toarray().ravel())) for i in range(3)]
        LGR.info("Fitting NiMARE's CorrelationDecoder on %d content terms.", n_sub)
        result = nimare_correlation_scores(
            data.studyset,
            data.train.ids,
            [terms[j] for j in subset],
            data.true_maps,
            density.mask_img,
            check_imgs=check,
        )
        correlation = {"subset": subset, **result}
        costs["NiMARE CorrelationDecoder"] = {
            "n_terms": int(n_sub),
            "fit_seconds": result["fit_seconds"],
            "transform_median_ms": result["transform_median_ms"],
            "max_check_difference": result["max_check_difference"],
        }

    rows = {name: summarize_scores(sc, positive) for name, sc in scores.items()}
    if mnm_runs:
        runs = [summarize_scores(sc, positive) for sc in mnm_runs]
        rows["MNMDecoder"] = _aggregate(runs)
    prior = rows["frequency prior"]["per_term_auc"]
    if abs(prior - 0.5) > 1e-9:
        raise RuntimeError(f"The frequency prior's per-term AUC is {prior}, not 0.5.")

    comparisons = {}
    if mnm_runs:
        model_ranks = [TermRanks(sc, positive) for sc in mnm_runs]
        others = [n for n in scores if n != "frequency prior"]
        best = max(others, key=lambda n: rows[n]["per_term_auc"])
        best_ranks = TermRanks(scores[best], positive)
        comparisons["per_term_auc"] = {
            "against": best,
            **paired_bootstrap(
                lambda idx: (
                    _mean_auc(model_ranks, idx, n_test) - _mean_auc([best_ranks], idx, n_test)
                ),
                n_test,
                cfg.n_bootstrap,
            ),
        }
        if correlation is not None:
            sub = correlation["subset"]
            sub_pos = positive[:, sub]
            corr_ranks = TermRanks(correlation["scores"], sub_pos)
            model_sub = [TermRanks(sc[:, sub], sub_pos) for sc in mnm_runs]
            rows["NiMARE CorrelationDecoder (term subset)"] = summarize_scores(
                correlation["scores"], sub_pos
            )
            rows["MNMDecoder (term subset)"] = _aggregate(
                [summarize_scores(sc[:, sub], sub_pos) for sc in mnm_runs]
            )
            comparisons["per_term_auc_subset"] = {
                "against": "NiMARE CorrelationDecoder (term subset)",
                **paired_bootstrap(
                    lambda idx: (
                        _mean_auc(model_sub, idx, n_test) - _mean_auc([corr_ranks], idx, n_test)
                    ),
                    n_test,
                    cfg.n_bootstrap,
                ),
            }
    return {
        "rows": rows,
        "comparisons": comparisons,
        "costs": costs,
        "n_terms": len(terms),
        "n_test_studies": n_test,
        "terms": [
            {"term": t, "n_training_studies": int(c), "n_test_studies": int(p)}
            for t, c, p in zip(terms, data.terms["train_counts"], positive.sum(axis=0))
        ],
    }


def _mean_auc(ranks: list, idx: np.ndarray, n: int) -> float:
    """Mean over score matrices (seeds) of the mean per-term AUC on resampled studies."""
    weights = np.bincount(idx, minlength=n).astype(np.float64)
    return float(np.mean([np.nanmean(r.auc(weights)) for r in ranks]))


# --------------------------------------------------------------------------- aggregation
def _aggregate(runs: list[dict]) -> dict:
    """Mean, standard deviation and per-seed values of every numeric figure of the runs."""
    out = {"n_seeds": len(runs)}
    for key, value in runs[0].items():
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
            continue
        values = np.array([float(r[key]) for r in runs])
        out[key] = float(values.mean())
        out[f"{key}_sd"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        out[f"{key}_seeds"] = [float(v) for v in values]
    return out


def _comparisons(results: dict, pairwise: dict, model: str = MODEL) -> dict:
    """``model`` minus the best other row, per figure: that row's entry of ``pairwise``."""
    out = {}
    for metric, against in pairwise.items():
        if not against:
            continue
        best = max(against, key=lambda n: float(np.mean(results[n]["per_study"][metric])))
        out[metric] = {"against": best, **against[best]}
    return out


def _pairwise(results: dict, n_test: int, n_boot: int, model: str = MODEL) -> dict:
    """Paired bootstrap of ``model`` minus every other row, per figure and row."""
    if model not in results:
        return {}
    out = {}
    for metric in PER_STUDY:
        a = results[model]["per_study"][metric]
        out[metric] = {
            name: _mean_difference(a, r["per_study"][metric], n_test, n_boot)
            for name, r in results.items()
            if name != model and metric in r["per_study"]
        }
    return out


def _mean_difference(a: np.ndarray, b: np.ndarray, n: int, n_boot: int) -> dict:
    """Paired bootstrap of the difference of means of per-study values."""
    from nimare_mnm.evaluation import paired_bootstrap

    return paired_bootstrap(lambda idx: a[idx].mean() - b[idx].mean(), n, n_boot)


def _shipped_model_disjoint(test_ids) -> bool | None:
    """Return whether the shipped model's stored training ids miss every scored study."""
    from nimare_mnm.encoder import PRETRAINED_DIR

    path = PRETRAINED_DIR / "arrays.safetensors"
    if not path.exists():
        return None
    from safetensors.numpy import load_file

    shipped = load_file(str(path))["studies.ids"].astype(str)
    return bool(not np.isin(np.asarray(test_ids).astype(str), shipped).any())


# --------------------------------------------------------------------------- the run
def run_benchmark(config: BenchmarkConfig | None = None, out_dir=None) -> dict:
    """Train and score every row; write the reports when ``out_dir`` is given.

    Parameters
    ----------
    config : :class:`BenchmarkConfig`, optional
        Settings.
    out_dir : path-like, optional
        Where quality.json, quality.md, quality.png and decoding.json go (with
        ``split="validation"``: quality-validation.json/md and decoding-validation.json).

    Returns
    -------
    :obj:`dict`
        ``rows`` (per row: mean, sd and per-seed figures, settings), ``comparisons`` (paired
        bootstrap intervals), ``decoding`` and the run's metadata.
    """
    import torch

    from nimare_mnm.experiments.provenance import provenance
    from nimare_mnm.utils import ids_digest

    cfg = config or BenchmarkConfig()
    t_start = time.perf_counter()
    origin = provenance()  # the code that runs: taken before anything else happens
    data = _prepare(cfg)
    n_test = len(data.test.ids)
    LGR.info(
        "%d training and %d %s studies; %d content terms.",
        len(data.train.ids),
        n_test,
        cfg.split,
        len(data.terms["terms"]),
    )
    # NeuroQuery (tens of minutes) fits in another process, on one core, beside the rest.
    nq_future, pool, threads = None, None, torch.get_num_threads()
    if NEUROQUERY in cfg.rows:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # A fresh interpreter, not a fork: a forked worker's allocations reuse the parent's
        # freed heap pages, and copying them on write doubled its memory (the full corpus's
        # NeuroQuery fit was killed for memory at 22 GB; alone it peaks near 8 GB).
        pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        nq_future = pool.submit(
            _fit_neuroquery,
            list(data.train.texts),
            data.train.brain,
            list(data.test.texts),
            cfg.data_dir,
            cfg.neuroquery_components,
            tuple(cfg.neuroquery_alphas),
        )
        torch.set_num_threads(max(1, threads - 1))
    results, decoders = {}, []
    try:
        results.update(_floor_rows(data, [r for r in FLOORS if r in cfg.rows]))
        for name in NEURAL_ROWS:
            if name not in cfg.rows:
                continue
            runs = []
            for seed in cfg.seeds:
                if nq_future is not None and nq_future.done():
                    torch.set_num_threads(threads)  # NeuroQuery's core is free again
                runs.append(_neural_run(data, cfg, name, seed))
            if name == cfg.model:
                decoders = [run["decoder"] for run in runs]
            per_study = {
                m: np.mean([run["per_study"][m] for run in runs], axis=0) for m in PER_STUDY
            }
            results[name] = {
                "runs": [run["summary"] for run in runs],
                "per_study": per_study,
                "setting": {"preset": NEURAL_ROWS[name]["preset"], **NEURAL_ROWS[name]["params"]},
            }
        if nq_future is not None and nq_future.done():
            torch.set_num_threads(threads)
        decoding = _decoding(data, cfg, decoders)
        if nq_future is not None:
            predicted, seconds = nq_future.result()
            summary, per_study = _vector_row(data, predicted)
            summary["fit_seconds"] = seconds
            results[NEUROQUERY] = {
                "runs": [summary],
                "per_study": per_study,
                "setting": {
                    "n_components": cfg.neuroquery_components,
                    "alphas": list(cfg.neuroquery_alphas),
                },
            }
    finally:
        torch.set_num_threads(threads)
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    rows = {}
    for name in [r for r in ROWS if r in results]:
        entry = results[name]
        rows[name] = {
            **_aggregate(entry["runs"]),
            "setting": entry["setting"],
            "ladders": entry["runs"][0].get("ladders"),
            "radius": [run.get("radius") for run in entry["runs"]]
            if "radius" in entry["runs"][0]
            else None,
        }
    pairwise = _pairwise(results, n_test, cfg.n_bootstrap, cfg.model)
    run = {
        "split": cfg.split,
        "split_rule": "protocol_split: ids sorted, default_rng(0) permutation, first 10 % "
        "test; validation carved from the training part (validation_split)",
        "n_train": len(data.train.ids),
        "n_scored": n_test,
        "scored_ids_sha256": ids_digest(data.test.ids),
        "scored_ids_disjoint_from_shipped_model": _shipped_model_disjoint(data.test.ids),
        "chance_recall@10": 100.0 * 10 / n_test,
        "rows": rows,
        "comparisons": _comparisons(results, pairwise, cfg.model),
        "pairwise": pairwise,
        "decoding": decoding,
        "settings": {k: v for k, v in asdict(cfg).items() if k != "data_dir"},
        "total_seconds": time.perf_counter() - t_start,
        **origin,
    }
    run = json.loads(json.dumps(run, default=_jsonable))
    if out_dir is not None:
        write_reports(run, out_dir)
    return run


def _jsonable(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"Cannot write {type(value).__name__} to JSON.")


# --------------------------------------------------------------------------- reports
#: Columns of the main table: (key, header, digits).
TABLE_COLUMNS = (
    ("text_to_brain_recall@5", "T→B R@5", 1),
    ("text_to_brain_recall@10", "T→B R@10", 1),
    ("text_to_brain_recall@100", "T→B R@100", 1),
    ("brain_to_text_recall@10", "B→T R@10", 1),
    ("mix_match", "mix & match", 1),
    ("map_r", "map r", 3),
    ("peak_auc", "peak AUC", 3),
    ("retrieve_map_r", "retrieve() map r", 3),
    ("generality_rho", "generality ρ", 2),
    ("ladders_outward", f"ladders out (of {len(LADDERS)})", 1),
    ("fit_seconds", "fit (s)", 0),
)

#: Targets of the model (the model v2 issue), checked on the means over seeds.
TARGETS = {
    "text_to_brain_recall@10": (">=", 20.0),
    "brain_to_text_recall@10": (">=", None),  # NeuroQuery's, from the same run
    "map_r": (">=", 0.17),
    "per_term_auc": (">=", 0.65),
    "generality_rho": ("<=", -0.4),
    # "4 of 5 ladders": the same share of this list's ladders.
    "ladders_outward": (">=", 0.8 * len(LADDERS)),
}

_LABELS = {
    "text_to_brain_recall@10": "text→brain Recall@10",
    "map_r": "map r",
    "per_term_auc": "decoding per-term AUC",
    "per_term_auc_subset": "decoding per-term AUC on NiMARE's term subset",
}


def _cell(row: dict, key: str, digits: int) -> str:
    value = row.get(key)
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    text = f"{value:.{digits}f}"
    if row.get("n_seeds", 1) > 1 and f"{key}_sd" in row:
        text += f" ± {row[f'{key}_sd']:.{digits}f}"
    return text


def _ci_sentence(metric: str, comp: dict, model: str = MODEL) -> str:
    """One verdict line, decided by the interval alone."""
    label = _LABELS.get(metric, metric)
    diff, low, high = comp["difference"], comp["low"], comp["high"]
    if low > 0:
        verdict = f"better than every other row (best other: {comp['against']})"
    elif high < 0:
        verdict = f"worse than {comp['against']}"
    else:
        verdict = f"not distinguishable from {comp['against']}"
    return (
        f"- {label}: {model} {verdict}; difference {diff:+.3f}, paired bootstrap 95 % CI "
        f"[{low:+.3f}, {high:+.3f}] ({comp['n_boot']} resamples of the scored studies)."
    )


def _difference_cell(comp: dict) -> str:
    return f"{comp['difference']:+.3f} [{comp['low']:+.3f}, {comp['high']:+.3f}]"


def _model_row(run: dict) -> str:
    """Return the row a run's comparisons are about (older runs: nimare-mnm)."""
    return run.get("settings", {}).get("model", MODEL)


def verdicts(run: dict) -> list[str]:
    """Verdict lines: comparisons from the paired intervals, targets from the seed means."""
    lines = ["## Verdicts", ""]
    comparisons = dict(run.get("comparisons", {}))
    comparisons.update(run.get("decoding", {}).get("comparisons", {}))
    for metric in ("text_to_brain_recall@10", "map_r", "per_term_auc", "per_term_auc_subset"):
        if metric in comparisons:
            lines.append(_ci_sentence(metric, comparisons[metric], _model_row(run)))
    pairwise = run.get("pairwise", {})
    if pairwise:
        names = [r for r in run["rows"] if any(r in pairwise[m] for m in pairwise)]
        lines += [
            "",
            f"Paired differences, {_model_row(run)} minus each row (95 % CI):",
            "",
            _markdown_table(
                ["row", *(_LABELS.get(m, m) for m in pairwise)],
                [
                    [name]
                    + [
                        _difference_cell(pairwise[m][name]) if name in pairwise[m] else "n/a"
                        for m in pairwise
                    ]
                    for name in names
                ],
            ),
        ]
    model = run["rows"].get(_model_row(run))
    if model is None:
        return lines
    floors = [run["rows"][f]["map_r"] for f in FLOORS if f in run["rows"]]
    decoding = run.get("decoding", {}).get("rows", {}).get("MNMDecoder", {})
    values = {**model, "per_term_auc": decoding.get("per_term_auc")}
    lines += ["", "Targets (means over seeds):", ""]
    for key, (op, threshold) in TARGETS.items():
        if key == "brain_to_text_recall@10":
            if NEUROQUERY not in run["rows"]:
                continue
            threshold = run["rows"][NEUROQUERY][key]
        value = values.get(key)
        if value is None:
            continue
        met = value >= threshold if op == ">=" else value <= threshold
        lines.append(f"- {key} {value:.3f} {op} {threshold:.3f}: {'met' if met else 'NOT met'}.")
    if floors:
        margin = model["map_r"] - max(floors)
        status = "met" if margin >= 0.03 else "NOT met"
        lines.append(f"- map r at least 0.03 above the best floor: {margin:+.3f}, {status}.")
    return lines


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def write_reports(run: dict, out_dir) -> dict[str, Path]:
    """Write quality.json/md/png and decoding.json for a :func:`run_benchmark` result.

    With ``run["split"] == "validation"`` the files are named quality-validation.* and
    decoding-validation.json, so development runs never overwrite the test figures.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    suffix = "" if run["split"] == "test" else f"-{run['split']}"
    paths = {
        "json": out / f"quality{suffix}.json",
        "md": out / f"quality{suffix}.md",
        "png": out / f"quality{suffix}.png",
        "decoding": out / f"decoding{suffix}.json",
    }
    paths["json"].write_text(json.dumps(run, indent=2) + "\n")
    provenance_keys = ("commit", "dirty", "date", "machine")
    paths["decoding"].write_text(
        json.dumps(
            {
                **run["decoding"],
                "split": run["split"],
                "scored_ids_sha256": run["scored_ids_sha256"],
                **{k: run[k] for k in provenance_keys},
            },
            indent=2,
        )
        + "\n"
    )
    rows = run["rows"]
    seeds = run["settings"]["seeds"]
    table = [
        [name, str(row.get("n_seeds", 1))] + [_cell(row, k, d) for k, _, d in TABLE_COLUMNS]
        for name, row in rows.items()
    ]
    decoding_rows = [
        [
            name,
            str(row.get("n_seeds", 1)),
            _cell(row, "per_term_auc", 3),
            _cell(row, "per_term_auc_z", 3),
            _cell(row, "own_term_auc_confounded", 3),
        ]
        for name, row in run["decoding"]["rows"].items()
    ]
    costs = run["decoding"]["costs"]
    lines = [
        f"# nimare-mnm benchmark on the NeuroQuery {run['split']} split",
        "",
        f"{run['n_train']} training studies, {run['n_scored']} scored ({run['split_rule']}). "
        f"Commit {run['commit']}{' (with uncommitted changes)' if run['dirty'] else ''}, "
        f"measured {run['date']} on {run['machine']} in {run['total_seconds'] / 60:.0f} "
        f"minutes. Neural rows: seeds {list(seeds)}, mean ± sd. Recall in %, chance "
        f"Recall@10 {run['chance_recall@10']:.2f} %.",
        "",
        _markdown_table(["row", "seeds"] + [h for _, h, _ in TABLE_COLUMNS], table),
        "",
        "T→B and B→T: for the neural rows, the encoder's similarity between a study's text "
        "point and the scored studies' brain points (text→brain only; `retrieve()` adds the "
        "study's text, which the query would match trivially here); for the floors and "
        "NeuroQuery, the correlation between the predicted map and each study's map. "
        f"retrieve() map r: the mean map of the {run['settings']['retrieve_k']} training "
        "studies `retrieve()` ranks first for each query, against the study's map. "
        "Generality ρ: Spearman of each content term's distance to the origin against its "
        "log document frequency (negative: frequent, general terms nearer the origin). "
        "Ladders: general-to-specific query ladders fixed in code "
        "(`nimare_mnm.experiments.benchmark.LADDERS`) whose distance to the origin grows "
        "at every step.",
        "",
        *verdicts(run),
        "",
        "## Decoding (brain map → terms), frequency-controlled",
        "",
        f"{run['decoding']['n_terms']} content terms (used by at most 30 % of training "
        "abstracts, by at least 5 and missing from at least 5 scored abstracts, stop-like words "
        f"out), {run['decoding']['n_test_studies']} scored studies' density maps. Per-term "
        "AUC: across studies, for each term, do the studies whose abstract uses it score "
        "higher for it? A map-blind prior scores exactly 0.5. The last column is the older "
        "per-study AUC of a study's own terms among the content terms: frequency-confounded, "
        "secondary.",
        "",
        _markdown_table(
            [
                "decoder",
                "seeds",
                "per-term AUC",
                "per-term AUC (z within study)",
                "own-term AUC (frequency-confounded)",
            ],
            decoding_rows,
        ),
        "",
        "Costs: " + json.dumps(costs),
        "",
        "## Row settings (chosen on validation where a row has one)",
        "",
        *[f"- {name}: {json.dumps(row['setting'])}" for name, row in rows.items()],
        "",
    ]
    paths["md"].write_text("\n".join(lines))
    panels = [
        ("text_to_brain_recall@10", "text→brain Recall@10 (%)"),
        ("brain_to_text_recall@10", "brain→text Recall@10 (%)"),
        ("map_r", "map Pearson r"),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(14, 0.5 * len(rows) + 1.5), sharey=True)
    names = list(rows)
    for ax, (key, label) in zip(axes, panels):
        values = [rows[n].get(key, np.nan) for n in names]
        errors = [rows[n].get(f"{key}_sd", 0.0) for n in names]
        colors = ["tab:red" if n == _model_row(run) else "tab:gray" for n in names]
        ax.barh(names, values, xerr=errors, color=colors)
        ax.set_xlabel(label)
    axes[0].invert_yaxis()
    fig.suptitle(
        f"NeuroQuery {run['split']} split ({run['n_scored']} studies), mean ± sd over seeds; "
        f"commit {str(run['commit'])[:7]}, {run['date'][:10]}"
    )
    fig.tight_layout()
    fig.savefig(paths["png"], dpi=120)
    plt.close(fig)
    return paths


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()
