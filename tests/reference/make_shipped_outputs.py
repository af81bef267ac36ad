"""Record what the shipped pretrained model outputs, for the regression test.

Run once at a commit whose outputs are the reference (``python
tests/reference/make_shipped_outputs.py``); ``tests/test_shipped_outputs.py`` recomputes the
same outputs with the code under test and compares them to float tolerance. The file records
the commit it was made at. It needs no corpus: the pretrained model, nilearn's sample motor
map and the package alone.
"""

from __future__ import annotations

import datetime
import json
import subprocess
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

#: Queries whose maps, level tables and retrieval scores are recorded.
QUERIES = ("working memory", "finger tapping", "fear conditioning", "reading words aloud")
#: Every STRIDE-th mask voxel of each map is recorded (about 6,000 values per map).
STRIDE = 37
#: Top terms, studies and retrieval scores kept.
TOP = 40


def _radius(table):
    return table["radius"] if "radius" in table else table["generality"]


def shipped_outputs() -> dict[str, np.ndarray]:
    """Outputs of the pretrained encoder and decoder, as named arrays."""
    from nilearn.datasets import load_sample_motor_activation_image

    from nimare_mnm import MNMDecoder, MNMEncoder

    encoder = MNMEncoder.load_pretrained(device="cpu")
    out: dict[str, np.ndarray] = {}
    results = encoder.transform(list(QUERIES))
    out["z"] = np.stack([r.get_map("z", return_type="array")[::STRIDE] for r in results])
    out["z_level_yeo7"] = np.stack(
        [r.get_map("z_level-yeo7", return_type="array")[::STRIDE] for r in results]
    )
    out["z_level_subcortical"] = np.stack(
        [r.get_map("z_level-subcortical", return_type="array")[::STRIDE] for r in results]
    )
    tables = [r.tables["levels"] for r in results]
    out["levels_region"] = (tables[0]["level"] + "/" + tables[0]["region"]).to_numpy(dtype=str)
    out["levels_mean_z"] = np.stack([t["mean_z"].to_numpy() for t in tables])
    out["levels_peak_z"] = np.stack([t["peak_z"].to_numpy() for t in tables])
    # The distance to the origin: the "radius" column, called "generality" before 2026-12-03.
    out["radius"] = np.array([_radius(r.tables["query"]).iloc[0] for r in results])
    out["confidence"] = np.array([r.tables["query"]["confidence"].iloc[0] for r in results])
    scores = encoder.retrieval_scores(list(QUERIES))
    top_ids, top_scores = [], []
    for query in QUERIES:
        top = scores[query].sort_values(ascending=False, kind="stable").iloc[:TOP]
        top_ids.append(top.index.to_numpy(dtype=str))
        top_scores.append(top.to_numpy())
    out["retrieval_ids"] = np.stack(top_ids)
    out["retrieval_scores"] = np.stack(top_scores)

    decoder = MNMDecoder.load_pretrained(device="cpu")
    img = load_sample_motor_activation_image()
    decoded = decoder.transform(img).iloc[:TOP]
    out["decoded_terms"] = decoded.index.to_numpy(dtype=str)
    out["decoded_score"] = decoded["score"].to_numpy()
    out["decoded_radius"] = _radius(decoded).to_numpy()
    out["decoded_region"] = (decoded["level"] + "/" + decoded["region"]).to_numpy(dtype=str)
    studies = decoder.decode_studies(img, k=TOP)
    out["decoded_study_ids"] = studies.index.to_numpy(dtype=str)
    out["decoded_study_score"] = studies["score"].to_numpy()
    return out


def main() -> None:
    repo = HERE.parents[1]
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()
    out = shipped_outputs()
    for key, value in out.items():  # no object arrays: the file loads without pickle
        assert value.dtype != object, key
    np.savez_compressed(HERE / "shipped_outputs.npz", **out)
    meta = {
        "commit": commit,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "weights_sha256": json.loads(
            (repo / "nimare_mnm" / "data" / "pretrained" / "config.json").read_text()
        )["sha256"],
        "queries": list(QUERIES),
        "stride": STRIDE,
        "top": TOP,
    }
    (HERE / "shipped_outputs.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"Wrote {HERE / 'shipped_outputs.npz'} at {commit}")


if __name__ == "__main__":
    main()
