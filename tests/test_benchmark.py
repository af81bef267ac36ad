"""The benchmark harness (nimare_mnm.experiments.benchmark) on a small subset of NeuroQuery.

The assertions are ones a broken harness would fail: a planted prediction that knows the
answer must beat a shuffled one, the query-blind average map must score chance exactly, the
frequency prior must score 0.5 per term, the verdicts must follow the intervals, and the
end-to-end runs must score trained rows far above the chance level they report (a harness
that misaligned texts and maps would not).
"""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import requires_data

from nimare_mnm.cli import main
from nimare_mnm.experiments.benchmark import (
    FLOORS,
    MODEL,
    BenchmarkConfig,
    _ci_sentence,
    _comparisons,
    _decoding,
    _pairwise,
    _prepare,
    _vector_row,
    run_benchmark,
)


def test_config_refuses_unknown_rows_and_splits():
    with pytest.raises(ValueError, match="Unknown rows"):
        BenchmarkConfig(rows=["GPT"])
    with pytest.raises(ValueError, match="split"):
        BenchmarkConfig(split="train")
    with pytest.raises(ValueError, match="seed"):
        BenchmarkConfig(seeds=())


@pytest.mark.parametrize(
    "low, high, word",
    [
        (0.01, 0.2, "better than every other row"),
        (-0.1, 0.1, "not distinguishable"),
        (-0.3, -0.01, "worse than"),
    ],
)
def test_verdicts_follow_the_interval(low, high, word):
    comp = {
        "against": "TF-IDF",
        "difference": (low + high) / 2,
        "low": low,
        "high": high,
        "n_boot": 1000,
    }
    assert word in _ci_sentence("map_r", comp)


def test_paired_intervals_against_every_row_and_the_best():
    """The compared row against each other row is a paired bootstrap of per-study
    differences; the verdict's row is the other row with the best mean."""
    rng = np.random.default_rng(0)
    n = 200
    base = rng.normal(size=n)
    per_study = {
        MODEL: base + 0.5,
        "weak": base - 1.0 + 0.1 * rng.normal(size=n),
        "strong": base + 0.4 + 0.1 * rng.normal(size=n),
    }
    results = {
        name: {"per_study": {"map_r": v, "text_to_brain_recall@10": v}}
        for name, v in per_study.items()
    }
    pairwise = _pairwise(results, n, 500)
    for metric in ("map_r", "text_to_brain_recall@10"):
        assert set(pairwise[metric]) == {"weak", "strong"}
        weak, strong = pairwise[metric]["weak"], pairwise[metric]["strong"]
        # Paired: the shared per-study noise cancels, so the intervals are narrow.
        assert 1.4 < weak["low"] < weak["difference"] < weak["high"] < 1.6
        assert 0.05 < strong["low"] < strong["difference"] < strong["high"] < 0.15
    comparisons = _comparisons(results, pairwise)
    assert comparisons["map_r"] == {"against": "strong", **pairwise["map_r"]["strong"]}


