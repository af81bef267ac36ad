"""Locations of data and caches, shared by every nimare-mnm module."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

DATA_ENV = "NIMARE_MNM_DATA"
CACHE_ENV = "NIMARE_MNM_CACHE"


def get_data_dir(data_dir: str | os.PathLike | None = None) -> str | None:
    """Resolve the data directory that holds NiMARE-style database folders.

    Parameters
    ----------
    data_dir : :obj:`str` or :obj:`os.PathLike`, optional
        Explicit data directory. Takes precedence over everything else.

    Returns
    -------
    :obj:`str` or None
        ``data_dir`` if given, else the ``NIMARE_MNM_DATA`` environment variable, else None,
        which lets NiMARE apply its own defaults (``NIMARE_SHARED_DATA``, ``NIMARE_DATA``,
        then ``~/.nimare``).
    """
    if data_dir is not None:
        return os.fspath(Path(data_dir).expanduser())
    env = os.environ.get(DATA_ENV)
    if env:
        return os.fspath(Path(env).expanduser())
    return None


def get_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Return a writable cache directory, creating it if needed.

    Parameters
    ----------
    cache_dir : :obj:`str` or :obj:`os.PathLike`, optional
        Explicit cache directory. Defaults to ``NIMARE_MNM_CACHE``, then
        ``$XDG_CACHE_HOME/nimare_mnm`` (``~/.cache/nimare_mnm``).

    Returns
    -------
    :obj:`pathlib.Path`
        The cache directory. Data directories are never written to: they may be read-only.
    """
    if cache_dir is None:
        cache_dir = os.environ.get(CACHE_ENV)
    if cache_dir is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
        cache_dir = os.path.join(base, "nimare_mnm")
    path = Path(cache_dir).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(
            f"The nimare-mnm cache directory {path} cannot be created ({exc}). "
            f"Set {CACHE_ENV} or pass cache_dir= to a writable folder."
        ) from exc
    return path


def file_fingerprint(paths: list[str | os.PathLike], *extra: object) -> str:
    """Hash file names, sizes and modification times (and extra values) into a cache key.

    Parameters
    ----------
    paths : :obj:`list` of path-like
        Files whose identity defines the cached result.
    *extra
        Further values (options, format versions) that change the result.

    Returns
    -------
    :obj:`str`
        A 16-character hexadecimal key.
    """
    digest = hashlib.sha256()
    for path in sorted(os.fspath(p) for p in paths):
        stat = os.stat(path)
        digest.update(f"{os.path.basename(path)}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    for value in extra:
        digest.update(repr(value).encode())
    return digest.hexdigest()[:16]
