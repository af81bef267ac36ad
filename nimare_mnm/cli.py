"""The ``nimare-mnm`` command line: demo, encode, decode, retrieve, fit, serve and evaluate."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
from pathlib import Path

from nimare_mnm import __version__

LGR = logging.getLogger("nimare_mnm")

DEMO_QUERIES = ("working memory", "finger tapping", "fear conditioning")


# --------------------------------------------------------------------------- helpers
def _stem(text: str) -> str:
    """File-name stem of a query."""
    stem = re.sub(r"[^A-Za-z0-9]+", "_", text.strip()).strip("_").lower()
    return stem[:60] or "query"


def _plot(img, path: Path, title: str, threshold: float = 2.0) -> None:
    """Glass brain of a z map above ``threshold``."""
    import matplotlib

    matplotlib.use("Agg")
    from nilearn import plotting

    display = plotting.plot_glass_brain(
        img, title=title, colorbar=True, plot_abs=False, threshold=threshold, cmap="hot"
    )
    display.savefig(str(path), dpi=80)
    display.close()


def _encoder(args):
    from nimare_mnm import MNMEncoder

    if args.model:
        return MNMEncoder.from_checkpoint(args.model, device=args.device)
    return MNMEncoder.load_pretrained(device=args.device)


def _decoder(args):
    from nimare_mnm import MNMDecoder

    if args.model:
        return MNMDecoder.from_checkpoint(args.model, device=args.device)
    return MNMDecoder.load_pretrained(device=args.device)


def _encode_queries(encoder, queries, out: Path, plot: bool = True) -> dict:
    """Write each query's maps (NIfTI, PNG) and return a summary per query."""
    out.mkdir(parents=True, exist_ok=True)
    results = encoder.transform(list(queries))
    summary = {}
    for query, res in zip(queries, results):
        stem = _stem(query)
        files = {}
        for name in res.maps:
            path = out / f"{stem}_{name}.nii.gz"
            res.get_map(name).to_filename(path)
            files[name] = str(path)
        table = res.tables["levels"]
        table.to_csv(out / f"{stem}_levels.tsv", sep="\t", index=False)
        if plot:
            _plot(res.get_map("z"), out / f"{stem}_z.png", query)
            files["png"] = str(out / f"{stem}_z.png")
        best = {
            level: table[table["level"] == level].nsmallest(3, "rank")["region"].tolist()
            for level in encoder.region_names_
        }
        info = res.tables["query"].iloc[0]
        summary[query] = {
            "radius": round(float(info["radius"]), 3),
            "generality": round(float(info["generality"]), 3),
            "confidence": round(float(info["confidence"]), 3),
            "terms": info["terms"],
            "strongest_regions": best,
            "files": files,
        }
    return summary


def _decode_table(decoder, img, k: int, sign: str = "positive") -> dict:
    table = decoder.transform(img, sign=sign)
    rows = [
        {
            "term": term,
            "score": round(float(row.score), 4),
            "radius": round(float(row.radius), 3),
            "generality": round(float(row.generality), 3),
            "region": f"{row.level}:{row.region}",
        }
        for term, row in table.head(k).iterrows()
    ]
    return {"coverage": round(table.attrs["coverage"], 4), "sign": sign, "terms": rows}


