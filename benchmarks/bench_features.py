"""Benchmark the foundation: corpus loading, density maps, text embeddings, brain vectors.

Writes ``benchmarks/results/features.json`` with the commit, date and machine it ran at
(:func:`nimare_mnm.experiments.provenance.provenance`). Each stage runs in its own process so
that its peak memory (max resident set size) is its own.

Usage::

    python benchmarks/bench_features.py --data-dir ../shared/data
"""

import argparse
import json
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def _peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def stage_load(data_dir, cache_dir, queue):
    from nimare_mnm import load_neuroquery

    t0 = time.perf_counter()
    ss = load_neuroquery(data_dir, cache_dir=cache_dir)
    queue.put(
        {
            "load_seconds": time.perf_counter() - t0,
            "load_peak_mb": _peak_mb(),
            "n_studies": len(ss.study_ids),
            "n_peaks": len(ss.coordinates),
        }
    )


def stage_load_cached(data_dir, cache_dir, queue):
    from nimare_mnm import load_neuroquery

    t0 = time.perf_counter()
    load_neuroquery(data_dir, cache_dir=cache_dir)
    queue.put({"load_cached_seconds": time.perf_counter() - t0, "load_cached_peak_mb": _peak_mb()})


def stage_density(data_dir, cache_dir, queue):
    from nimare_mnm import load_neuroquery
    from nimare_mnm.densities import PeakDensity
    from nimare_mnm.vectorizer import BrainVectorizer

    ss = load_neuroquery(data_dir, cache_dir=cache_dir, annotations=False)
    vec = BrainVectorizer(data_dir=data_dir).fit()
    before = _peak_mb()
    t0 = time.perf_counter()
    ids, vectors = PeakDensity().transform(ss, reduce=vec.transform)
    seconds = time.perf_counter() - t0
    queue.put(
        {
            "density_seconds": seconds,
            "density_peak_mb": _peak_mb(),
            "density_peak_mb_before_stage": before,
            "density_n_studies": len(ids),
            "brain_vector_dim": int(vec.n_components_),
            "vectors_finite": bool(np.isfinite(vectors).all()),
        }
    )


def stage_density_sparse(data_dir, cache_dir, queue):
    """Every voxel map of the corpus kept, as one sparse matrix."""
    from nimare_mnm import load_neuroquery
    from nimare_mnm.densities import PeakDensity

    ss = load_neuroquery(data_dir, cache_dir=cache_dir, annotations=False)
    t0 = time.perf_counter()
    _, sparse = PeakDensity().transform(ss)
    queue.put(
        {
            "density_sparse_seconds": time.perf_counter() - t0,
            "density_sparse_peak_mb": _peak_mb(),
            "density_sparse_nnz": int(sparse.nnz),
            "density_sparse_mb": (sparse.data.nbytes + sparse.indices.nbytes) / 2**20,
        }
    )


def stage_reconstruction(data_dir, cache_dir, queue, n_sample=1000):
    from nimare_mnm import load_neuroquery
    from nimare_mnm.atlases import BrainLevels
    from nimare_mnm.densities import PeakDensity
    from nimare_mnm.vectorizer import BrainVectorizer

    ss = load_neuroquery(data_dir, cache_dir=cache_dir, annotations=False)
    rng = np.random.default_rng(0)
    pick = np.sort(rng.choice(len(ss.ids), n_sample, replace=False))
    _, maps = PeakDensity().transform(ss.slice(ids=np.asarray(ss.ids)[pick]))
    maps = maps.toarray()
    levels = BrainLevels(data_dir).fit()

    def pearson(a, b):
        a = a - a.mean(1, keepdims=True)
        b = b - b.mean(1, keepdims=True)
        return (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))

    out = {}
    candidates = {
        "blocks12 (default)": {},
        "blocks10": {"block_mm": 10.0},
        "schaefer1000+blocks8": {"parcellation": "schaefer1000", "block_mm": 8.0},
    }
    for name, kwargs in candidates.items():
        vec = BrainVectorizer(data_dir=data_dir, **kwargs).fit(levels)
        codes = vec.transform(maps)
        r_smooth = pearson(maps, vec.inverse_transform(codes))
        r_raw = pearson(maps, vec.inverse_transform(codes, smooth=False))
        out[name] = {
            "dim": int(vec.n_components_),
            "r_mean": float(r_smooth.mean()),
            "r_median": float(np.median(r_smooth)),
            "r_raw_mean": float(r_raw.mean()),
        }
    queue.put(
        {
            "reconstruction_r_mean": out["blocks12 (default)"]["r_mean"],
            "reconstruction_n_studies": n_sample,
            "reconstruction_candidates": out,
        }
    )


def stage_text(data_dir, cache_dir, queue, n_texts=1000):
    from nimare_mnm import load_neuroquery
    from nimare_mnm.datasets import study_texts
    from nimare_mnm.text import TextEncoder

    texts = list(
        study_texts(load_neuroquery(data_dir, cache_dir=cache_dir, annotations=False)).iloc[
            :n_texts
        ]
    )
    enc = TextEncoder(cache=True, cache_dir=Path(cache_dir) / "text")
    enc.encode(texts[:8])  # load the model outside the timing
    t0 = time.perf_counter()
    emb = enc.encode(texts)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    enc.encode(texts)
    cached = time.perf_counter() - t0
    queue.put(
        {
            "text_embed_per_second": n_texts / cold,
            "text_embed_cached_per_second": n_texts / cached,
            "text_n": n_texts,
            "text_dim": int(emb.shape[1]),
            "text_mean_chars": float(np.mean([len(t) for t in texts])),
            "text_device": str(enc.device_),
        }
    )


def run(stage, *args):
    queue = mp.get_context("spawn").Queue()
    proc = mp.get_context("spawn").Process(target=stage, args=(*args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", default=os.environ.get("NIMARE_MNM_DATA", "../shared/data"))
    parser.add_argument("--out", default=str(RESULTS / "features.json"))
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    cache_dir = tempfile.mkdtemp(prefix="nimare_mnm_bench_")
    result = {}
    stages = (
        stage_load,
        stage_load_cached,
        stage_density,
        stage_density_sparse,
        stage_reconstruction,
        stage_text,
    )
    for stage in stages:
        print(f"running {stage.__name__} ...", flush=True)
        result.update(run(stage, args.data_dir, cache_dir))
    # Imported here: the stages' processes re-import this module, and must measure their
    # own imports.
    from nimare_mnm.experiments.provenance import provenance

    result["python"] = sys.version.split()[0]
    result.update(provenance())  # commit, dirty, date, machine
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
