"""What a prediction returns: per-region statistics and level maps computed on demand.

:class:`RegionStatistics` turns whole-brain z maps into the ``"levels"`` table of each
result (mean, sd and peak z per region of every level).

:meth:`MNMEncoder.transform <nimare_mnm.MNMEncoder.transform>` returns one
:class:`nimare.results.MetaResult` per query. Its whole-brain ``"z"`` map is computed at once;
the ``"z_level-<level>"`` maps (the same prediction z-scored within each region of a level)
follow from it and from the region means and standard deviations in the result's
``"levels"`` table, so :class:`LevelMaps` computes each the first time it is read and keeps
it. A batch of 1,000 queries then holds one map per query instead of four (0.9 GB instead of
3.7 GB), which on a 2-core machine is also most of the time the batch took.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping

import numpy as np
import pandas as pd

__all__ = ["LevelMaps", "RegionStatistics"]

_NOT_COMPUTED = object()


class LevelMaps(MutableMapping):
    """The ``maps`` of a :class:`~nimare.results.MetaResult`, level maps computed on demand.

    It behaves as the :obj:`dict` NiMARE expects (``get``, ``keys``, ``items``, ``in``,
    ``update``, item assignment); reading a level map computes it once. Copies and pickles
    (``MetaResult.copy``, ``MetaResult.save``) are plain dictionaries with every map computed.

    Parameters
    ----------
    z : :class:`numpy.ndarray`
        Whole-brain z map over the mask voxels, float32.
    levels : :obj:`dict`
        Level name -> ``(labels, mean, sd)``: the region of each mask voxel (-1 outside the
        level), and the mean and standard deviation of ``z`` within each region.
    """

    def __init__(self, z: np.ndarray, levels: dict) -> None:
        self._recipes = {f"z_level-{name}": recipe for name, recipe in levels.items()}
        self._maps = {"z": z, **dict.fromkeys(self._recipes, _NOT_COMPUTED)}

    def _compute(self, key: str) -> np.ndarray:
        labels, mean, sd = self._recipes.pop(key)
        z = self._maps["z"]
        inside = labels >= 0
        region = labels[inside]
        scale = np.where(sd > 0, sd, np.inf)  # a flat region is 0 on its own scale
        out = np.zeros(len(z), dtype=np.float32)
        out[inside] = (z[inside] - mean[region]) / scale[region]
        self._maps[key] = out
        return out

    def __getitem__(self, key: str) -> np.ndarray:
        value = self._maps[key]
        return self._compute(key) if value is _NOT_COMPUTED else value

    def __setitem__(self, key: str, value) -> None:
        self._recipes.pop(key, None)
        self._maps[key] = value

    def __delitem__(self, key: str) -> None:
        del self._maps[key]
        self._recipes.pop(key, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._maps)

    def __len__(self) -> int:
        return len(self._maps)

    def __reduce__(self):
        # deepcopy and pickle give a plain dict of arrays, independent of this object.
        return dict, (dict(self.items()),)

    def __repr__(self) -> str:
        pending = f", {len(self._recipes)} not computed yet" if self._recipes else ""
        return f"LevelMaps({list(self)}{pending})"


class RegionStatistics:
    """Per-region statistics of whole-brain maps, at every level.

    Parameters
    ----------
    region_labels : :obj:`dict`
        Level name -> the region of each mask voxel (-1: none), in the levels' order.
    region_names : :obj:`dict`
        Level name -> region names.
    """

    def __init__(self, region_labels: dict, region_names: dict) -> None:
        self.region_labels = region_labels
        self.region_names = region_names
        # Per level: mask voxels sorted by region and where each region starts and ends.
        self._index = {}
        for level, labels in region_labels.items():
            labels = np.asarray(labels, dtype=np.int64)
            inside = np.flatnonzero(labels >= 0)
            order = inside[np.argsort(labels[inside], kind="stable")]
            counts = np.bincount(labels[inside], minlength=len(region_names[level]))
            bounds = np.concatenate([[0], np.cumsum(counts)])
            self._index[level] = (order, counts, bounds)

    def __call__(self, z_maps: np.ndarray) -> tuple[dict, list[pd.DataFrame]]:
        """Per-region statistics and tables for a batch of whole-brain z maps.

        Parameters
        ----------
        z_maps : :class:`numpy.ndarray`
            (n_maps, n_voxels) float32 z maps over the mask. The work is done on
            ``z_maps.T``, fastest when that is C-contiguous.

        Returns
        -------
        stats : :obj:`dict`
            Level -> ``(mean, sd)``, each (n_regions, n_maps) float64 (NaN: empty region).
        tables : :obj:`list` of :class:`pandas.DataFrame`
            One table per map: level, region, mean_z, sd_z, peak_z, n_voxels, rank (1: the
            highest mean z within its level).
        """
        from scipy.stats import rankdata

        voxels_first = z_maps.T  # (n_voxels, n_maps): a region is a block of rows
        n_maps = len(z_maps)
        stats, columns = {}, []
        for level, (order, counts, bounds) in self._index.items():
            values = voxels_first[order]
            mean, sd, peak = (np.full((len(counts), n_maps), np.nan) for _ in range(3))
            for r in np.flatnonzero(counts):
                block = values[bounds[r] : bounds[r + 1]]
                mean[r] = block.mean(axis=0, dtype=np.float64)
                peak[r] = block.max(axis=0)
                block -= mean[r].astype(np.float32)
                sd[r] = np.sqrt(np.einsum("ij,ij->j", block, block) / counts[r])
            stats[level] = (mean, sd)
            rank = rankdata(-np.nan_to_num(mean, nan=-np.inf), method="min", axis=0)
            columns.append((mean, sd, peak, rank))
        mean, sd, peak, rank = (np.concatenate(column) for column in zip(*columns))
        names = self.region_names
        levels = np.concatenate([np.full(len(names[lv]), lv, dtype=object) for lv in self._index])
        regions = np.concatenate([np.asarray(names[lv], dtype=object) for lv in self._index])
        voxels = np.concatenate([self._index[lv][1] for lv in self._index])
        tables = [
            pd.DataFrame(
                {
                    "level": levels,
                    "region": regions,
                    "mean_z": mean[:, i],
                    "sd_z": sd[:, i],
                    "peak_z": peak[:, i],
                    "n_voxels": voxels,
                    "rank": rank[:, i].astype(int),
                }
            )
            for i in range(n_maps)
        ]
        return stats, tables
