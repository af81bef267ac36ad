"""The evaluation harness: every model on the protocol's split, scored the same way.

:func:`run_benchmark` loads NeuroQuery, splits it with
:func:`~nimare_mnm.evaluation.protocol_split`, trains every model of :data:`MODELS` on the
training part (model selection on a validation split carved from it), and scores them once on
the test studies with the metrics of :mod:`nimare_mnm.evaluation`. Texts, text embeddings
(all-MiniLM-L6-v2, disk-cached) and brain targets (peak densities, Gaussian FWHM 9 mm) are
the same for every model. A model without a decoder head predicts a map as the mean of its
10 nearest training studies' maps, so every row has every column.

It writes ``quality.json`` (one record per model), ``quality.md`` (the same as a table) and
``quality.png`` (a bar chart) in the output folder.
"""

from __future__ import annotations

import json
import logging
import platform
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from nimare_mnm.encoder import N_NEIGHBOURS, to_density

LGR = logging.getLogger(__name__)

__all__ = ["MODELS", "BenchmarkConfig", "run_benchmark", "write_reports"]

#: Models of the comparison: a preset of :data:`nimare_mnm.losses.PRESETS` with loss-weight
#: overrides, or the NeuroQuery baseline.
MODELS: dict[str, dict] = {
    "NeuroQuery": {"baseline": "neuroquery"},
    "CLIP (NeuroConText-style)": {"preset": "clip"},
    "MERU": {"preset": "meru"},
    "MNM (published)": {"preset": "mnm"},
    "nimare-mnm": {"preset": "nimare-mnm"},
    "nimare-mnm without levels": {"preset": "nimare-mnm", "loss": {"w_entail_levels": 0.0}},
    "nimare-mnm without entailment": {
        "preset": "nimare-mnm",
        "loss": {"w_entail_text_brain": 0.0},
    },
    "nimare-mnm without decoder": {"preset": "nimare-mnm", "decoder": False},
}

#: Ridge penalties of the NeuroQuery baseline: those of the ``neuroquery`` package's training
#: example (its default nine penalties take about 2.5 times longer).
NEUROQUERY_ALPHAS = (1.0, 10.0, 100.0)


@dataclass
class BenchmarkConfig:
    """Settings of :func:`run_benchmark`.

    Parameters
    ----------
    data_dir : :obj:`str`, optional
        Folder with neuroquery/ and atlases/ (argument, ``NIMARE_MNM_DATA``, NiMARE's default).
    models : :obj:`list` of :obj:`str`, optional
        Names from :data:`MODELS` (default: all).
    n_studies : :obj:`int`, optional
        Use a seeded random subset of the corpus (for quick checks); None uses every study.
    epochs, patience, batch_size : :obj:`int`
        Training settings shared by the neural models.
    seed : :obj:`int`, default=0
        Seed of the models (the test split always uses the protocol's seed 0).
    device : :obj:`str`, default="auto"
        Torch device.
    neuroquery_components : :obj:`int`, default=300
        Rank of the NeuroQuery baseline's NMF smoothing (NeuroQuery's value; smaller for
        quick checks on a few hundred studies).
    """

    data_dir: str | None = None
    models: list = field(default_factory=lambda: list(MODELS))
    n_studies: int | None = None
    epochs: int = 15
    patience: int = 4
    batch_size: int = 512
    seed: int = 0
    device: str = "auto"
    neuroquery_components: int = 300


def _commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            timeout=10,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _peak_voxels(studyset, ids) -> list[np.ndarray]:
    """Mask-voxel indices of each study's peaks (nearest voxel, inside the mask)."""
    from nimare_mnm.brain import PeakDensity, study_coordinates

    density = PeakDensity()
    sids, index, xyz = study_coordinates(studyset)
    ijk, inside = density._peak_voxels(xyz)
    mask = density._mask_bool()
    flat = np.full(mask.shape, -1, dtype=np.int64)
    flat[mask] = np.arange(mask.sum())
    voxel = np.full(len(xyz), -1, dtype=np.int64)
    voxel[inside] = flat[tuple(ijk[inside].T)]
    position = pd.Index(ids).get_indexer(sids)
    out = [[] for _ in ids]
    for study, vox in zip(position[index], voxel):
        if study >= 0 and vox >= 0:
            out[study].append(vox)
    return [np.unique(np.asarray(v, dtype=np.int64)) for v in out]


