"""Run the benchmark: every row on the protocol's split, seeds, floors and intervals.

Writes ``quality.json``, ``quality.md``, ``quality.png`` and ``decoding.json`` (with
``--split validation``: ``quality-validation.*`` and ``decoding-validation.json``) into
``benchmarks/results``. Develop on the validation split; score the test split once, at the end
of a model change::

    python benchmarks/run_all.py --data-dir ../shared/data --split validation
    python benchmarks/run_all.py --data-dir ../shared/data --split test

``--report-only`` rewrites the markdown and figure from an existing JSON (no training).
"""

import argparse
import json
import logging
import os
import time
from pathlib import Path

from nimare_mnm.experiments.benchmark import (
    MODEL,
    NEURAL_ROWS,
    ROWS,
    BenchmarkConfig,
    run_benchmark,
    write_reports,
)

RESULTS = Path(__file__).resolve().parent / "results"


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", default=os.environ.get("NIMARE_MNM_DATA", "../shared/data"))
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--split", choices=("validation", "test"), required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    parser.add_argument(
        "--model", default=MODEL, choices=list(NEURAL_ROWS), help="the row compared with the rest"
    )
    parser.add_argument("--n-studies", type=int, default=None, help="subset (quick checks)")
    parser.add_argument("--epochs", type=int, default=None, help="epoch cap (quick checks)")
    parser.add_argument(
        "--report-only", action="store_true", help="rewrite quality.md/png from quality.json"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("nimare", "nilearn", "sentence_transformers", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    suffix = "" if args.split == "test" else f"-{args.split}"
    if args.report_only:
        run = json.loads((Path(args.out) / f"quality{suffix}.json").read_text())
        write_reports(run, args.out)
    else:
        t0 = time.perf_counter()
        config = BenchmarkConfig(
            data_dir=args.data_dir,
            split=args.split,
            rows=args.rows,
            seeds=tuple(args.seeds),
            n_studies=args.n_studies,
            epochs=args.epochs,
            model=args.model,
        )
        run_benchmark(config, out_dir=args.out)
        print(f"total: {time.perf_counter() - t0:.0f} s")
    print((Path(args.out) / f"quality{suffix}.md").read_text())


if __name__ == "__main__":
    main()