def _int_at_least(minimum: int):
    """Return an argparse type that accepts integers no smaller than ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


positive_int = _int_at_least(1)
non_negative_int = _int_at_least(0)


# --------------------------------------------------------------------------- commands
def _demo(args) -> dict:
    """Pretrained model, offline: maps for a few queries and a decoded motor map."""
    from nilearn.datasets import load_sample_motor_activation_image

    from nimare_mnm import MNMDecoder

    t0 = time.perf_counter()
    out = Path(args.out)
    decoder = (
        MNMDecoder.from_checkpoint(args.model, device=args.device)
        if args.model
        else MNMDecoder.load_pretrained(device=args.device)
    )
    queries = _encode_queries(decoder.encoder_, args.queries, out)
    motor = load_sample_motor_activation_image()
    result = {
        "queries": queries,
        "decoded": {"nilearn motor activation map": _decode_table(decoder, motor, 10)},
    }
    if args.data_dir:
        # With the corpus: the first query's 50 nearest studies, meta-analysed with ALE.
        from nimare.meta.cbma import ALE

        from nimare_mnm.encoder import fit_meta_analysis

        query = args.queries[0]
        studies = decoder.encoder_.retrieve(query, k=50, data_dir=args.data_dir)
        ale = fit_meta_analysis(ALE(kernel__fwhm=10), studies)
        path = out / f"{_stem(query)}_retrieved50_ale_z.nii.gz"
        ale.get_map("z").to_filename(path)
        _plot(ale.get_map("z"), out / f"{_stem(query)}_retrieved50_ale_z.png", f"{query}: ALE")
        result["meta_analysis"] = {"estimator": "ale (50 retrieved studies)", "z_map": str(path)}
    result["out"] = str(out)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


def _encode(args) -> dict:
    return {"queries": _encode_queries(_encoder(args), args.texts, Path(args.out), args.plot)}


def _decode(args) -> dict:
    decoder = _decoder(args)
    out = {"decoded": {str(args.img): _decode_table(decoder, args.img, args.k, args.sign)}}
    if args.studies:
        studies = decoder.decode_studies(args.img, k=args.studies, sign=args.sign)
        out["studies"] = [
            {"id": sid, "score": round(float(s), 4)} for sid, s in studies["score"].items()
        ]
    return out


def _retrieve(args) -> dict:
    import numpy as np

    encoder = _encoder(args)
    top = encoder.retrieve(args.text, k=args.k, data_dir=args.data_dir)
    ids = np.asarray(top.study_ids).astype(str)
    score = np.asarray(top.get_metadata(field="mnm_score"), dtype=float)
    titles = (
        top.get_metadata(field="title") if "title" in top.metadata.columns else [""] * len(ids)
    )
    rows = sorted(
        (
            {"id": i, "score": round(float(s), 4), "title": str(t)}
            for i, s, t in zip(ids, score, titles)
        ),
        key=lambda r: -r["score"],
    )
    out = {"query": args.text, "studies": rows}
    if args.meta_analysis:
        from nimare.meta.cbma import ALE, MKDADensity

        from nimare_mnm.encoder import fit_meta_analysis

        estimator = ALE(kernel__fwhm=10) if args.meta_analysis == "ale" else MKDADensity()
        result = fit_meta_analysis(estimator, top)
        folder = Path(args.out)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{_stem(args.text)}_{args.meta_analysis}_z.nii.gz"
        result.get_map("z").to_filename(path)
        _plot(result.get_map("z"), path.with_suffix("").with_suffix(".png"), args.text)
        out["meta_analysis"] = {"estimator": args.meta_analysis, "z_map": str(path)}
    return out


def _fit(args) -> dict:
    import numpy as np

    from nimare_mnm import MNMDecoder, MNMEncoder, load_neuroquery
    from nimare_mnm.evaluation import protocol_split

    studyset = load_neuroquery(args.data_dir)
    ids = np.unique(np.asarray(studyset.study_ids).astype(str))
    if args.exclude_test:
        ids, _ = protocol_split(ids)
    if args.n_studies:
        ids = np.random.default_rng(args.seed).permutation(np.sort(ids))[: args.n_studies]
    studyset = studyset.filter_study_ids(list(ids))
    encoder = MNMEncoder(
        preset=args.preset,
        epochs=args.epochs,
        data_dir=args.data_dir,
        device=args.device,
        seed=args.seed,
    ).fit(studyset)
    encoder.training_["corpus"] = "neuroquery"
    decoder = MNMDecoder(encoder=encoder).fit(studyset)
    path = decoder.save_checkpoint(args.out)
    return {
        "model": str(path),
        "n_studies": encoder.training_["n_studies"],
        "best_val_recall_at_10": encoder.training_["best_val_recall_at_10"],
        "fit_seconds": round(encoder.training_["fit_seconds"], 1),
    }


def _serve(args) -> dict:
    from nimare_mnm.web import serve

    serve(
        model=args.model,
        data_dir=args.data_dir,
        host=args.host,
        port=args.port,
        device=args.device,
        n_studies=args.studies,
        log_level="warning" if args.quiet else "info",
    )
    return {}


def _evaluate(args) -> dict:
    try:
        from nimare_mnm.experiments.benchmark import BenchmarkConfig, run_benchmark
    except ImportError as exc:  # the neuroquery package is an optional extra
        raise RuntimeError(
            f"The evaluation needs the benchmark extra ({exc}): pip install "
            '"nimare-mnm[benchmark]"'
        ) from exc

    rows = {"rows": args.rows} if args.rows else {}
    config = BenchmarkConfig(
        data_dir=args.data_dir,
        split=args.split,
        seeds=tuple(args.seeds),
        **rows,
        n_studies=args.n_studies,
        epochs=args.epochs,
        device=args.device,
    )
    run = run_benchmark(config, out_dir=args.out)
    return {"rows": run["rows"], "out": str(args.out)}


def _print(result: dict) -> None:
    for query, res in result.get("queries", {}).items():
        terms = res["terms"] or "none"
        print(
            f"{query!r}: radius {res['radius']} (generality {res['generality']}), "
            f"confidence {res['confidence']} "
            f"(recognised terms: {terms})"
        )
        for level, regions in res["strongest_regions"].items():
            print(f"  strongest {level}: {', '.join(regions)}")
        if "z" in res["files"]:
            print(f"  map: {res['files']['z']}")
    for name, decoded in result.get("decoded", {}).items():
        print(
            f"decoded {name} ({decoded['sign']} part; data on "
            f"{100 * decoded['coverage']:.0f} % of the brain):"
        )
        for row in decoded["terms"]:
            print(
                f"  {row['score']:8.4f}  {row['term']:<30s} radius {row['radius']:.2f}"
                f"  {row['region']}"
            )
    for row in result.get("studies", []):
        print(f"  {row['score']:8.4f}  {row['id']}  {row.get('title', '')[:80]}")
    if "meta_analysis" in result:
        print(f"{result['meta_analysis']['estimator']} z map: {result['meta_analysis']['z_map']}")
    for name, row in result.get("rows", {}).items():
        print(
            f"{name:<32s} text->brain R@10 {row['text_to_brain_recall@10']:5.1f} %  "
            f"map r {row['map_r']:.3f}"
        )
    for key in ("model", "out", "seconds"):
        if key in result:
            print(f"{key}: {result[key]}")


# --------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of the ``nimare-mnm`` command."""
    data_default = os.environ.get("NIMARE_MNM_DATA") or None  # unset or empty: none
    parser = argparse.ArgumentParser(
        prog="nimare-mnm",
        description="Multi-level neuroimaging meta-analysis with hyperbolic brain-text "
        "representations, for NiMARE.",
    )
    parser.add_argument("--version", action="version", version=f"nimare-mnm {__version__}")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="random seed")
    parser.add_argument(
        "--model", default=None, help="checkpoint folder (default: the pretrained model)"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="pretrained model, offline: maps and a decoded map")
    demo.add_argument("-o", "--out", default="nimare_mnm_demo", help="output folder")
    demo.add_argument(
        "--data-dir",
        default=None,
        help="folder with neuroquery/: also retrieve studies for the first query and run ALE",
    )
    demo.add_argument("queries", nargs="*", default=list(DEMO_QUERIES), help="text queries")

    enc = sub.add_parser("encode", help="predict brain maps for texts")
    enc.add_argument("texts", nargs="+", help="text queries")
    enc.add_argument("-o", "--out", required=True, help="output folder")
    enc.add_argument("--no-plot", dest="plot", action="store_false", help="skip the PNGs")

    dec = sub.add_parser("decode", help="rank terms (and studies) for a brain map")
    dec.add_argument("img", help="NIfTI statistical map in MNI space")
    dec.add_argument("-k", type=positive_int, default=20, help="terms shown")
    dec.add_argument(
        "--sign",
        choices=("positive", "negative", "absolute"),
        default="positive",
        help="part of a signed map to decode (default: the activations)",
    )
    dec.add_argument(
        "--studies", type=non_negative_int, default=0, help="also list this many studies"
    )

    ret = sub.add_parser("retrieve", help="studies most related to a text, then ALE/MKDA")
    ret.add_argument("text", help="text query")
    ret.add_argument("--data-dir", default=data_default, help="folder with neuroquery/")
    ret.add_argument("-k", type=positive_int, default=50, help="number of studies")
    ret.add_argument("--meta-analysis", choices=("ale", "mkda"), help="run it on the studies")
    ret.add_argument("-o", "--out", default=".", help="output folder of the meta-analysis")

    fit = sub.add_parser("fit", help="train a model on NeuroQuery")
    fit.add_argument("--data-dir", default=data_default, help="folder with neuroquery/")
    fit.add_argument("-o", "--out", required=True, help="checkpoint folder to write")
    fit.add_argument(
        "--preset",
        default="nimare-mnm",
        help=(
            "nimare-mnm (default), nimare-mnm-v2.1, nimare-mnm-v2, nimare-mnm-v1, "
            "nimare-mnm-cones, mnm, meru or clip"
        ),
    )
    fit.add_argument("--epochs", type=positive_int, default=40, help="training epochs")
    fit.add_argument(
        "--exclude-test", action="store_true", help="leave out the protocol's test split"
    )
    fit.add_argument(
        "--n-studies", type=non_negative_int, default=0, help="random subset (quick check)"
    )

    srv = sub.add_parser(
        "serve",
        help="a local web page: type a query, see its map; upload a map, see its terms",
        description="Serve the web app (needs the web extra: pip install 'nimare-mnm[web]'). "
        "It listens on this machine only unless --host says otherwise.",
    )
    srv.add_argument(
        "--data-dir",
        default=data_default,
        help="folder with neuroquery/ (and neurosynth/): also list and download studies",
    )
    srv.add_argument("--host", default="127.0.0.1", help="address (default: this machine only)")
    srv.add_argument(
        "--port", type=non_negative_int, default=0, help="port (default 0: a free port)"
    )
    srv.add_argument(
        "--studies", type=positive_int, default=20, help="studies listed per query or map"
    )

    ev = sub.add_parser(
        "evaluate", help="the benchmark: every row on the protocol's split, seeds, intervals"
    )
    ev.add_argument("--data-dir", default=data_default, help="folder with neuroquery/")
    ev.add_argument("--out", required=True, help="folder for quality.json/md/png")
    ev.add_argument(
        "--split",
        choices=("validation", "test"),
        default="validation",
        help="scored split (default validation; score the test split once, at the end)",
    )
    ev.add_argument("--seeds", type=non_negative_int, nargs="+", default=[0, 1, 2])
    ev.add_argument(
        "--n-studies", type=positive_int, default=None, help="random subset (quick check)"
    )
    ev.add_argument(
        "--epochs", type=positive_int, default=None, help="cap on the epochs (quick check)"
    )
    ev.add_argument("--rows", nargs="*", default=None, help="subset of the rows")
    return parser


COMMANDS = {
    "demo": _demo,
    "encode": _encode,
    "decode": _decode,
    "retrieve": _retrieve,
    "fit": _fit,
    "serve": _serve,
    "evaluate": _evaluate,
}


def main(argv: list[str] | None = None) -> int:
    """Run the ``nimare-mnm`` command line."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s"
    )
    for noisy in ("nimare", "nilearn", "sentence_transformers", "transformers", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.quiet:
        os.environ.setdefault("TQDM_DISABLE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        except ImportError:  # pragma: no cover - transformers is a dependency
            pass
    import numpy as np
    import torch

    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    try:
        for text in [*getattr(args, "queries", []), *getattr(args, "texts", [])]:
            if not text.strip():
                raise ValueError("queries must not be empty")
        if getattr(args, "text", None) is not None and not args.text.strip():
            raise ValueError("the query must not be empty")
        result = COMMANDS[args.command](args)
    except (FileNotFoundError, ValueError, TypeError, OSError, RuntimeError, ImportError) as exc:
        print(f"nimare-mnm: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        _print(result)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
