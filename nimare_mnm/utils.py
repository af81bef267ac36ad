"""Locations of data and caches, atomic writes and small helpers shared by every module."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

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


def neighbour_mean(scores, vectors, k: int, max_elements: int = 2**25):
    """Mean of the ``k`` best-scored rows of ``vectors`` for every query, in bounded memory.

    Parameters
    ----------
    scores : :class:`numpy.ndarray`
        (n_queries, n_candidates) scores, higher is nearer.
    vectors : :class:`numpy.ndarray`
        (n_candidates, d) candidate vectors (any float type).
    k : :obj:`int`
        Neighbours per query (at most ``n_candidates``).
    max_elements : :obj:`int`, default=2**25
        Bound on the gathered (queries x k x d) block: gathering every query's neighbours at
        once takes n_queries x k x d values (20 GB for 1,200 queries, 800 neighbours and
        5,285 supervoxels).

    Returns
    -------
    :class:`numpy.ndarray`
        (n_queries, d) float32 means.
    """
    import numpy as np

    scores = np.asarray(scores)
    k = int(min(k, scores.shape[1]))
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}.")
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    out = np.empty((len(scores), vectors.shape[1]), dtype=np.float32)
    step = max(1, max_elements // (k * vectors.shape[1]))
    for start in range(0, len(scores), step):
        block = vectors[top[start : start + step]]
        out[start : start + step] = block.mean(axis=1, dtype=np.float32)
    return out


def ids_digest(ids: Iterable) -> str:
    """SHA-256 of study ids in order (one per line): records which studies a model saw."""
    joined = "\n".join(str(i) for i in ids).encode()
    return hashlib.sha256(joined).hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory descriptors
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[IO], None], *, text: bool = False):
    """Write a file atomically: into a temporary sibling, flushed, then :func:`os.replace`.

    Readers see the old file or the new one, never a part; the file is readable by all
    (0644), as a shared cache must be.

    Parameters
    ----------
    path : path-like
        The file.
    write : callable
        Called with the open temporary file object.
    text : :obj:`bool`, default=False
        Open the file in text mode (UTF-8) instead of binary.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w" if text else "wb", **({"encoding": "utf-8"} if text else {})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


@contextmanager
def atomic_directory(path: str | os.PathLike, *, replace: bool = True) -> Iterator[Path]:
    """Build a folder atomically: yield a temporary sibling that then takes its place.

    Parameters
    ----------
    path : path-like
        The folder.
    replace : :obj:`bool`, default=True
        When ``path`` exists once the build is done: True moves it aside, puts the new
        folder in place and only then deletes the old one (restored if the move fails);
        False keeps the existing folder (another process built the same thing first).

    Yields
    ------
    :class:`pathlib.Path`
        The temporary folder (``.<name>.tmp-<token>``) to write into; it is removed if the
        block raises.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:12]
    tmp = path.parent / f".{path.name}.tmp-{token}"
    old = path.parent / f".{path.name}.old-{token}"
    tmp.mkdir()
    try:
        yield tmp
        _fsync_dir(tmp)
        if path.exists() and not replace:
            return
        moved_aside = False
        if path.exists():
            os.replace(path, old)
            moved_aside = True
        try:
            os.replace(tmp, path)
        except OSError:
            if moved_aside:
                os.replace(old, path)
            elif path.exists() and not replace:
                return  # another process put it there meanwhile: keep theirs
            raise
        _fsync_dir(path.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