def _score_maps(vectorizer, predicted, true_maps, peaks, chunk: int = 128) -> dict:
    """Map r and peak AUC of predicted brain vectors, a chunk of studies at a time."""
    from nimare_mnm.evaluation import map_correlation, peak_auc

    rs, aucs = [], []
    for start in range(0, len(predicted), chunk):
        maps = vectorizer.inverse_transform(predicted[start : start + chunk])
        rs.append(map_correlation(maps, true_maps[start : start + chunk]))
        rows = list(peaks[start : start + chunk])
        keep = np.array([len(p) > 0 for p in rows])
        if keep.any():
            aucs.append(peak_auc(maps[keep], [p for p in rows if len(p)]))
    return {
        "map_r": float(np.mean(np.concatenate(rs))),
        "peak_auc": float(np.mean(np.concatenate(aucs))) if aucs else float("nan"),
    }


def _term_table(studyset, train_ids) -> tuple[list[str], np.ndarray]:
    """NeuroQuery terms used by the training studies, and their study counts."""
    from nimare_mnm.decoder import NEUROQUERY_GROUP

    train = studyset.filter_study_ids(list(train_ids))
    block = train.label_block()
    values = block.values.tocsc()
    labels = [str(lb) for lb in block.labels]
    counts = np.diff(values.indptr)
    terms = [lb[len(NEUROQUERY_GROUP) :] for lb in labels if lb.startswith(NEUROQUERY_GROUP)]
    counts = np.asarray(
        [c for lb, c in zip(labels, counts) if lb.startswith(NEUROQUERY_GROUP)], dtype=np.int64
    )
    keep = counts > 0
    return list(np.asarray(terms)[keep]), counts[keep]


