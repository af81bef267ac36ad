"""Calibrate the pretrained model's query-confidence threshold on its validation titles.

A model trained with :meth:`nimare_mnm.MNMEncoder.fit` calibrates its own threshold; the
pretrained model was trained before query confidence existed, so this script gives it one,
the same way: the confidence that 1 % of the titles of its validation studies fall below.
Its vocabulary is the NeuroQuery terms its decoder records (the terms used by the training
studies). The validation studies are rebuilt by the rule of :func:`nimare_mnm.training.train`
(a permutation seeded with ``seed + 1`` of the training rows, ``val_fraction`` of them); this
checkpoint predates the record of their ids' digest, so the script says whether it could
check them. The protocol's test split is not read.

Writes the threshold into the checkpoint's ``config.json`` (``"query_confidence"``; the
weights and their digests are untouched) and ``benchmarks/results/confidence.json``: the
validation titles' confidence distribution, and the confidence of the README's and the demo's
queries and of the nonsense queries a user tried (with whether each gets a warning).

Usage::

    python scripts/calibrate_confidence.py --data-dir ../shared/data
"""

import argparse
import json
from pathlib import Path

import numpy as np

from nimare_mnm import MNMEncoder, load_neuroquery
from nimare_mnm.confidence import CALIBRATION_QUANTILE, calibrate_threshold
from nimare_mnm.datasets import study_titles
from nimare_mnm.encoder import PRETRAINED_DIR
from nimare_mnm.experiments.provenance import provenance
from nimare_mnm.utils import ids_digest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "confidence.json"

#: Queries a user should get no warning for: README's, the demo's, and everyday ones.
REAL_QUERIES = (
    "working memory",
    "finger tapping",
    "fear conditioning",
    "fear",
    "visual motion",
    "language comprehension",
    "reward prediction error",
    "face recognition",
    "pain",
    "default mode network",
    "theory of mind",
    "n-back",
    "grid cells in entorhinal cortex during virtual navigation",
)
#: Queries the model cannot understand (issue 15 of the project's tracker, and a few more).
NONSENSE_QUERIES = (
    "😱🧠",
    "???",
    "a",
    "工作记忆",
    "Arbeitsgedächtnis",
    "asdfgh qwerty",
    "lorem ipsum dolor sit amet",
    "1234",
)


def validation_ids(encoder: MNMEncoder) -> tuple[list[str], bool | None]:
    """Validation study ids by the training rule, and whether their recorded digest agrees."""
    params = encoder.get_params()
    n = len(encoder.study_ids_)
    perm = np.random.default_rng(params["seed"] + 1).permutation(n)
    rows = np.sort(perm[: max(1, int(n * params["val_fraction"]))])
    ids = [str(i) for i in encoder.study_ids_[rows]]
    recorded = encoder.training_.get("validation_ids_sha256")
    return ids, (None if recorded is None else recorded == ids_digest(ids))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True, help="folder holding neuroquery/")
    args = parser.parse_args()
    started = provenance()  # the commit and work-tree state this run starts from

    encoder = MNMEncoder.load_pretrained(device="cpu")
    ids, checked = validation_ids(encoder)
    if checked is False:
        raise SystemExit("The rebuilt validation ids do not match the checkpoint's digest.")
    titles = study_titles(load_neuroquery(args.data_dir, download=False))
    queries = [str(t) for t in titles.reindex(ids).dropna() if str(t).strip()]
    vocabulary = encoder.vocabulary_
    threshold = calibrate_threshold(vocabulary, queries)
    record = {
        "threshold": threshold,
        "quantile": CALIBRATION_QUANTILE,
        "calibration": "validation titles",
        "n_calibration": len(queries),
        "vocabulary": "NeuroQuery terms used by the training studies (the decoder's)",
        "n_terms": len(vocabulary),
    }
    config_file = PRETRAINED_DIR / "config.json"
    config = json.loads(config_file.read_text())
    config["query_confidence"] = record
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")

    confidence = vocabulary.confidence(queries)

    def scored(texts):
        return {
            t: {"confidence": c, "warned": bool(c < threshold)}
            for t, c in zip(texts, vocabulary.confidence(texts).tolist())
        }

    result = {
        "what": "query confidence of the pretrained model (scripts/calibrate_confidence.py)",
        **record,
        "validation_ids_checked_against_digest": checked,
        "validation_titles": {
            "quantiles": {
                str(q): float(np.quantile(confidence, q)) for q in (0.0, 0.01, 0.05, 0.5)
            },
            "fraction_warned": float((confidence < threshold).mean()),
            "fraction_zero": float((confidence == 0).mean()),
        },
        "real_queries": scored(REAL_QUERIES),
        "nonsense_queries": scored(NONSENSE_QUERIES),
        **started,
    }
    RESULTS.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps({k: result[k] for k in ("threshold", "n_calibration")}, indent=2))


if __name__ == "__main__":
    main()
