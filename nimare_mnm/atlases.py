"""The brain mask and the label atlases, and the partition of the mask into each level's regions.

Atlases are read from ``<data_dir>/atlases`` (the neuroparc files shipped beside this
project) and, for users without that folder, fetched through nilearn. A level of
:mod:`nimare_mnm.levels` may also name its own NIfTI label image.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

import nibabel as nib
import numpy as np
import pandas as pd

from nimare_mnm.levels import WHOLE, Level, check_levels
from nimare_mnm.utils import DATA_ENV, get_data_dir

LGR = logging.getLogger(__name__)

__all__ = ["BrainLevels", "load_atlas", "load_mask"]

_ATLAS_FILES = {
    "yeo7": ("Yeo-7-liberal_space-MNI152NLin6_res-2x2x2.nii.gz", "Yeo-7-liberal.labels.csv"),
    "yeo17": ("Yeo-17-liberal_space-MNI152NLin6_res-2x2x2.nii.gz", "Yeo-17-liberal.labels.csv"),
    "schaefer200": ("Schaefer200_space-MNI152NLin6_res-2x2x2.nii.gz", None),
    "schaefer400": ("Schaefer400_space-MNI152NLin6_res-2x2x2.nii.gz", None),
    "schaefer1000": ("Schaefer1000_space-MNI152NLin6_res-2x2x2.nii.gz", None),
    "harvard_oxford_sub": (
        "HarvardOxfordsub-maxprob-thr25_space-MNI152NLin6_res-2x2x2.nii.gz",
        "HarvardOxfordsub-maxprob.labels.csv",
    ),
    "harvard_oxford_cort": (
        "HarvardOxfordcort-maxprob-thr25_space-MNI152NLin6_res-2x2x2.nii.gz",
        "HarvardOxfordcort-maxprob.labels.csv",
    ),
}


# --------------------------------------------------------------------------- mask and atlases
@lru_cache(maxsize=1)
def load_mask() -> nib.Nifti1Image:
    """Return NiMARE's MNI152 2 mm brain mask (91 x 109 x 91, 228,483 voxels).

    Returns
    -------
    :class:`nibabel.nifti1.Nifti1Image`
    """
    from nimare.utils import get_template

    return get_template("mni152_2mm", mask="brain")


def _read_labels(path: str) -> list[str]:
    frame = pd.read_csv(path, header=None, names=["value", "name"])
    return [str(n) for n in frame.sort_values("value")["name"]]


def _nilearn_atlas(name: str):
    """Fetch an atlas through nilearn (downloads on first use); returns (img, labels)."""
    from nilearn import datasets

    if name in ("yeo7", "yeo17"):
        bunch = datasets.fetch_atlas_yeo_2011(n_networks=int(name[3:]), thickness="thick")
        n = int(name[3:])
        return bunch.maps, ["empty"] + [f"{i}_Network_{i}" for i in range(1, n + 1)]
    if name.startswith("schaefer"):
        bunch = datasets.fetch_atlas_schaefer_2018(n_rois=int(name[8:]), resolution_mm=2)
        return bunch.maps, ["empty"] + [str(x) for x in bunch.labels][-int(name[8:]) :]
    if name.startswith("harvard_oxford_"):
        kind = name.rsplit("_", 1)[1]  # "sub" or "cort"
        bunch = datasets.fetch_atlas_harvard_oxford(f"{kind}-maxprob-thr25-2mm")
        return bunch.maps, ["null"] + [str(x).replace(" ", "_") for x in bunch.labels[1:]]
    raise ValueError(f"Unknown atlas {name!r}; choose from {sorted(_ATLAS_FILES)}.")


def load_atlas(
    name: str, data_dir: str | os.PathLike | None = None
) -> tuple[nib.Nifti1Image, list[str]]:
    """Load a label atlas resampled (nearest neighbour) onto the 2 mm brain-mask grid.

    Parameters
    ----------
    name : :obj:`str` or :obj:`os.PathLike`
        Which atlas: one of "yeo7", "yeo17", "schaefer200", "schaefer400", "schaefer1000",
        "harvard_oxford_sub", "harvard_oxford_cort" (Yeo networks use the liberal, thick,
        cortical masks), or the path of a NIfTI label image in MNI space (its labels are
        then the voxel values, "1", "2"...).
    data_dir : :obj:`str` or :obj:`os.PathLike`, optional
        Folder with an ``atlases/`` subfolder of neuroparc files. Defaults to
        ``NIMARE_MNM_DATA``; when no such folder has the files, nilearn's fetchers are used
        (they download on first use).

    Returns
    -------
    img : :class:`nibabel.nifti1.Nifti1Image`
        Integer labels on the MNI152 2 mm grid (0 = background).
    labels : :obj:`list` of :obj:`str`
        Label names, ``labels[v]`` naming voxel value ``v``.

    Raises
    ------
    FileNotFoundError
        If the atlas is neither in the data directory nor obtainable through nilearn.
    """
    from nilearn.image import resample_to_img

    name = os.fspath(name)
    if name not in _ATLAS_FILES:
        if not name.endswith((".nii", ".nii.gz")):
            raise ValueError(
                f"Unknown atlas {name!r}: choose from {sorted(_ATLAS_FILES)} or give the path "
                "of a NIfTI label image."
            )
        if not os.path.isfile(name):
            raise FileNotFoundError(f"Atlas image {name} does not exist.")
        img = nib.load(name)
        if len(img.shape) != 3:
            raise ValueError(f"Atlas image {name} must be 3D, got shape {img.shape}.")
        n = int(np.rint(np.asanyarray(img.dataobj)).max())
        labels = ["background"] + [str(i) for i in range(1, n + 1)]
        img = resample_to_img(
            img, load_mask(), interpolation="nearest", force_resample=True, copy_header=True
        )
        data = np.rint(np.asanyarray(img.dataobj)).astype(np.int32)
        return nib.Nifti1Image(data, load_mask().affine), labels
    img_file, label_file = _ATLAS_FILES[name]
    root = get_data_dir(data_dir)
    folder = os.path.join(root, "atlases") if root else None
    if folder and os.path.isfile(os.path.join(folder, img_file)):
        img = nib.load(os.path.join(folder, img_file))
        if label_file:
            labels = _read_labels(os.path.join(folder, label_file))
        else:
            n = int(np.asanyarray(img.dataobj).max())
            labels = ["empty"] + [f"{name}_parcel_{i}" for i in range(1, n + 1)]
    else:
        try:
            img, labels = _nilearn_atlas(name)
        except Exception as exc:
            where = os.path.join(folder, img_file) if folder else f"<{DATA_ENV}>/atlases"
            raise FileNotFoundError(
                f"Atlas {name!r} not found: {where} does not exist and nilearn could not "
                f"fetch it ({type(exc).__name__}: {exc}). Pass data_dir= (or set {DATA_ENV}) "
                "to a folder whose atlases/ subfolder holds the neuroparc files, or run once "
                "with internet access so nilearn can download it."
            ) from exc
    img = resample_to_img(
        img, load_mask(), interpolation="nearest", force_resample=True, copy_header=True
    )
    data = np.rint(np.asanyarray(img.dataobj)).astype(np.int32)
    return nib.Nifti1Image(data, load_mask().affine), labels


# --------------------------------------------------------------------------- levels
@dataclass
class BrainLevels:
    """Partitions of the brain mask into the regions of each level.

    Parameters
    ----------
    data_dir : :obj:`str` or :obj:`os.PathLike`, optional
        Where the atlases are (see :func:`load_atlas`).
    levels : :obj:`tuple` of :class:`~nimare_mnm.levels.Level`, optional
        The level specification (default :data:`nimare_mnm.levels.LEVELS`).

    Attributes
    ----------
    labels_ : :obj:`dict`
        For ``"whole"`` and each level, an int array over the mask voxels: the region of
        each voxel, or -1 where the voxel is outside every region of that level (e.g.
        subcortical voxels at the Yeo levels, see :attr:`Level.precedence`).
    names_ : :obj:`dict`
        For each level, the region names.
    """

    data_dir: str | os.PathLike | None = None
    levels: Iterable[Level] | None = None
    labels_: dict = field(default_factory=dict, init=False)
    names_: dict = field(default_factory=dict, init=False)

    def fit(self) -> BrainLevels:
        """Read the atlases and build the partitions."""
        spec = check_levels(self.levels)
        mask = np.asanyarray(load_mask().dataobj) > 0
        self.labels_ = {WHOLE: np.zeros(mask.sum(), dtype=np.int64)}
        self.names_ = {WHOLE: ["whole_brain"]}
        for level in spec:
            self.labels_[level.name] = _level_labels(level, mask, self.data_dir)
            self.names_[level.name] = list(level.regions)
        for level in spec:
            higher = [o.name for o in spec if o.precedence > level.precedence]
            if higher:
                claimed = np.any([self.labels_[o] >= 0 for o in higher], axis=0)
                self.labels_[level.name][claimed] = -1
        self.levels_ = spec
        return self

    def region_masks(self, level: str) -> np.ndarray:
        """Boolean (n_regions, n_voxels) membership of each region of ``level``."""
        self._check(level)
        labels = self.labels_[level]
        return labels[None, :] == np.arange(len(self.names_[level]))[:, None]

    def _check(self, level: str) -> None:
        if not self.labels_:
            raise RuntimeError("BrainLevels is not fitted; call fit() first.")
        if level not in self.labels_:
            raise ValueError(f"Unknown level {level!r}; choose from {list(self.labels_)}.")

    def level_maps(self, maps: np.ndarray, level: str) -> np.ndarray:
        """Split whole-brain maps into one masked map per region of ``level``.

        Parameters
        ----------
        maps : :class:`numpy.ndarray`
            (n_maps, n_voxels) values over the mask.
        level : :obj:`str`
            ``"whole"`` or a level name.

        Returns
        -------
        :class:`numpy.ndarray`
            (n_maps, n_regions, n_voxels): each region's voxels keep their values, the others
            are zero.
        """
        regions = self.region_masks(level)
        return np.asarray(maps)[:, None, :] * regions[None, :, :]


def _level_labels(level: Level, mask: np.ndarray, data_dir) -> np.ndarray:
    """Region of each mask voxel at one level (-1: none), before precedence is applied."""
    img, atlas_names = load_atlas(level.atlas, data_dir)
    values = np.asanyarray(img.dataobj)[mask].astype(np.int64)
    if level.labels is None:
        region = np.where(values > 0, values - 1, -1)
        if region.max() != len(level.regions) - 1:
            raise ValueError(
                f"The {level.name} atlas ({level.atlas}) has {region.max() + 1} labels, not the "
                f"{len(level.regions)} regions the level names."
            )
        return region
    missing = [n for n in level.labels if n not in atlas_names]
    if missing:
        raise ValueError(
            f"The {level.name} atlas ({level.atlas}) lacks the labels {missing}; it has "
            f"{atlas_names}."
        )
    region = np.full(len(values), -1, dtype=np.int64)
    for r, name in enumerate(level.labels):
        region[values == atlas_names.index(name)] = r
    return region
