import subprocess
import sys

import nibabel as nib
import numpy as np
from conftest import requires_data

from nimare_mnm import __version__
from nimare_mnm.cli import main


def test_version_and_help(capsys):
    out = subprocess.run(
        [sys.executable, "-m", "nimare_mnm.cli", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout.strip() == f"nimare-mnm {__version__}"
    out = subprocess.run(
        [sys.executable, "-m", "nimare_mnm.cli", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "demo" in out.stdout


def test_demo_missing_data_is_one_clear_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("nimare_mnm.datasets._fetch_neuroquery", _offline)
    code = main(["--quiet", "demo", "--data-dir", str(tmp_path), "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("nimare-mnm: error:") and "neuroquery" in err
    assert "Traceback" not in err and len(err.splitlines()) == 1


def test_demo_empty_query(tmp_path, capsys):
    code = main(["demo", "--data-dir", str(tmp_path), "  "])
    assert code == 2 and "empty" in capsys.readouterr().err


def _offline(**kwargs):
    raise OSError("no network")


@requires_data
def test_demo_on_real_data(tmp_path, data_dir, capsys):
    code = main(
        [
            "--quiet",
            "--json",
            "demo",
            "--data-dir",
            str(data_dir),
            "-o",
            str(tmp_path),
            "-k",
            "10",
            "--n-studies",
            "300",
            "finger tapping",
        ]
    )
    assert code == 0
    img = nib.load(tmp_path / "finger_tapping.nii.gz")
    data = img.get_fdata()
    assert img.shape == (91, 109, 91) and np.isfinite(data).all() and data.max() > 0
    assert (tmp_path / "finger_tapping.png").stat().st_size > 1000
    assert "Somatomotor" in capsys.readouterr().out