def run_benchmark(config: BenchmarkConfig | None = None, out_dir=None) -> dict:
    """Train and score every model; write the reports when ``out_dir`` is given.

    Parameters
    ----------
    config : :class:`BenchmarkConfig`, optional
        Settings.
    out_dir : path-like, optional
        Where quality.json, quality.md and quality.png go.

    Returns
    -------
    :obj:`dict`
        ``records`` (one dict per model) and the run's metadata.
    """
    from nimare_mnm.brain import BrainLevels, BrainVectorizer, PeakDensity
    from nimare_mnm.datasets import load_neuroquery, query_views
    from nimare_mnm.encoder import PRETRAINED_DIR, _ids_digest
    from nimare_mnm.evaluation import (
        generality_spearman,
        protocol_split,
        retrieval_metrics,
        validation_split,
    )
    from nimare_mnm.features import corpus_arrays
    from nimare_mnm.losses import preset, similarity
    from nimare_mnm.model import LevelLayout, MNMConfig
    from nimare_mnm.text import TextEncoder
    from nimare_mnm.training import TrainConfig, prepare_brain, train

    cfg = config or BenchmarkConfig()
    unknown = set(cfg.models) - set(MODELS)
    if unknown:
        raise ValueError(f"Unknown models {sorted(unknown)}; choose from {list(MODELS)}.")
    t_start = time.perf_counter()
    studyset = load_neuroquery(cfg.data_dir)
    all_ids = np.unique(np.asarray(studyset.study_ids).astype(str))
    if cfg.n_studies is not None and cfg.n_studies < len(all_ids):
        rng = np.random.default_rng(cfg.seed)
        all_ids = np.sort(rng.choice(all_ids, cfg.n_studies, replace=False))
        studyset = studyset.filter_study_ids(list(all_ids))
    train_ids, test_ids = protocol_split(all_ids)
    levels = BrainLevels(cfg.data_dir).fit()
    vectorizer = BrainVectorizer(data_dir=cfg.data_dir).fit(levels)
    layout = LevelLayout.from_vectorizer(vectorizer, levels)
    encoder = TextEncoder()
    LGR.info("Preparing inputs for %d studies.", len(all_ids))
    arrays = corpus_arrays(studyset, encoder=encoder, vectorizer=vectorizer)
    have = set(arrays.ids)
    train_arr = arrays.subset([i for i in train_ids if i in have])
    test_arr = arrays.subset([i for i in test_ids if i in have])
    fit_ids, val_ids = validation_split(train_arr.ids)
    val_rows = np.sort(pd.Index(train_arr.ids).get_indexer(val_ids))
    test_set = studyset.filter_study_ids(list(test_arr.ids))
    sids, true_maps = PeakDensity().transform(test_set)
    true_maps = true_maps[pd.Index(sids).get_indexer(test_arr.ids)]
    peaks = _peak_voxels(test_set, test_arr.ids)
    terms, frequency = _term_table(studyset, train_arr.ids)
    term_embeddings = encoder.encode(terms)
    train_views = None
    if any(
        preset(MODELS[m]["preset"]).get("query_views") for m in cfg.models if "preset" in MODELS[m]
    ):
        train_views = encoder.encode(
            [v for row in query_views(train_arr.texts, seed=cfg.seed) for v in row]
        ).reshape(len(train_arr.ids), -1, train_arr.text.shape[1])
    prepared_train = prepare_brain(train_arr.brain)["brain"]
    prepared_test = prepare_brain(test_arr.brain)["brain"]

    def _score_model(name: str) -> dict:
        spec = MODELS[name]
        LGR.info("Model %s", name)
        t0 = time.perf_counter()
        record = {"model": name}
        if spec.get("baseline") == "neuroquery":
            predicted, fit_seconds = nq_future.result()
            LGR.info("NeuroQuery baseline fitted in %.0f s.", fit_seconds)
            sim = _row_correlation(predicted, test_arr.brain)
            record.update(retrieval_metrics(sim))
            record.update(_score_maps(vectorizer, predicted, true_maps, peaks))
            record["generality_spearman"] = None
        else:
            entry = preset(spec["preset"], **spec.get("loss", {}))
            has_decoder = spec.get("decoder", entry["decoder"])
            mcfg = MNMConfig(
                text_dim=train_arr.text.shape[1],
                brain_dim=train_arr.brain.shape[1],
                geometry=entry["geometry"],
                decoder=has_decoder,
            )
            result = train(
                train_arr.text,
                train_arr.brain,
                model_config=mcfg,
                loss_config=entry["loss"],
                train_config=TrainConfig(
                    epochs=cfg.epochs,
                    patience=cfg.patience,
                    batch_size=cfg.batch_size,
                    seed=cfg.seed,
                    device=cfg.device,
                    show_progress=False,
                ),
                layout=layout,
                val_rows=val_rows,
                text_views=train_views if entry.get("query_views", False) else None,
            )
            fit_seconds = time.perf_counter() - t0
            model = result.model.cpu().eval()
            kind = entry["loss"].contrastive
            with torch.no_grad():
                text_pts = model.encode_text(torch.as_tensor(test_arr.text))
                brain_pts = model.encode_brain(torch.as_tensor(prepared_test))
                sim = similarity(kind, text_pts, brain_pts, model.curvature).numpy()
                if model.decoder is not None:
                    predicted = to_density(model.decode(text_pts).numpy())
                else:
                    train_pts = model.encode_brain(torch.as_tensor(prepared_train))
                    scores = similarity(kind, text_pts, train_pts, model.curvature).numpy()
                    top = np.argpartition(-scores, N_NEIGHBOURS - 1, axis=1)[:, :N_NEIGHBOURS]
                    # As MNMEncoder does: the mean of the square-rooted maps.
                    predicted = prepared_train[top].mean(axis=1)
                term_pts = model.encode_text(torch.as_tensor(term_embeddings))
                generality = model.generality(term_pts).numpy()
            record.update(retrieval_metrics(sim))
            record.update(_score_maps(vectorizer, predicted, true_maps, peaks))
            record["generality_spearman"] = (
                None
                if entry["geometry"] == "euclidean"
                # General terms (used by many studies) should sit nearer the origin: a
                # positive correlation between frequency and closeness to the origin.
                else -generality_spearman(generality, frequency)
            )
            record["best_epoch"] = result.best_epoch
            record["val_recall@10"] = result.best_val_recall_at_10
        record["fit_seconds"] = round(fit_seconds, 1)
        LGR.info("%s", json.dumps(record))
        return record

    # The NeuroQuery baseline (a large ridge, tens of minutes) fits in another process, on
    # one core, while the neural models train on the others.
    nq_future, pool = None, None
    threads = torch.get_num_threads()
    if any(MODELS[m].get("baseline") == "neuroquery" for m in cfg.models):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # fork: no re-import of the caller's main module (scripts need no __main__ guard);
        # the worker only runs NumPy/scikit-learn code, with one BLAS thread.
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        pool = ProcessPoolExecutor(1, mp_context=context)
        nq_future = pool.submit(
            _fit_neuroquery,
            list(train_arr.texts),
            train_arr.brain,
            list(test_arr.texts),
            cfg.data_dir,
            cfg.neuroquery_components,
        )
        torch.set_num_threads(max(1, threads - 1))
    # Neural models first, the baseline's result last (it is usually the slowest).
    order = sorted(cfg.models, key=lambda m: MODELS[m].get("baseline") is not None)
    by_name = {}
    try:
        for name in order:
            by_name[name] = _score_model(name)
    finally:
        torch.set_num_threads(threads)
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    records = [by_name[name] for name in cfg.models]
    shipped_disjoint = None
    if (PRETRAINED_DIR / "arrays.safetensors").exists():
        from safetensors.numpy import load_file

        shipped = load_file(str(PRETRAINED_DIR / "arrays.safetensors"))["studies.ids"]
        shipped_disjoint = not np.isin(test_arr.ids.astype(np.int64), shipped).any()
    run = {
        "records": records,
        "commit": _commit(),
        "seed": cfg.seed,
        "split": "protocol_split: ids sorted, default_rng(0) permutation, first 10 % test",
        "n_train": int(len(train_arr.ids) - len(val_ids)),
        "n_validation": int(len(val_ids)),
        "n_test": int(len(test_arr.ids)),
        "n_terms": len(terms),
        "test_ids_sha256": _ids_digest(test_arr.ids),
        "test_ids_disjoint_from_shipped_model": shipped_disjoint,
        "settings": {k: v for k, v in cfg.__dict__.items() if k != "data_dir"},
        "chance_recall@10": 100.0 * 10 / len(test_arr.ids),
        "total_seconds": round(time.perf_counter() - t_start, 1),
        "machine": f"{platform.machine()}, torch {torch.__version__}",
    }
    if out_dir is not None:
        write_reports(run, out_dir)
    return run


