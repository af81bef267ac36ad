"""Maps of a prediction whose per-level versions are computed when first asked for.

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

__all__ = ["LevelMaps"]

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
