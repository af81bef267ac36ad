"""The built wheel carries what an offline user needs: the pretrained model and the web app."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_contains_the_model_and_the_web_assets(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = tmp_path.glob("nimare_mnm-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    pretrained = {p.name for p in (REPO / "nimare_mnm" / "data" / "pretrained").iterdir()}
    assert {"config.json", "model.safetensors"} <= pretrained
    for name in pretrained:
        assert f"nimare_mnm/data/pretrained/{name}" in names
    for path in (REPO / "nimare_mnm" / "web").rglob("*"):
        if path.is_file() and path.suffix in {".py", ".html", ".css"}:
            assert path.relative_to(REPO).as_posix() in names
    # Nothing that belongs to the repository only.
    assert not any(n.startswith(("tests/", "benchmarks/", "docs/", "examples/")) for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "nimare-mnm = nimare_mnm.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
