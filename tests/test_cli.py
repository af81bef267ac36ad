"""The nimare-mnm command line: every command's happy path and its user-error path."""

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from conftest import requires_data

from nimare_mnm import __version__
from nimare_mnm.cli import main
from nimare_mnm.encoder import PRETRAINED_DIR

needs_pretrained = pytest.mark.skipif(
    not (PRETRAINED_DIR / "config.json").exists(), reason="pretrained model not built"
)


def run_json(capsys, argv):
    code = main(["--quiet", "--json", *argv])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def one_line_error(capsys, argv, match):
    code = main(["--quiet", *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("nimare-mnm: error:") and match in err, err
    assert "Traceback" not in err and len(err.splitlines()) == 1


def test_version_and_help():
    out = subprocess.run(
        [sys.executable, "-m", "nimare_mnm.cli", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout.strip() == f"nimare-mnm {__version__}"
    out = subprocess.run(
        [sys.executable, "-m", "nimare_mnm.cli", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0
    for command in ("demo", "encode", "decode", "retrieve", "fit", "evaluate"):
        assert command in out.stdout


def test_command_line_answers_without_the_heavy_imports():
    # --help, --version and usage errors must not pay for torch, NiMARE or nilearn
    # (benchmarks/bench_cli.py records how fast they answer).
    code = (
        "import sys, nimare_mnm, nimare_mnm.cli\n"
        "heavy = ('torch', 'nimare', 'nilearn', 'sklearn', 'transformers', 'pandas')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & set(heavy)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr
    submodule = "import nimare_mnm; print(nimare_mnm.atlases.load_mask.__name__)"
    out = subprocess.run([sys.executable, "-c", submodule], capture_output=True, text=True)
    assert out.stdout.strip() == "load_mask", out.stderr  # submodules still resolve
    # The public names still resolve, on first use.
    from nimare_mnm import MNMEncoder as Lazy
    from nimare_mnm.encoder import MNMEncoder

    assert Lazy is MNMEncoder
    with pytest.raises(AttributeError, match="no attribute 'Encoder'"):
        import nimare_mnm

        nimare_mnm.Encoder  # noqa: B018


@pytest.mark.parametrize(
    "argv, message",
    [
        (["decode", "map.nii.gz", "-k", "0"], "argument -k: must be at least 1, got 0"),
        (["decode", "map.nii.gz", "-k", "ten"], "argument -k: expected an integer, got 'ten'"),
        (["decode", "map.nii.gz", "--studies", "-1"], "must be at least 0"),
        (["decode", "map.nii.gz", "--sign", "both"], "invalid choice"),
        (["retrieve", "fear", "-k", "0"], "argument -k: must be at least 1"),
        (["fit", "-o", "m", "--epochs", "0"], "argument --epochs: must be at least 1"),
        (["fit", "-o", "m", "--n-studies", "-5"], "must be at least 0"),
        (["--seed", "-1", "encode", "x", "-o", "o"], "argument --seed: must be at least 0"),
        (["evaluate", "--out", "o", "--seeds", "0", "-2"], "argument --seeds"),
        (["evaluate", "--out", "o", "--epochs", "0"], "argument --epochs: must be at least 1"),
    ],
)
def test_numeric_options_are_checked_by_the_parser(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@needs_pretrained
def test_demo_offline(tmp_path, capsys):
    result = run_json(capsys, ["demo", "-o", str(tmp_path), "finger tapping"])
    files = result["queries"]["finger tapping"]["files"]
    img = nib.load(files["z"])
    assert img.shape == (91, 109, 91) and np.isfinite(img.get_fdata()).all()
    assert (tmp_path / "finger_tapping_z.png").stat().st_size > 1000
    decoded = result["decoded"]["nilearn motor activation map"]
    assert 0.9 < decoded["coverage"] <= 1 and decoded["sign"] == "positive"
    terms = decoded["terms"]
    assert len(terms) == 10 and all("generality" in t for t in terms)


@needs_pretrained
def test_encode_and_decode(tmp_path, capsys):
    result = run_json(capsys, ["encode", "visual motion", "-o", str(tmp_path), "--no-plot"])
    z_map = result["queries"]["visual motion"]["files"]["z"]
    assert (tmp_path / "visual_motion_levels.tsv").exists()
    decoded = run_json(capsys, ["decode", z_map, "-k", "5", "--studies", "3"])
    assert len(decoded["decoded"][z_map]["terms"]) == 5 and len(decoded["studies"]) == 3
    assert decoded["decoded"][z_map]["coverage"] == 1.0  # the prediction covers the brain
    negative = run_json(capsys, ["decode", z_map, "-k", "5", "--sign", "negative"])
    assert negative["decoded"][z_map]["sign"] == "negative"
    # The negative part is the decoding of the negated map, through the Python API.
    from nimare_mnm import MNMDecoder

    img = nib.load(z_map)
    flipped = nib.Nifti1Image(-img.get_fdata(), img.affine)
    expected = MNMDecoder.load_pretrained(device="cpu").transform(flipped).index[:5]
    assert [t["term"] for t in negative["decoded"][z_map]["terms"]] == list(expected)
    one_line_error(capsys, ["encode", "  ", "-o", str(tmp_path)], "empty")
    one_line_error(capsys, ["decode", str(tmp_path / "missing.nii.gz")], "No image")
    flat = tmp_path / "flat.nii.gz"
    nib.Nifti1Image(np.zeros((91, 109, 91), np.float32), np.diag([-2, 2, 2, 1])).to_filename(flat)
    one_line_error(capsys, ["decode", str(flat)], "MNI")


@needs_pretrained
def test_retrieve_needs_the_data_dir(monkeypatch, capsys):
    monkeypatch.delenv("NIMARE_MNM_DATA", raising=False)
    one_line_error(capsys, ["retrieve", "fear", "-k", "5"], "data_dir")


def test_fit_missing_data_is_one_clear_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("nimare_mnm.datasets._fetch_neuroquery", _offline)
    one_line_error(
        capsys, ["fit", "--data-dir", str(tmp_path), "-o", str(tmp_path / "m")], "neuroquery"
    )


def _offline(**kwargs):
    raise OSError("no network")


@requires_data
@needs_pretrained
def test_retrieve_and_meta_analysis(tmp_path, data_dir, capsys):
    result = run_json(
        capsys,
        [
            "retrieve",
            "fear conditioning",
            "--data-dir",
            str(data_dir),
            "-k",
            "15",
            "--meta-analysis",
            "mkda",
            "-o",
            str(tmp_path),
        ],
    )
    assert len(result["studies"]) == 15
    scores = [s["score"] for s in result["studies"]]
    assert scores == sorted(scores, reverse=True)
    assert nib.load(result["meta_analysis"]["z_map"]).get_fdata().max() > 0


@pytest.mark.slow
@requires_data
def test_fit_small_model_then_use_it(tmp_path, data_dir, capsys):
    model = tmp_path / "model"
    result = run_json(
        capsys,
        [
            "fit",
            "--data-dir",
            str(data_dir),
            "-o",
            str(model),
            "--epochs",
            "2",
            "--n-studies",
            "300",
            "--exclude-test",
        ],
    )
    assert result["n_studies"] == 300 and (model / "config.json").exists()
    encoded = run_json(
        capsys, ["--model", str(model), "encode", "memory", "-o", str(tmp_path), "--no-plot"]
    )
    assert "memory" in encoded["queries"]


@pytest.mark.slow
@requires_data
@needs_pretrained
def test_demo_with_corpus(tmp_path, data_dir, capsys):
    result = run_json(
        capsys, ["demo", "-o", str(tmp_path), "--data-dir", str(data_dir), "fear conditioning"]
    )
    z_map = nib.load(result["meta_analysis"]["z_map"]).get_fdata()
    assert np.isfinite(z_map).all() and z_map.max() > 3