def _fit_neuroquery(train_texts, train_brain, test_texts, data_dir, n_components):
    """Fit the NeuroQuery baseline with one BLAS thread; return test maps and fit time."""
    from threadpoolctl import threadpool_limits

    from nimare_mnm.baselines import NeuroQueryBaseline

    with threadpool_limits(1):
        t0 = time.perf_counter()
        model = NeuroQueryBaseline(
            data_dir=data_dir, n_components=n_components, alphas=NEUROQUERY_ALPHAS
        )
        model.fit(train_texts, train_brain)
        fit_seconds = time.perf_counter() - t0
        return model.predict(test_texts), fit_seconds


def _row_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """All-pairs Pearson correlation between the rows of a and of b."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return a @ b.T


#: Columns of quality.md, with their headers.
TABLE_COLUMNS = {
    "text_to_brain_recall@5": "T→B R@5",
    "text_to_brain_recall@10": "T→B R@10",
    "text_to_brain_recall@100": "T→B R@100",
    "brain_to_text_recall@5": "B→T R@5",
    "brain_to_text_recall@10": "B→T R@10",
    "brain_to_text_recall@100": "B→T R@100",
    "mix_match": "mix & match",
    "map_r": "map r",
    "peak_auc": "peak AUC",
    "generality_spearman": "generality ρ",
    "fit_seconds": "fit (s)",
}


RETRIEVAL_METRICS = [
    f"{direction}_recall@{k}"
    for direction in ("text_to_brain", "brain_to_text")
    for k in (5, 10, 100)
] + ["mix_match", "mix_match_brain_to_text"]


def verdict(records: list[dict], model: str = "nimare-mnm") -> list[str]:
    """Sentences stating plainly whether ``model`` meets the evaluation's targets."""
    table = pd.DataFrame(records).set_index("model")
    if model not in table.index:
        return []
    row = table.loc[model]
    lines = ["## Targets", ""]
    for col, label in (("text_to_brain_recall@10", "text→brain Recall@10"), ("map_r", "map r")):
        best = table[col].astype(float).idxmax()
        status = "met" if best == model else "NOT met"
        lines.append(
            f"- Best {label} of all rows: {status} ({model} {row[col]:.3f}; best {best} "
            f"{table.loc[best, col]:.3f})."
        )
    published = "MNM (published)"
    if published in table.index:
        worse = [m for m in RETRIEVAL_METRICS if float(row[m]) <= float(table.loc[published, m])]
        status = "met" if not worse else "NOT met on " + ", ".join(worse)
        lines.append(f"- Beats {published} on every retrieval metric: {status}.")
    rho = row.get("generality_spearman")
    if rho is not None and np.isfinite(float(rho)):
        sign = "positive" if float(rho) > 0 else "NOT positive"
        lines.append(
            f"- Generality against term frequency (Spearman of closeness to the origin and "
            f"the number of training studies using the term): {float(rho):.3f}, {sign}."
        )
    return lines


