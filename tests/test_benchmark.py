"""The evaluation harness end to end on a small subset of NeuroQuery."""

import json

import numpy as np
import pytest
from conftest import requires_data
from nimare_mnm.benchmark import MODELS, BenchmarkConfig, _markdown, run_benchmark

from nimare_mnm.cli import main

METRICS = [
    "text_to_brain_recall@5",
    "text_to_brain_recall@10",
    "text_to_brain_recall@100",
    "brain_to_text_recall@5",
    "brain_to_text_recall@10",
    "brain_to_text_recall@100",
    "mix_match",
    "map_r",
    "peak_auc",
    "fit_seconds",
]


def test_unknown_model_is_refused():
    with pytest.raises(ValueError, match="Unknown models"):
        run_benchmark(BenchmarkConfig(models=["GPT"]))


def test_markdown_table():
    import pandas as pd

    table = pd.DataFrame({"r": [0.1234, np.nan], "s": [12.0, 3.5]}, index=["a", "b"])
    text = _markdown(table)
    assert text.splitlines()[0] == "| model | r | s |"
    assert "| a | 0.123 | 12.0 |" in text and "n/a" in text


@requires_data
def test_harness_end_to_end(data_dir, tmp_path):
    run = run_benchmark(
        BenchmarkConfig(
            data_dir=str(data_dir),
            n_studies=300,
            epochs=1,
            batch_size=64,
            neuroquery_components=30,
        ),
        out_dir=tmp_path,
    )
    records = {r["model"]: r for r in run["records"]}
    assert list(records) == list(MODELS)
    for name, record in records.items():
        for metric in METRICS:
            assert np.isfinite(record[metric]), (name, metric)
        assert 0 <= record["text_to_brain_recall@10"] <= 100
        assert -1 <= record["map_r"] <= 1 and 0 <= record["peak_auc"] <= 1
    assert run["n_test"] == 30 and run["n_train"] + run["n_validation"] == 270
    # A subset's split differs from the full corpus's, so its test studies may have trained
    # the shipped model; the flag is reported either way (True on the full corpus).
    assert isinstance(run["test_ids_disjoint_from_shipped_model"], bool)
    saved = json.loads((tmp_path / "quality.json").read_text())
    assert [r["model"] for r in saved["records"]] == list(MODELS)
    assert "nimare-mnm without levels" in (tmp_path / "quality.md").read_text()
    assert (tmp_path / "quality.png").stat().st_size > 5000


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
            "200",
            "--epochs",
            "1",
            "--models",
            "nimare-mnm",
            "CLIP (NeuroConText-style)",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "nimare-mnm" in out and "map r" in out
    assert (tmp_path / "quality.json").exists()
