"""Measure the level entailment term: its direction and its effect on validation retrieval.

Trains model v2 as first shipped (preset ``nimare-mnm-v2``, the one with the level term at
weight 0.05; the default has no level term) on the NeuroQuery training part (the protocol's test
split is left out) with the level entailment term off, whole-to-part and part-to-whole, and
writes ``benchmarks/results/level_direction.json`` with validation Recall@10, the level loss
at the selected epoch, the mean brain radius and the fit time of each, and the commit, date and
machine it ran at (:func:`nimare_mnm.experiments.provenance.provenance`).

Usage::

    python benchmarks/bench_level_direction.py --data-dir ../shared/data
"""

import argparse
import json
import os
from pathlib import Path

from nimare_mnm import load_neuroquery
from nimare_mnm.atlases import BrainLevels
from nimare_mnm.evaluation import protocol_split
from nimare_mnm.experiments.provenance import provenance
from nimare_mnm.features import corpus_arrays
from nimare_mnm.levels import LevelLayout
from nimare_mnm.model import MNMConfig
from nimare_mnm.presets import preset
from nimare_mnm.training import TrainConfig, train
from nimare_mnm.vectorizer import BrainVectorizer

RESULTS = Path(__file__).resolve().parent / "results"

VARIANTS = {
    "no level term": {"w_entail_levels": 0.0},
    "whole_to_part (w=0.05)": {"level_direction": "whole_to_part"},
    "part_to_whole (w=0.05)": {"level_direction": "part_to_whole"},
}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", default=os.environ.get("NIMARE_MNM_DATA", "../shared/data"))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", default=str(RESULTS / "level_direction.json"))
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    studyset = load_neuroquery(args.data_dir, annotations=False)
    train_ids, _ = protocol_split(studyset.study_ids)
    levels = BrainLevels(args.data_dir).fit()
    vectorizer = BrainVectorizer(data_dir=args.data_dir).fit(levels)
    arrays = corpus_arrays(studyset, vectorizer=vectorizer, ids=train_ids)
    layout = LevelLayout.from_vectorizer(vectorizer, levels.levels_)
    out = {"epochs": args.epochs, "variants": {}}
    for name, overrides in VARIANTS.items():
        result = train(
            arrays.text,
            arrays.brain,
            model_config=MNMConfig(arrays.text.shape[1], arrays.brain.shape[1]),
            loss_config=preset("nimare-mnm-v2", **overrides).loss,
            train_config=TrainConfig(
                epochs=args.epochs, patience=args.epochs, show_progress=False
            ),
            layout=layout,
        )
        best = result.history[result.best_epoch]
        out["variants"][name] = {
            "best_val_recall_at_10": result.best_val_recall_at_10,
            "best_val_recall_at_1": best["val_recall_at_1"],
            "best_epoch": result.best_epoch,
            "entail_levels_loss": best.get("entail_levels"),
            "mean_brain_radius": best["mean_brain_radius"],
            "fit_seconds": result.fit_seconds,
        }
        print(name, json.dumps(out["variants"][name]), flush=True)
    out.update(provenance())  # commit, dirty, date, machine
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