def write_reports(run: dict, out_dir) -> dict[str, Path]:
    """Write quality.json, quality.md and quality.png for a :func:`run_benchmark` result."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "quality.json", "md": out / "quality.md", "png": out / "quality.png"}
    paths["json"].write_text(json.dumps(run, indent=2, default=float) + "\n")
    table = pd.DataFrame(run["records"]).set_index("model")
    shown = table[[c for c in TABLE_COLUMNS if c in table]].rename(columns=TABLE_COLUMNS)
    lines = [
        "# nimare-mnm evaluation on the NeuroQuery test split",
        "",
        f"{run['n_train']} training, {run['n_validation']} validation and {run['n_test']} test "
        f"studies ({run['split']}); commit {run['commit']}, seed {run['seed']}. Recall in %, "
        f"chance Recall@10 {run['chance_recall@10']:.2f} %.",
        "",
        _markdown(shown),
        "",
        *verdict(run["records"]),
        "",
    ]
    paths["md"].write_text("\n".join(lines))
    fig, axes = plt.subplots(1, 3, figsize=(14, 0.5 * len(table) + 1.5), sharey=True)
    for ax, (col, label) in zip(
        axes,
        [
            ("text_to_brain_recall@10", "text→brain Recall@10 (%)"),
            ("brain_to_text_recall@10", "brain→text Recall@10 (%)"),
            ("map_r", "map Pearson r"),
        ],
    ):
        values = table[col].astype(float)
        colors = ["tab:red" if m == "nimare-mnm" else "tab:gray" for m in table.index]
        ax.barh(table.index, values, color=colors)
        ax.set_xlabel(label)
        ax.invert_yaxis() if ax is axes[0] else None
    fig.suptitle(f"NeuroQuery test split ({run['n_test']} studies)")
    fig.tight_layout()
    fig.savefig(paths["png"], dpi=120)
    plt.close(fig)
    return paths


def _markdown(table: pd.DataFrame) -> str:
    """Format a table as GitHub-flavoured markdown (no extra dependency)."""

    def cell(value) -> str:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return "n/a"
        if isinstance(value, (float, np.floating)):
            return f"{value:.3f}" if abs(value) < 1 else f"{value:.1f}"
        return str(value)

    header = "| model | " + " | ".join(table.columns) + " |"
    rule = "|---|" + "---:|" * len(table.columns)
    rows = [
        f"| {name} | " + " | ".join(cell(v) for v in row) + " |"
        for name, row in zip(table.index, table.itertuples(index=False))
    ]
    return "\n".join([header, rule, *rows])
