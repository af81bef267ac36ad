"""A disk cache of text embeddings: shards of rows keyed by the SHA-256 of each text.

:class:`~nimare_mnm.text.TextEncoder` keeps one cache folder per model and settings; every
process appends its own shards, so concurrent writers never overwrite each other.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
from pathlib import Path

import numpy as np

from nimare_mnm.utils import atomic_write

LGR = logging.getLogger(__name__)

__all__ = ["EmbeddingCache", "text_hash"]

_KEYS_SUFFIX = ".keys.npy"
_DATA_SUFFIX = ".emb.npy"
_MAX_SHARDS = 16


def text_hash(text: str) -> bytes:
    """SHA-256 hex digest of a text (the cache key of its embedding), as ASCII bytes."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest().encode("ascii")


def _save_array(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda fobj: np.save(fobj, array, allow_pickle=False))


class EmbeddingCache:
    """Embeddings of one model on disk: shards of rows plus the text hashes of each row.

    Each shard is ``NAME.emb.npy`` (float32 rows) and ``NAME.keys.npy`` (SHA-256 hex digests,
    one per row). The keys file is written last, so a shard is visible only once complete, and
    shards have unique names, so concurrent writers never overwrite each other.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._index: dict[bytes, tuple[str, int]] = {}
        self._shards: set[str] = set()

    def _shard_names(self) -> set[str]:
        if not self.folder.is_dir():
            return set()
        return {
            p.name[: -len(_KEYS_SUFFIX)]
            for p in self.folder.iterdir()
            if p.name.endswith(_KEYS_SUFFIX) and not p.name.startswith(".")
        }

    def _refresh(self) -> None:
        names = self._shard_names()
        if self._shards - names:  # a shard went away (merged by another process): rebuild
            self._index.clear()
            self._shards.clear()
        for name in sorted(names - self._shards):
            try:
                keys = np.load(self.folder / f"{name}{_KEYS_SUFFIX}", allow_pickle=False)
            except (OSError, ValueError) as exc:
                LGR.debug("Skipping unreadable cache shard %s: %s", name, exc)
                continue
            self._index.update((key, (name, row)) for row, key in enumerate(keys.tolist()))
            self._shards.add(name)

    def lookup(self, hashes: list[bytes]) -> tuple[np.ndarray | None, np.ndarray]:
        """Return the cached rows (``None`` if none) and a mask of the hashes found."""
        for attempt in range(2):
            self._refresh()
            found = np.zeros(len(hashes), dtype=bool)
            per_shard: dict[str, list[tuple[int, int]]] = {}
            for i, key in enumerate(hashes):
                hit = self._index.get(key)
                if hit is not None:
                    per_shard.setdefault(hit[0], []).append((i, hit[1]))
            if not per_shard:
                return None, found
            out = None
            try:
                for name, pairs in per_shard.items():
                    data = np.load(self.folder / f"{name}{_DATA_SUFFIX}", mmap_mode="r")
                    pairs.sort(key=lambda pair: pair[1])
                    positions = np.fromiter((p[0] for p in pairs), dtype=np.int64)
                    rows = np.fromiter((p[1] for p in pairs), dtype=np.int64)
                    if out is None:
                        out = np.zeros((len(hashes), data.shape[1]), dtype=np.float32)
                    out[positions] = data[rows]
                    found[positions] = True
                    del data
                return out, found
            except (OSError, ValueError, IndexError) as exc:
                LGR.debug("Text cache changed while reading (%s); rescanning.", exc)
                self._index.clear()
                self._shards.clear()
                if attempt:
                    return None, np.zeros(len(hashes), dtype=bool)
        return None, np.zeros(len(hashes), dtype=bool)  # pragma: no cover - loop returns

    def add(self, hashes: list[bytes], vectors: np.ndarray) -> None:
        """Append ``vectors`` (one row per hash) as a new shard."""
        if not hashes:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns():x}-{uuid.uuid4().hex[:8]}"
        _save_array(self.folder / f"{name}{_DATA_SUFFIX}", vectors.astype(np.float32))
        _save_array(self.folder / f"{name}{_KEYS_SUFFIX}", np.array(hashes, dtype="S64"))
        self._index.update((key, (name, row)) for row, key in enumerate(hashes))
        self._shards.add(name)
        if len(self._shard_names()) > _MAX_SHARDS:
            self.compact()

    def compact(self) -> None:
        """Merge all shards into one (the newest row of a duplicated hash wins)."""
        names = sorted(self._shard_names())
        if len(names) < 2:
            return
        merged: dict[bytes, np.ndarray] = {}
        for name in names:
            try:
                keys = np.load(self.folder / f"{name}{_KEYS_SUFFIX}", allow_pickle=False)
                data = np.load(self.folder / f"{name}{_DATA_SUFFIX}", allow_pickle=False)
            except (OSError, ValueError):
                continue
            merged.update(zip(keys.tolist(), data, strict=True))
        if not merged:
            return
        new = f"{time.time_ns():x}-{uuid.uuid4().hex[:8]}"
        _save_array(self.folder / f"{new}{_DATA_SUFFIX}", np.stack(list(merged.values())))
        _save_array(self.folder / f"{new}{_KEYS_SUFFIX}", np.array(list(merged), dtype="S64"))
        for name in names:
            for suffix in (_KEYS_SUFFIX, _DATA_SUFFIX):  # keys first: readers skip the shard
                try:
                    os.unlink(self.folder / f"{name}{suffix}")
                except FileNotFoundError:
                    pass
        self._index.clear()
        self._shards.clear()
        LGR.debug("Merged %d text cache shards into %s.", len(names), new)
