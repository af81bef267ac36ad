"""Benchmark how fast the command line answers when it has nothing heavy to do.

``nimare-mnm --help``, ``--version`` and a usage error (``decode map.nii.gz -k 0``) must
answer in well under a second: they must not import torch, NiMARE or nilearn. Each is run
``--repeats`` times, each time in a fresh process (the console script, as a user types it), and
the wall-clock times are recorded with their median and maximum, next to the import time of
``nimare_mnm.cli`` measured by ``python -X importtime`` and the heavy packages a fresh
``import nimare_mnm.cli`` loads (none expected). Writes ``benchmarks/results/cli.json`` with the
commit, date and machine it ran at (:func:`nimare_mnm.experiments.provenance.provenance`).

Usage::

    python benchmarks/bench_cli.py
"""

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

CASES = {
    "--help": ["--help"],
    "--version": ["--version"],
    "usage error (-k 0)": ["decode", "map.nii.gz", "-k", "0"],
}
HEAVY = ("torch", "nimare", "nilearn", "sklearn", "transformers", "pandas", "scipy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", default=str(RESULTS / "cli.json"))
    args = parser.parse_args()

    from nimare_mnm.experiments.provenance import provenance

    started = provenance()
    command = shutil.which("nimare-mnm")
    if command is None:
        raise SystemExit("The nimare-mnm console script is not installed (pip install -e .).")
    cases = {}
    for name, argv in CASES.items():
        seconds, codes = [], set()
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            done = subprocess.run([command, *argv], capture_output=True, text=True)
            seconds.append(time.perf_counter() - t0)
            codes.add(done.returncode)
        seconds.sort()
        cases[name] = {
            "median_seconds": seconds[len(seconds) // 2],
            "max_seconds": seconds[-1],
            "exit_codes": sorted(codes),
        }
    importtime = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import nimare_mnm.cli"],
        capture_output=True,
        text=True,
    ).stderr
    cumulative = {
        m.group(2).strip(): int(m.group(1))
        for m in re.finditer(r"import time:\s+\d+ \|\s+(\d+) \|\s+(\S.*)", importtime)
    }
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, nimare_mnm.cli; print(sorted({m.split('.')[0] for m in sys.modules}))",
        ],
        capture_output=True,
        text=True,
    ).stdout
    result = {
        "what": "command-line answers that need no model (fresh process each time)",
        "repeats": args.repeats,
        "cases": cases,
        "import_nimare_mnm_cli_seconds": cumulative.get("nimare_mnm.cli", 0) / 1e6,
        "heavy_packages_imported": sorted(set(json.loads(loaded.replace("'", '"'))) & set(HEAVY)),
        **started,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v["median_seconds"] for k, v in cases.items()}, indent=2))


if __name__ == "__main__":
    main()