@pytest.mark.slow
def test_import_does_not_pull_in_the_experiments():
    code = (
        "import sys, nimare_mnm\n"
        "from nimare_mnm import MNMEncoder, MNMDecoder\n"
        "enc = MNMEncoder.load_pretrained(device='cpu')\n"
        "enc.transform('working memory')\n"
        "dec = MNMDecoder.load_pretrained(device='cpu')\n"
        "dec.transform(enc.transform('finger tapping').get_map('z'))\n"
        # neuroquery's tokenizer is used (it finds the terms the text head reads); the
        # harness is not.
        "heavy = ('nimare_mnm.experiments',)\n"
        "bad = [m for m in sys.modules if m.startswith(heavy)]\n"
        "print('LOADED', bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "LOADED []" in out.stdout


@pytest.fixture(scope="module")
def small(data_dir):
    cfg = BenchmarkConfig(data_dir=str(data_dir), n_studies=600, correlation_decoder_terms=0)
    return cfg, _prepare(cfg)


@requires_data
def test_planted_prediction_beats_shuffled_and_average_map_is_chance(small):
    from nimare_mnm.experiments.floors import AverageMap

    _, data = small
    n = len(data.test.ids)
    assert n == 60 and not set(data.train.ids) & set(data.test.ids)
    planted, _ = _vector_row(data, data.test.brain)  # knows every study's map
    shuffled, _ = _vector_row(data, data.test.brain[np.random.default_rng(0).permutation(n)])
    assert planted["text_to_brain_recall@10"] > 90 and planted["map_r"] > 0.7
    assert shuffled["text_to_brain_recall@10"] < 40
    assert planted["map_r"] > shuffled["map_r"] + 0.4
    assert planted["peak_auc"] > shuffled["peak_auc"]
    average, per_study = _vector_row(data, AverageMap().fit(data.train.brain).predict(n))
    chance = 100.0 * 10 / n
    assert average["text_to_brain_recall@10"] == pytest.approx(chance)
    assert average["brain_to_text_recall@10"] == pytest.approx(chance)
    assert per_study["text_to_brain_recall@10"].mean() == pytest.approx(chance)


@requires_data
def test_frequency_prior_scores_half_per_term(small):
    cfg, data = small
    out = _decoding(data, cfg, decoders=[])
    assert out["rows"]["frequency prior"]["per_term_auc"] == 0.5
    assert out["rows"]["frequency prior"]["per_term_auc_z"] == 0.5
    assert out["n_terms"] == len(data.terms["terms"]) > 20
    assert 0.3 < out["rows"]["plain correlation decoder"]["per_term_auc"] < 1


def _assert_above_chance(run: dict, trained: list[str]) -> None:
    """The query-blind row scores chance; trained rows score far above it.

    A ranking that ignores the query hits the right study in the top 10 of n with
    probability 10 / n: its Recall@10 over n studies has mean 100 * 10 / n and standard
    deviation 100 * sqrt(10 (1 - 10 / n)) / n. Trained rows must be 5 such deviations above.
    """
    n = run["n_scored"]
    chance = run["chance_recall@10"]
    assert chance == pytest.approx(100 * 10 / n)
    random_sd = 100 * np.sqrt(10 * (1 - 10 / n)) / n
    rows = run["rows"]
    average = rows[FLOORS[0]]
    assert average["text_to_brain_recall@10"] == pytest.approx(chance)
    for name in trained:
        recall = rows[name]["text_to_brain_recall@10"]
        assert recall > chance + 5 * random_sd, (name, recall, chance, random_sd)
        assert rows[name]["map_r"] > average["map_r"] + 0.01, name


# 2000 studies: 180 scored, enough for chance (5.6 % Recall@10, sd 1.7) and the floors
# (about 20 %) to be told apart; 500 gave 45, where they were not.
@pytest.mark.slow
@requires_data
def test_run_benchmark_end_to_end(data_dir, tmp_path):
    rows = [*FLOORS, "CLIP (NeuroConText-style)", MODEL]
    cfg = BenchmarkConfig(
        data_dir=str(data_dir),
        split="validation",
        rows=rows,
        seeds=(0, 1),
        n_studies=2000,
        epochs=1,
        correlation_decoder_terms=4,
        n_bootstrap=100,
    )
    run = run_benchmark(cfg, out_dir=tmp_path)
    assert list(run["rows"]) == rows
    for name in rows:
        row = run["rows"][name]
        assert np.isfinite(row["map_r"]) and 0 <= row["text_to_brain_recall@10"] <= 100
        assert row["n_seeds"] == (2 if name in rows[3:] else 1)
    model = run["rows"][MODEL]
    assert len(model["map_r_seeds"]) == 2 and model["map_r_sd"] >= 0
    assert model["map_r"] == pytest.approx(np.mean(model["map_r_seeds"]))
    assert -1 <= model["generality_rho"] <= 1 and 0 <= model["ladders_outward"] <= 8
    assert run["rows"]["CLIP (NeuroConText-style)"]["n_neighbours"] > 0
    for comp in (*run["comparisons"].values(), *run["decoding"]["comparisons"].values()):
        assert comp["low"] <= comp["high"] and comp["n_boot"] == 100
    # Against every other row too; the best other row's interval is the verdict's.
    for metric, comp in run["comparisons"].items():
        assert set(run["pairwise"][metric]) == set(rows) - {MODEL}
        assert run["pairwise"][metric][comp["against"]] == {
            k: v for k, v in comp.items() if k != "against"
        }
    assert run["decoding"]["rows"]["MNMDecoder"]["n_seeds"] == 2
    assert run["decoding"]["costs"]["NiMARE CorrelationDecoder"]["n_terms"] == 4
    assert run["commit"] and run["date"] and run["split"] == "validation"
    # Development runs never overwrite the test split's files.
    saved = json.loads((tmp_path / "quality-validation.json").read_text())
    assert saved["rows"][MODEL]["map_r"] == pytest.approx(model["map_r"])
    assert not (tmp_path / "quality.json").exists()
    # The floors rank and predict far above chance; after one epoch the neural rows do not
    # rank yet, but nimare-mnm's decoder head (fitted in closed form) beats the average map.
    _assert_above_chance(saved, list(FLOORS[1:]))
    assert saved["rows"][MODEL]["map_r"] > saved["rows"][FLOORS[0]]["map_r"] + 0.01
    report = (tmp_path / "quality-validation.md").read_text()
    comp = run["comparisons"]["map_r"]
    assert _ci_sentence("map_r", comp) in report
    decoding = json.loads((tmp_path / "decoding-validation.json").read_text())
    assert decoding["rows"]["frequency prior"]["per_term_auc"] == 0.5 and decoding["commit"]
    assert (tmp_path / "quality-validation.png").stat().st_size > 5000


@pytest.mark.slow
@requires_data
def test_evaluate_command(data_dir, tmp_path, capsys):
    code = main(
        [
            "--quiet",
            "evaluate",
            "--data-dir",
            str(data_dir),
            "--out",
            str(tmp_path),
            "--n-studies",
            "2000",
            "--epochs",
            "1",
            "--seeds",
            "0",
            "--rows",
            "average training map",
            "ridge on frozen MiniLM",
            "MERU",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "MERU" in out and "map r" in out
    saved = json.loads((tmp_path / "quality-validation.json").read_text())
    assert list(saved["rows"]) == ["average training map", "ridge on frozen MiniLM", "MERU"]
    assert saved["settings"]["n_studies"] == 2000 and saved["settings"]["epochs"] == 1
    _assert_above_chance(saved, ["ridge on frozen MiniLM"])


def test_config_names_the_compared_row():
    assert BenchmarkConfig().model == MODEL
    assert BenchmarkConfig(model="nimare-mnm v1").model == "nimare-mnm v1"
    with pytest.raises(ValueError, match="model must be a neural row"):
        BenchmarkConfig(model=FLOORS[0])
