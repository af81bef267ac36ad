"""Run the whole evaluation: every model on the protocol's split, and the decoding comparison.

Writes ``benchmarks/results/quality.json``, ``quality.md``, ``quality.png`` and
``decoding.json``. Text embeddings and density maps are cached by nimare-mnm, so a rerun
spends its time training the models.

Usage::

    python benchmarks/run_all.py --data-dir ../shared/data
"""

import argparse
import json
import logging
import os
import time
from pathlib import Path

from nimare_mnm.benchmark import BenchmarkConfig, run_benchmark, write_reports

RESULTS = Path(__file__).resolve().parent / "results"


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", default=os.environ.get("NIMARE_MNM_DATA", "../shared/data"))
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--skip-decoding", action="store_true")
    parser.add_argument(
        "--report-only", action="store_true", help="rewrite quality.md/png from quality.json"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("nimare", "nilearn"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    t0 = time.perf_counter()
    if args.report_only:
        run = json.loads((Path(args.out) / "quality.json").read_text())
        write_reports(run, args.out)
        print((Path(args.out) / "quality.md").read_text())
        return
    if not args.skip_quality:
        run = run_benchmark(BenchmarkConfig(data_dir=args.data_dir), out_dir=args.out)
        print((Path(args.out) / "quality.md").read_text())
        print(f"quality: {run['total_seconds']} s")
    if not args.skip_decoding:
        from nimare_mnm.decoding_comparison import run_decoding_comparison

        result = run_decoding_comparison(data_dir=args.data_dir, out_dir=args.out)
        print(json.dumps(result, indent=2, default=str)[:3000])
    print(f"total: {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
