"""Benchmark how long each example of the gallery takes to run.

The issue asks every example (``examples/NN_topic/NN_plot_*.py``) to finish within two minutes,
so that the documentation builds in reasonable time. Each example runs ``--repeats`` times, each
time in a fresh process from its own folder with matplotlib's Agg backend (as a user runs it: the
imports and the pretrained model load are included), and its wall-clock time is recorded with
its exit status. Examples that read the NeuroQuery files (their source names
``NIMARE_MNM_DATA``) are recorded as skipped when that variable is unset. Writes
``benchmarks/results/examples.json`` with the commit, date and machine it ran at
(:func:`nimare_mnm.experiments.provenance.provenance`).

Usage::

    NIMARE_MNM_DATA=../shared/data python benchmarks/bench_examples.py
    python benchmarks/bench_examples.py --only 01_text_to_brain --out /tmp/examples.json
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
LIMIT_SECONDS = 120.0


def examples() -> list[Path]:
    """The gallery's example scripts, in order."""
    return sorted((REPO / "examples").glob("[0-9][0-9]_*/[0-9][0-9]_plot_*.py"))


def run_example(path: Path, timeout: float) -> dict:
    """Run one example in a fresh process from its folder; return its time and status."""
    env = {**os.environ, "MPLBACKEND": "Agg"}
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    t0 = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, path.name],
            cwd=path.parent,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"seconds": time.perf_counter() - t0, "exit_code": None, "timed_out": True}
    out = {"seconds": time.perf_counter() - t0, "exit_code": done.returncode, "timed_out": False}
    if done.returncode != 0:
        out["stderr_tail"] = done.stderr[-2000:]
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=1, help="runs per example (default 1)")
    parser.add_argument(
        "--only",
        nargs="+",
        default=None,
        help="run only examples whose path contains one of these",
    )
    parser.add_argument(
        "--limit", type=float, default=LIMIT_SECONDS, help="seconds an example may take"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=4 * LIMIT_SECONDS,
        help="seconds after which a run is stopped (recorded as timed out)",
    )
    parser.add_argument("--out", default=str(RESULTS / "examples.json"))
    args = parser.parse_args(argv)

    from nimare_mnm.experiments.provenance import provenance

    started = provenance()  # the code that runs: taken before anything else happens
    paths = examples()
    if args.only:
        paths = [p for p in paths if any(s in str(p.relative_to(REPO)) for s in args.only)]
    if not paths:
        raise SystemExit("No example matches --only.")
    has_data = bool(os.environ.get("NIMARE_MNM_DATA"))
    results = {}
    for path in paths:
        name = str(path.relative_to(REPO))
        if "NIMARE_MNM_DATA" in path.read_text(encoding="utf-8") and not has_data:
            results[name] = {"skipped": "needs NIMARE_MNM_DATA"}
            print(f"{name}: skipped (set NIMARE_MNM_DATA)", flush=True)
            continue
        runs = [run_example(path, args.timeout) for _ in range(args.repeats)]
        seconds = sorted(r["seconds"] for r in runs)
        ok = all(r["exit_code"] == 0 for r in runs)
        results[name] = {
            "median_seconds": seconds[len(seconds) // 2],
            "max_seconds": seconds[-1],
            "exit_codes": [r["exit_code"] for r in runs],
            "ok": ok,
            "within_limit": ok and seconds[-1] < args.limit,
            **({"stderr_tail": runs[-1]["stderr_tail"]} if "stderr_tail" in runs[-1] else {}),
        }
        print(f"{name}: {seconds[-1]:.1f} s{'' if ok else ' (FAILED)'}", flush=True)
    result = {
        "what": "wall-clock time of each gallery example, each run in a fresh process from "
        "its folder (imports and model loading included), matplotlib Agg backend",
        "limit_seconds": args.limit,
        "repeats": args.repeats,
        "data": has_data,
        "examples": results,
        "all_within_limit": all(r.get("within_limit", True) for r in results.values()),
        **started,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
