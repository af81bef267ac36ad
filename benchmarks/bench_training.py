"""Benchmark training of the nimare-mnm configuration on the NeuroQuery training part.

The protocol's test split is left out entirely; the validation split is carved from the
training studies by :func:`nimare_mnm.training.train`. Text embeddings come from the
TextEncoder's disk cache (the first run embeds the corpus, which takes minutes on a CPU).
Writes ``benchmarks/results/training.json`` with the commit, date and machine it ran at
(:func:`nimare_mnm.experiments.provenance.provenance`).

Usage::

    python benchmarks/bench_training.py --data-dir ../shared/data
"""

import argparse
import json
import os
import resource
import time
from pathlib import Path

import numpy as np
import torch

from nimare_mnm import load_neuroquery
from nimare_mnm.atlases import BrainLevels
from nimare_mnm.evaluation import protocol_split
from nimare_mnm.experiments.provenance import provenance
from nimare_mnm.features import corpus_arrays
from nimare_mnm.levels import LevelLayout
from nimare_mnm.model import MNMConfig
from nimare_mnm.presets import PRESETS
from nimare_mnm.training import TrainConfig, train
from nimare_mnm.vectorizer import BrainVectorizer

RESULTS = Path(__file__).resolve().parent / "results"


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", default=os.environ.get("NIMARE_MNM_DATA", "../shared/data"))
    parser.add_argument("--out", default=str(RESULTS / "training.json"))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    t0 = time.perf_counter()
    studyset = load_neuroquery(args.data_dir, annotations=False)
    train_ids, test_ids = protocol_split(studyset.study_ids)
    levels = BrainLevels(args.data_dir).fit()
    vectorizer = BrainVectorizer(data_dir=args.data_dir).fit(levels)
    arrays = corpus_arrays(studyset, vectorizer=vectorizer, ids=train_ids)
    features_seconds = time.perf_counter() - t0
    layout = LevelLayout.from_vectorizer(vectorizer, levels.levels_)
    spec = PRESETS["nimare-mnm"]
    config = MNMConfig(text_dim=arrays.text.shape[1], brain_dim=arrays.brain.shape[1])
    result = train(
        arrays.text,
        arrays.brain,
        model_config=config,
        loss_config=spec.loss,
        train_config=TrainConfig(epochs=args.epochs, device=args.device),
        layout=layout,
    )
    last = result.history[result.best_epoch]
    out = {
        "fit_seconds": result.fit_seconds,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "epochs": len(result.history),
        "best_epoch": result.best_epoch,
        "best_val_recall_at_10": result.best_val_recall_at_10,
        "best_val_recall_at_1": last["val_recall_at_1"],
        "chance_val_recall_at_10": 100.0 * 10 / len(result.val_rows),
        "device": result.device,
        "n_train": int(len(arrays.ids) - len(result.val_rows)),
        "n_val": int(len(result.val_rows)),
        "n_test_held_out": int(len(test_ids)),
        "test_ids_disjoint": bool(not set(arrays.ids) & set(test_ids)),
        "features_seconds": features_seconds,
        "curvature": last["curvature"],
        "mean_brain_radius": last["mean_brain_radius"],
        "history": result.history,
        "model_config": config.to_dict(),
        "loss_config": spec.loss.to_dict(),
        "torch_threads": torch.get_num_threads(),
        **provenance(),  # commit, dirty, date, machine
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "history"}, indent=2))
    print("val recall@10 per epoch:", [round(h["val_recall_at_10"], 1) for h in result.history])
    assert np.isfinite(out["fit_seconds"])


if __name__ == "__main__":
    main()
