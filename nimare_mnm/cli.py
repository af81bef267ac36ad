"""The ``nimare-mnm`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from nimare_mnm import __version__

LGR = logging.getLogger("nimare_mnm")

DEMO_QUERIES = ("working memory", "finger tapping motor task", "fear conditioning amygdala")


def _demo(args: argparse.Namespace) -> dict:
    """Text-to-map demo on the real corpus, built from the foundation pieces.

    Each query is embedded, the most similar studies (by text embedding) are retrieved, and
    the mean of their peak densities becomes the query's map, written as NIfTI and PNG and
    summarised per Yeo-7 network and subcortical structure.
    """
    import numpy as np

    from nimare_mnm.brain import BrainLevels, BrainVectorizer, PeakDensity
    from nimare_mnm.datasets import load_neuroquery, study_texts
    from nimare_mnm.text import TextEncoder

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    studyset = load_neuroquery(args.data_dir, annotations=False)
    texts = study_texts(studyset)
    if args.n_studies and args.n_studies < len(texts):
        texts = texts.iloc[:: max(1, len(texts) // args.n_studies)][: args.n_studies]
    encoder = TextEncoder(device=args.device, show_progress=not args.quiet)
    study_emb = encoder.encode(list(texts))
    levels = BrainLevels(args.data_dir).fit()
    vectorizer = BrainVectorizer(data_dir=args.data_dir).fit(levels)
    density = PeakDensity()
    summary = {"n_studies": len(texts), "queries": {}}
    for query in args.queries:
        scores = study_emb @ encoder.encode(query)[0]
        top = np.argsort(-scores)[: args.k]
        ids = texts.index[top]
        chosen = studyset.filter_study_ids(list(ids))
        _, maps = density.transform(chosen)
        mean_map = np.asarray(maps.mean(axis=0)).ravel()
        vector = vectorizer.transform(mean_map)
        img = vectorizer.to_img(vector)
        stem = "_".join(query.split())
        img.to_filename(out / f"{stem}.nii.gz")
        _plot(img, out / f"{stem}.png", query)
        per_level = {}
        for level in ("yeo7", "subcortical"):
            masks = levels.region_masks(level)
            region_means = masks @ mean_map / masks.sum(1)
            best = np.argsort(-region_means)[:3]
            per_level[level] = [levels.names_[level][b] for b in best]
        summary["queries"][query] = {
            "top_studies": [str(i) for i in ids[:5]],
            "top_titles": [texts[i][:80] for i in ids[:3]],
            "strongest_regions": per_level,
            "nifti": str(out / f"{stem}.nii.gz"),
        }
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    return summary


def _plot(img, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    from nilearn import plotting

    values = np.asanyarray(img.dataobj)
    # Show the top 10 % of the in-brain values: a density map is positive everywhere.
    threshold = float(np.percentile(values[values > 0], 90))
    display = plotting.plot_glass_brain(
        img, title=title, colorbar=True, plot_abs=False, threshold=threshold, cmap="hot"
    )
    display.savefig(str(path), dpi=80)
    display.close()


def _print_summary(summary: dict) -> None:
    print(f"nimare-mnm demo: {summary['n_studies']} studies, {summary['seconds']} s")
    for query, res in summary["queries"].items():
        print(f"\n{query!r} -> {res['nifti']}")
        for title in res["top_titles"]:
            print(f"  study: {title}")
        for level, regions in res["strongest_regions"].items():
            print(f"  strongest {level}: {', '.join(regions)}")


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of the ``nimare-mnm`` command."""
    parser = argparse.ArgumentParser(
        prog="nimare-mnm",
        description="Multi-level neuroimaging meta-analysis with hyperbolic brain-text "
        "representations, for NiMARE.",
    )
    parser.add_argument("--version", action="version", version=f"nimare-mnm {__version__}")
    parser.add_argument("--quiet", action="store_true", help="only print results")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="predict maps for a few queries from the most related NeuroQuery studies",
    )
    demo.add_argument(
        "--data-dir",
        default=os.environ.get("NIMARE_MNM_DATA"),
        help="folder with neuroquery/ and atlases/ (default: $NIMARE_MNM_DATA)",
    )
    demo.add_argument("-o", "--out", default="nimare_mnm_demo", help="output folder")
    demo.add_argument("-k", type=int, default=20, help="studies averaged per query")
    demo.add_argument(
        "--n-studies", type=int, default=2000, help="studies embedded (0: the whole corpus)"
    )
    demo.add_argument("queries", nargs="*", default=list(DEMO_QUERIES), help="text queries")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``nimare-mnm`` command line."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s"
    )
    for noisy in ("nimare", "nilearn", "sentence_transformers", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    import numpy as np
    import torch

    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    try:
        if args.command == "demo":
            if args.queries and any(not q.strip() for q in args.queries):
                raise ValueError("queries must not be empty")
            result = _demo(args)
            if args.json:
                print(json.dumps(result, indent=2))
            else:
                _print_summary(result)
    except (FileNotFoundError, ValueError, OSError) as exc:
        print(f"nimare-mnm: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
