"""Benchmark a fit of the default model on the NeuroQuery training part: time and memory.

Trains ``MNMEncoder(preset=...)`` exactly as users and ``scripts/train_pretrained.py`` do
(query views, term features, early stopping on the validation split that
:func:`nimare_mnm.training.train` carves from the training studies); the protocol's test split
is left out entirely. Text embeddings come from the TextEncoder's disk cache (the first run
embeds the corpus, which takes minutes on a CPU). Writes ``benchmarks/results/training.json``
with the commit, date and machine it ran at
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

from nimare_mnm import MNMEncoder, load_neuroquery
from nimare_mnm.evaluation import protocol_split
from nimare_mnm.experiments.provenance import provenance

RESULTS = Path(__file__).resolve().parent / "results"


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", default=os.environ.get("NIMARE_MNM_DATA", "../shared/data"))
    parser.add_argument("--out", default=str(RESULTS / "training.json"))
    parser.add_argument("--preset", default="nimare-mnm")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    t0 = time.perf_counter()
    studyset = load_neuroquery(args.data_dir)
    all_ids = np.unique(np.asarray(studyset.study_ids).astype(str))
    train_ids, test_ids = protocol_split(all_ids)
    train_set = studyset.filter_study_ids(list(train_ids))
    load_seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    encoder = MNMEncoder(preset=args.preset, data_dir=args.data_dir, device=args.device)
    encoder.fit(train_set)
    fit_seconds = time.perf_counter() - t1
    record = encoder.training_
    history = record["history"]
    best = history[record["best_epoch"]]
    out = {
        "preset": args.preset,
        "fit_seconds": fit_seconds,
        "train_seconds": record["train_seconds"],
        "load_seconds": load_seconds,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "epochs": len(history),
        "best_epoch": record["best_epoch"],
        "best_val_recall_at_10": record["best_val_recall_at_10"],
        "best_val_recall_at_1": best["val_recall_at_1"],
        "chance_val_recall_at_10": 100.0 * 10 / len(encoder.validation_ids_),
        "device": record["device"],
        "n_train": int(record["n_studies"] - len(encoder.validation_ids_)),
        "n_val": int(len(encoder.validation_ids_)),
        "n_test_held_out": int(len(test_ids)),
        "test_ids_disjoint": bool(not set(encoder.study_ids_) & set(test_ids)),
        "term_features": record.get("term_features"),
        "curvature": best["curvature"],
        "mean_brain_radius": best["mean_brain_radius"],
        "history": history,
        "model_config": encoder.model_.config.to_dict(),
        "loss_config": record["loss"],
        "torch_threads": torch.get_num_threads(),
        **provenance(),  # commit, dirty, date, machine
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "history"}, indent=2))
    print("val recall@10 per epoch:", [round(h["val_recall_at_10"], 1) for h in history])
    assert np.isfinite(out["fit_seconds"])


if __name__ == "__main__":
    main()
