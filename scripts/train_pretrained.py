"""Train the pretrained nimare-mnm model shipped in ``nimare_mnm/data/pretrained``.

The model is trained on the NeuroQuery studies outside the evaluation protocol's test split
(:func:`nimare_mnm.evaluation.protocol_split`, seed 0): the test studies are dropped from the
Studyset before the encoder sees it. The checkpoint's configuration records the corpus, the
split seed, the number of training and test studies and SHA-256 digests of both id lists, and
``test_ids_disjoint``, computed from the ids the encoder was fitted on (the script refuses to
write a checkpoint whose training ids meet the test split). The checkpoint stores those ids
(``studies.ids``), so anyone with the corpus can recompute the split and check that the test
studies stayed unseen (``tests/test_estimators.py``).

Usage::

    python scripts/train_pretrained.py --data-dir ../shared/data \
        --out nimare_mnm/data/pretrained
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from nimare_mnm import MNMDecoder, MNMEncoder, load_neuroquery
from nimare_mnm.encoder import PRETRAINED_DIR
from nimare_mnm.evaluation import protocol_split
from nimare_mnm.utils import ids_digest

SPLIT_SEED = 0
TEST_FRACTION = 0.1


def check_disjoint(trained_ids, test_ids) -> bool:
    """Return True when no study id the model was trained on is a test id; raise otherwise.

    Parameters
    ----------
    trained_ids, test_ids : sequence
        The ids of the studies the encoder was fitted on (``MNMEncoder.study_ids_``, the ids
        stored in the checkpoint) and the protocol's test ids; compared as strings.

    Raises
    ------
    RuntimeError
        Some test studies reached the training set; nothing is written.
    """
    leaked = sorted(set(map(str, trained_ids)) & set(map(str, test_ids)))
    if leaked:
        raise RuntimeError(
            f"{len(leaked)} test studies reached the training set (ids {leaked[:5]}...); "
            "the checkpoint is not written."
        )
    return not leaked


def main(argv: list[str] | None = None) -> None:
    """Train and write the pretrained checkpoint."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("NIMARE_MNM_DATA"))
    parser.add_argument("--out", default=str(PRETRAINED_DIR))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    t0 = time.perf_counter()
    studyset = load_neuroquery(args.data_dir)
    all_ids = np.unique(np.asarray(studyset.study_ids).astype(str))
    train_ids, test_ids = protocol_split(all_ids, TEST_FRACTION, SPLIT_SEED)
    train_set = studyset.filter_study_ids(list(train_ids))
    encoder = MNMEncoder(data_dir=args.data_dir, device=args.device, seed=args.seed)
    encoder.fit(train_set)
    encoder.training_.update(
        corpus="neuroquery",
        split_seed=SPLIT_SEED,
        test_fraction=TEST_FRACTION,
        n_test=len(test_ids),
        test_ids_sha256=ids_digest(test_ids),
        test_ids_disjoint=check_disjoint(encoder.study_ids_, test_ids),
    )
    decoder = MNMDecoder(encoder=encoder).fit(train_set)
    path = decoder.save_checkpoint(args.out)
    size = sum(f.stat().st_size for f in Path(path).iterdir()) / 2**20
    summary = {
        "out": str(path),
        "size_mb": round(size, 2),
        "n_train": int(encoder.training_["n_studies"]),
        "n_test": len(test_ids),
        "best_epoch": encoder.training_["best_epoch"],
        "best_val_recall_at_10": encoder.training_["best_val_recall_at_10"],
        "n_terms": len(decoder.features_),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
