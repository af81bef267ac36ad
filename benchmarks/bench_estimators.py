"""Benchmark the pretrained estimators: load time, query and decoding speed, textbook hits.

Runs in a fresh process with the pretrained model shipped in the package. The textbook
queries (``tests/test_estimators.py``) need the Harvard-Oxford atlas from the data directory;
without it they are skipped. Writes ``benchmarks/results/estimators.json`` with the commit,
date and machine it ran at (:func:`nimare_mnm.experiments.provenance.provenance`).

Usage::

    python benchmarks/bench_estimators.py --data-dir ../shared/data
"""

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]

QUERIES = [
    "working memory", "face perception", "finger tapping", "fear conditioning",
    "reward anticipation", "language comprehension", "episodic memory retrieval",
    "visual motion", "pain", "attention shifting", "auditory oddball", "mental arithmetic",
    "theory of mind", "response inhibition", "saccades", "emotion regulation",
    "semantic memory", "motor imagery", "reading words", "decision making under risk",
]  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", default=os.environ.get("NIMARE_MNM_DATA", "../shared/data"))
    parser.add_argument("--out", default=str(RESULTS / "estimators.json"))
    args = parser.parse_args()

    t0 = time.perf_counter()
    from nimare_mnm import MNMDecoder, MNMEncoder

    import_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    encoder = MNMEncoder.load_pretrained(device="cpu")
    load_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    decoder = MNMDecoder.load_pretrained(device="cpu")
    decoder_load_seconds = time.perf_counter() - t0

    encoder.transform("warm up")  # loads the sentence encoder once
    times = []
    for query in QUERIES:
        t0 = time.perf_counter()
        encoder.transform(query)
        times.append(time.perf_counter() - t0)
    batch = [f"{QUERIES[i % len(QUERIES)]} task {i}" for i in range(1000)]
    t0 = time.perf_counter()
    results = encoder.transform(batch)
    transform_1000 = time.perf_counter() - t0
    del results

    from nilearn.datasets import load_sample_motor_activation_image

    motor = load_sample_motor_activation_image()
    decoder.transform(motor)
    decode_times = []
    for _ in range(20):
        t0 = time.perf_counter()
        table = decoder.transform(motor)
        decode_times.append(time.perf_counter() - t0)

    hits = None
    if (Path(args.data_dir) / "atlases").is_dir():
        from nimare_mnm.experiments.textbook import textbook_hits

        hits = textbook_hits(encoder, args.data_dir)
    from nimare_mnm.experiments.provenance import provenance  # after import_seconds

    size = sum(f.stat().st_size for f in (REPO / "nimare_mnm/data/pretrained").iterdir())
    out = {
        "import_seconds": round(import_seconds, 2),
        "load_pretrained_seconds": round(load_seconds, 3),
        "decoder_load_seconds": round(decoder_load_seconds, 3),
        "pretrained_size_mb": round(size / 2**20, 2),
        "transform_median_ms": round(1000 * float(np.median(times)), 1),
        "transform_1000_seconds": round(transform_1000, 2),
        "decode_median_ms": round(1000 * float(np.median(decode_times)), 1),
        "motor_map_top10_terms": list(table.index[:10]),
        "textbook_hits": None if hits is None else int(sum(h for _, h in hits.values())),
        "textbook_total": None if hits is None else len(hits),
        "textbook_peaks": None if hits is None else {q: w for q, (w, _) in hits.items()},
        **provenance(),  # commit, dirty, date, machine
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
