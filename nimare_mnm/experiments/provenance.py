"""Where a result came from: the commit and date it was measured at, and the machine."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path

__all__ = ["provenance"]


def _git(*args: str, cwd: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args],
            capture_output=True,
            text=True,
            cwd=cwd,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def provenance(repo: str | os.PathLike | None = None) -> dict:
    """Commit, whether the work tree had uncommitted changes, UTC date and machine.

    Every results file of the benchmarks records this, so a figure can be traced to the code
    that measured it.

    Parameters
    ----------
    repo : path-like, optional
        A folder of the git checkout; default: the one this package is imported from.

    Returns
    -------
    :obj:`dict`
        ``commit`` (full hash, None outside a git checkout), ``dirty`` (True when tracked
        files other than ``benchmarks/results`` differed from that commit; None when
        unknown), ``date`` (ISO 8601, UTC) and
        ``machine`` (architecture, number of CPUs, torch version when installed).
    """
    import importlib.util

    cwd = Path(repo) if repo is not None else Path(__file__).parent

    # Results files are what the benchmarks write, not code: a run after another one that
    # rewrote its own results file has still measured the committed code.
    status = _git(
        "status",
        "--porcelain",
        "--untracked-files=no",
        "--",
        ":/",
        ":(top,exclude)benchmarks/results",
        cwd=cwd,
    )
    torch_version = None
    if importlib.util.find_spec("torch") is not None:
        import torch

        torch_version = torch.__version__
    return {
        "commit": _git("rev-parse", "HEAD", cwd=cwd),
        "dirty": (
            None if status is None and _git("rev-parse", "HEAD", cwd=cwd) is None else bool(status)
        ),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch_version}",
    }
