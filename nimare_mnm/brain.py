"""Brain maps: peak densities, atlas levels and the compact brain vector.

Three pieces, each usable alone:

- :class:`PeakDensity` turns each study's reported peaks into a density map inside the
  MNI152 2 mm brain mask (isotropic Gaussian, FWHM 9 mm, unit mass per peak), for a whole
  corpus in seconds: peaks are rounded to the nearest voxel (NiMARE's convention) and a
  precomputed, truncated kernel is scattered with one :func:`numpy.bincount` per chunk of
  studies. NiMARE's MKDA and ALE kernels are available as options.
- :class:`BrainLevels` describes the levels of the brain hierarchy on the same mask: the
  whole brain, the Yeo-7 networks, the Yeo-17 networks and the Harvard-Oxford subcortical
  structures (Yeo covers the cortex only, so amygdala, striatum, thalamus and hippocampus
  come from Harvard-Oxford), plus an "other" region (white matter, cerebellum) so that every
  level is a partition of the mask.
- :class:`BrainVectorizer` maps a voxel map to a compact vector (parcel means) and back to
  a NIfTI image on the 2 mm grid.

Atlases are read from ``<data_dir>/atlases`` (the neuroparc files shipped beside this
project) and, for users without that folder, fetched through nilearn.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from functools import lru_cache

import nibabel as nib
import numpy as np
import pandas as pd
import scipy.sparse as sp

from nimare_mnm.utils import DATA_ENV, get_data_dir

LGR = logging.getLogger(__name__)

__all__ = [
    "BrainLevels",
    "BrainVectorizer",
    "PeakDensity",
    "load_atlas",
    "load_mask",
    "study_coordinates",
]

FWHM_TO_SIGMA = 1.0 / np.sqrt(8.0 * np.log(2.0))

# Harvard-Oxford subcortical labels that are grey-matter structures (not cortex, white
# matter or ventricles), by their names in the neuroparc label list.
SUBCORTICAL_STRUCTURES = (
    "Left_Thalamus", "Left_Caudate", "Left_Putamen", "Left_Pallidum", "Left_Hippocampus",
    "Left_Amygdala", "Left_Accumbens", "Brain-Stem", "Right_Thalamus", "Right_Caudate",
    "Right_Putamen", "Right_Pallidum", "Right_Hippocampus", "Right_Amygdala",
    "Right_Accumbens",
)  # fmt: skip

# Network names in Yeo et al. (2011)'s numbering, the order of the voxel values. The
# neuroparc label list of Yeo-17 is not in this order (its "5_Temporal_Parietal" voxels are
# the dorsal attention network A by their overlap with Yeo-7), so names go by position.
YEO7_NAMES = (
    "Visual", "Somatomotor", "DorsalAttention", "VentralAttention", "Limbic",
    "Frontoparietal", "Default",
)  # fmt: skip
YEO17_NAMES = (
    "VisCent", "VisPeri", "SomMotA", "SomMotB", "DorsAttnA", "DorsAttnB", "SalVentAttnA",
    "SalVentAttnB", "LimbicB", "LimbicA", "ContC", "ContA", "ContB", "TempPar", "DefaultC",
    "DefaultA", "DefaultB",
)  # fmt: skip

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


# Gaussian kernels of the inverse transform are truncated at 3 sigma.
SMOOTH_TRUNCATE = 3.0


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
    name : {"yeo7", "yeo17", "schaefer200", "schaefer400", "schaefer1000", \
"harvard_oxford_sub", "harvard_oxford_cort"}
        Which atlas. Yeo networks use the liberal (thick) cortical masks.
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

    if name not in _ATLAS_FILES:
        raise ValueError(f"Unknown atlas {name!r}; choose from {sorted(_ATLAS_FILES)}.")
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


# --------------------------------------------------------------------------- peaks
def study_coordinates(studyset) -> tuple[pd.Index, np.ndarray, np.ndarray]:
    """Pool every analysis' peaks per study.

    Parameters
    ----------
    studyset : :class:`nimare.nimads.Studyset`, :class:`nimare.dataset.Dataset` or \
:class:`pandas.DataFrame`
        A studyset, or a frame with ``study_id`` (or ``id``) and ``x``, ``y``, ``z`` columns.

    Returns
    -------
    study_ids : :class:`pandas.Index`
        One entry per study, in the studyset's order (studies without peaks included).
    study_index : :class:`numpy.ndarray`
        For each peak, the position of its study in ``study_ids``.
    xyz : :class:`numpy.ndarray`
        Peak coordinates in mm, shape (n_peaks, 3).
    """
    if isinstance(studyset, pd.DataFrame):
        key = "study_id" if "study_id" in studyset else "id"
        missing = {key, "x", "y", "z"} - set(studyset.columns)
        if missing:
            raise ValueError(f"Coordinate table lacks the columns {sorted(missing)}.")
        ids = pd.Index(pd.unique(studyset[key].astype(str)))
        index = ids.get_indexer(studyset[key].astype(str))
        return ids, index, studyset[["x", "y", "z"]].to_numpy(dtype=float)

    from nimare_mnm.datasets import as_studyset

    studyset = as_studyset(studyset)
    store, view = studyset.store, studyset.view
    study_rows = np.unique(store.study_idx[view.index])
    ids = pd.Index(store.study_key[study_rows].astype(str))
    coords = studyset.coordinates
    index = ids.get_indexer(coords["study_id"].astype(str))
    return ids, index, coords[["x", "y", "z"]].to_numpy(dtype=float)


@dataclass
class PeakDensity:
    """Per-study peak density maps inside a brain mask.

    Parameters
    ----------
    fwhm : :obj:`float`, default=9.0
        Full width at half maximum (mm) of the Gaussian kernel.
    kernel : {"gaussian", "mkda", "ale"}, default="gaussian"
        ``"gaussian"``: each peak contributes a Gaussian of unit mass, truncated at
        ``truncate`` standard deviations (the map is an expected number of peaks per voxel).
        ``"mkda"`` and ``"ale"`` use NiMARE's :class:`~nimare.meta.kernel.MKDAKernel` (sphere
        of radius ``r`` mm) and :class:`~nimare.meta.kernel.ALEKernel`; they need a
        studyset and are much slower.
    truncate : :obj:`float`, default=3.0
        Kernel support, in standard deviations.
    mask : Niimg-like, optional
        Brain mask on the MNI152 2 mm grid. Defaults to :func:`load_mask`.
    r : :obj:`float`, default=10.0
        Sphere radius (mm) for ``kernel="mkda"``.
    chunk_size : :obj:`int`, default=128
        Studies per chunk; bounds memory at about ``chunk_size x n_voxels x 8`` bytes.
    """

    fwhm: float = 9.0
    kernel: str = "gaussian"
    truncate: float = 3.0
    mask: object = None
    r: float = 10.0
    chunk_size: int = 128
    _cache: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.kernel not in ("gaussian", "mkda", "ale"):
            raise ValueError(f"kernel must be 'gaussian', 'mkda' or 'ale', got {self.kernel!r}.")
        if not np.isfinite(self.fwhm) or self.fwhm <= 0:
            raise ValueError(f"fwhm must be a positive number of mm, got {self.fwhm!r}.")

    # ---------------------------------------------------------------- geometry
    @property
    def mask_img(self) -> nib.Nifti1Image:
        """The brain mask image."""
        if "mask" not in self._cache:
            img = self.mask if self.mask is not None else load_mask()
            if isinstance(img, (str, os.PathLike)):
                img = nib.load(img)
            if img.shape != (91, 109, 91) or not np.allclose(np.abs(np.diag(img.affine))[:3], 2):
                raise ValueError(
                    f"The mask must be on the MNI152 2 mm grid (91 x 109 x 91, 2 mm voxels); "
                    f"got shape {img.shape}."
                )
            self._cache["mask"] = img
        return self._cache["mask"]

    @property
    def n_voxels(self) -> int:
        """Number of voxels in the mask."""
        return int(self._mask_bool().sum())

    def _mask_bool(self) -> np.ndarray:
        if "mask_bool" not in self._cache:
            self._cache["mask_bool"] = np.asanyarray(self.mask_img.dataobj) > 0
        return self._cache["mask_bool"]

    def _kernel(self):
        """Flat offsets (in the padded grid), weights and the padded lookup table."""
        if "kernel" in self._cache:
            return self._cache["kernel"]
        mask = self._mask_bool()
        sigma_vox = self.fwhm * FWHM_TO_SIGMA / 2.0  # 2 mm voxels
        rad = int(np.ceil(self.truncate * sigma_vox))
        g = np.arange(-rad, rad + 1)
        di, dj, dk = np.meshgrid(g, g, g, indexing="ij")
        d2 = (di**2 + dj**2 + dk**2).ravel()
        keep = d2 <= (self.truncate * sigma_vox) ** 2
        weights = np.exp(-0.5 * d2[keep] / sigma_vox**2)
        weights = (weights / weights.sum()).astype(np.float64)  # unit mass per peak
        padded = tuple(s + 2 * rad for s in mask.shape)
        offsets = np.ravel_multi_index(
            (di.ravel()[keep] + rad, dj.ravel()[keep] + rad, dk.ravel()[keep] + rad), padded
        ) - np.ravel_multi_index((rad, rad, rad), padded)
        lut = np.full(padded, -1, dtype=np.int64)
        inner = tuple(slice(rad, rad + s) for s in mask.shape)
        cols = np.full(mask.shape, -1, dtype=np.int64)
        cols[mask] = np.arange(int(mask.sum()))
        lut[inner] = cols
        self._cache["kernel"] = (offsets.astype(np.int64), weights, lut.ravel(), rad, padded)
        return self._cache["kernel"]

    def _peak_voxels(self, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nearest voxel of each peak; returns (ijk, inside-grid flag)."""
        inv = np.linalg.inv(self.mask_img.affine)
        ijk = np.rint(xyz @ inv[:3, :3].T + inv[:3, 3]).astype(np.int64)
        inside = np.all((ijk >= 0) & (ijk < np.asarray(self.mask_img.shape)), axis=1)
        return ijk, inside

    def peak_voxels(self, studyset, ids) -> list[np.ndarray]:
        """Mask-voxel indices of each study's peaks (nearest voxel; peaks outside dropped).

        Parameters
        ----------
        studyset : :class:`nimare.nimads.Studyset`, Dataset or :class:`pandas.DataFrame`
            See :func:`study_coordinates`.
        ids : sequence
            Study ids, in the order of the output.

        Returns
        -------
        :obj:`list` of :class:`numpy.ndarray`
            Sorted unique indices into the mask voxels (the columns of :meth:`transform`'s
            maps), one array per id (empty for a study without a peak in the mask).
        """
        sids, index, xyz = study_coordinates(studyset)
        ijk, inside = self._peak_voxels(xyz)
        mask = self._mask_bool()
        column = np.full(mask.shape, -1, dtype=np.int64)
        column[mask] = np.arange(int(mask.sum()))
        voxel = np.full(len(xyz), -1, dtype=np.int64)
        voxel[inside] = column[tuple(ijk[inside].T)]
        position = pd.Index([str(i) for i in ids]).get_indexer(sids.astype(str))
        study = position[index]
        keep = (study >= 0) & (voxel >= 0)
        out = [[] for _ in ids]
        for s, v in zip(study[keep], voxel[keep]):
            out[s].append(v)
        return [np.unique(np.asarray(v, dtype=np.int64)) for v in out]

    # ---------------------------------------------------------------- computation
    def iter_chunks(self, studyset):
        """Yield ``(study_ids, maps)`` chunks, ``maps`` float32 of shape (chunk, n_voxels).

        Parameters
        ----------
        studyset : :class:`nimare.nimads.Studyset`, Dataset or :class:`pandas.DataFrame`
            See :func:`study_coordinates`.

        Yields
        ------
        study_ids : :class:`pandas.Index`
        maps : :class:`numpy.ndarray`
        """
        if self.kernel != "gaussian":
            yield from self._iter_nimare(studyset)
            return
        yield from self._gaussian_chunks(*study_coordinates(studyset))

    def _gaussian_chunks(self, ids, index, xyz):
        if not np.isfinite(xyz).all():
            raise ValueError("Peak coordinates contain NaN or infinite values.")
        offsets, weights, lut, rad, padded = self._kernel()
        ijk, inside = self._peak_voxels(xyz)
        if not inside.all():
            LGR.warning(f"Ignoring {int((~inside).sum())} peaks outside the 2 mm grid.")
        ijk, index = ijk[inside], index[inside]
        order = np.argsort(index, kind="stable")
        ijk, index = ijk[order], index[order]
        lin = np.ravel_multi_index(tuple((ijk + rad).T), padded)
        bounds = np.searchsorted(index, np.arange(0, len(ids) + self.chunk_size, self.chunk_size))
        n_vox = self.n_voxels
        for c, start in enumerate(range(0, len(ids), self.chunk_size)):
            stop = min(start + self.chunk_size, len(ids))
            lo, hi = bounds[c], bounds[c + 1]
            cols = lut[lin[lo:hi, None] + offsets[None, :]]
            flat = (index[lo:hi, None] - start) * n_vox + cols
            valid = cols >= 0
            dense = np.bincount(
                flat[valid],
                weights=np.broadcast_to(weights, cols.shape)[valid],
                minlength=(stop - start) * n_vox,
            )
            yield ids[start:stop], dense.reshape(stop - start, n_vox).astype(np.float32)

    def _iter_nimare(self, studyset):
        from nimare.meta.kernel import ALEKernel, MKDAKernel

        from nimare_mnm.datasets import as_studyset

        studyset = as_studyset(studyset)
        ids, _, _ = study_coordinates(studyset)
        kern = MKDAKernel(r=self.r) if self.kernel == "mkda" else ALEKernel(fwhm=self.fwhm)
        maps = kern.transform(studyset, masker=self._masker(), return_type="array")
        maps = np.asarray(maps, dtype=np.float32)
        analysis_study = studyset.coordinates.drop_duplicates("id").set_index("id")["study_id"]
        rows = ids.get_indexer(analysis_study.reindex(studyset.ids).astype(str).to_numpy())
        pooled = np.zeros((len(ids), maps.shape[1]), dtype=np.float32)
        for row, values in zip(rows, maps):
            if row >= 0:
                np.maximum(pooled[row], values, out=pooled[row])
        for start in range(0, len(ids), self.chunk_size):
            yield ids[start : start + self.chunk_size], pooled[start : start + self.chunk_size]

    def _masker(self):
        from nilearn.maskers import NiftiMasker

        if "masker" not in self._cache:
            self._cache["masker"] = NiftiMasker(self.mask_img).fit()
        return self._cache["masker"]

    def transform(self, studyset, reduce=None):
        """Density maps for every study.

        Parameters
        ----------
        studyset : :class:`nimare.nimads.Studyset`, Dataset or :class:`pandas.DataFrame`
            See :func:`study_coordinates`.
        reduce : callable, optional
            Applied to each chunk (``maps -> array``), e.g. :meth:`BrainVectorizer.transform`;
            the reduced chunks are stacked. Without it, the maps come back as a sparse
            matrix, which holds the whole NeuroQuery corpus in about 1.5 GB.

        Returns
        -------
        study_ids : :class:`pandas.Index`
        maps : :class:`scipy.sparse.csr_matrix` or :class:`numpy.ndarray`
            float32, one row per study.
        """
        if self.kernel == "gaussian":
            coords = study_coordinates(studyset)
            chunks = self._gaussian_chunks(*coords)
            # Each peak touches at most len(offsets) voxels. numpy.empty only commits the
            # pages that get written, so this bound costs no memory beyond the result.
            capacity = len(coords[2]) * len(self._kernel()[0])
        else:
            chunks, capacity = self._iter_nimare(studyset), None
        all_ids, parts = [], []
        if reduce is None:
            sparse = _CSRBuilder(self.n_voxels, capacity)
        for ids, maps in chunks:
            all_ids.append(ids)
            if reduce is not None:
                parts.append(reduce(maps))
            else:
                sparse.append(maps)
        if not all_ids:
            raise ValueError("The studyset has no studies.")
        ids = all_ids[0].append(all_ids[1:]) if len(all_ids) > 1 else all_ids[0]
        if reduce is not None:
            return ids, np.vstack(parts)
        return ids, sparse.finish()

    def to_img(self, values: np.ndarray) -> nib.Nifti1Image:
        """Put one vector of mask values (or a 2D stack) back into an image on the grid."""
        values = np.asarray(values, dtype=np.float32)
        mask = self._mask_bool()
        if values.shape[-1] != mask.sum():
            raise ValueError(f"Expected {int(mask.sum())} mask values, got {values.shape[-1]}.")
        out = np.zeros(mask.shape + values.shape[:-1], dtype=np.float32)
        out[mask] = values.T if values.ndim == 2 else values
        return nib.Nifti1Image(out, self.mask_img.affine)


class _CSRBuilder:
    """Append dense float32 row blocks into one CSR matrix without holding two copies.

    With a known upper bound on the non-zeros, values go straight into arrays made by
    :func:`numpy.empty`, whose untouched pages are never committed; otherwise the blocks
    are kept and concatenated at the end.
    """

    def __init__(self, n_cols: int, capacity: int | None = None) -> None:
        self.n_cols, self.capacity = n_cols, capacity
        self.index_dtype = np.int32 if max(capacity or 0, n_cols) < 2**31 else np.int64
        if capacity is not None:
            self.data = np.empty(capacity, dtype=np.float32)
            self.indices = np.empty(capacity, dtype=self.index_dtype)
        else:
            self.data, self.indices = [], []
        self.counts, self.nnz = [], 0

    def append(self, block: np.ndarray) -> None:
        rows, cols = np.nonzero(block)
        values = block[rows, cols]
        self.counts.append(np.bincount(rows, minlength=block.shape[0]))
        if self.capacity is not None:
            stop = self.nnz + len(values)
            if stop > self.capacity:  # pragma: no cover - the bound is exact by design
                raise RuntimeError("Sparse capacity exceeded.")
            self.data[self.nnz : stop] = values
            self.indices[self.nnz : stop] = cols
        else:
            self.data.append(values.astype(np.float32))
            self.indices.append(cols.astype(self.index_dtype))
        self.nnz += len(values)

    def finish(self) -> sp.csr_matrix:
        if self.capacity is not None:
            data, indices = self.data[: self.nnz], self.indices[: self.nnz]
        else:
            data = np.concatenate(self.data) if self.data else np.zeros(0, np.float32)
            indices = (
                np.concatenate(self.indices) if self.indices else np.zeros(0, self.index_dtype)
            )
        counts = np.concatenate(self.counts)
        indptr = np.zeros(len(counts) + 1, dtype=self.index_dtype)
        np.cumsum(counts, out=indptr[1:])
        return sp.csr_matrix((data, indices, indptr), shape=(len(counts), self.n_cols))


# --------------------------------------------------------------------------- levels
@dataclass
class BrainLevels:
    """Partitions of the brain mask into the regions of each level.

    Parameters
    ----------
    data_dir : :obj:`str` or :obj:`os.PathLike`, optional
        Where the atlases are (see :func:`load_atlas`).

    Attributes
    ----------
    labels_ : :obj:`dict`
        For each level (``"whole"``, ``"yeo7"``, ``"yeo17"``, ``"subcortical"``), an int array
        over the mask voxels: the region of each voxel, or -1 where the voxel is outside every
        region of that level (e.g. subcortical voxels at the Yeo levels).
    names_ : :obj:`dict`
        For each level, the region names.
    parcels_ : :class:`numpy.ndarray`
        The voxel-wise compartment: 0..6 Yeo-7 networks, 7..21 subcortical structures,
        22 other (white matter, cerebellum...). Every mask voxel has exactly one.
    """

    data_dir: str | os.PathLike | None = None
    labels_: dict = field(default_factory=dict, init=False)
    names_: dict = field(default_factory=dict, init=False)

    LEVELS = ("whole", "yeo7", "yeo17", "subcortical")

    def fit(self) -> BrainLevels:
        """Read the atlases and build the partitions."""
        mask = np.asanyarray(load_mask().dataobj) > 0
        sub_img, sub_names = load_atlas("harvard_oxford_sub", self.data_dir)
        sub = np.asanyarray(sub_img.dataobj)[mask]
        keep = [sub_names.index(n) for n in SUBCORTICAL_STRUCTURES if n in sub_names]
        if len(keep) != len(SUBCORTICAL_STRUCTURES):
            raise ValueError(f"Harvard-Oxford subcortical labels are not as expected: {sub_names}")
        sub_region = np.full(mask.sum(), -1, dtype=np.int64)
        for r, value in enumerate(keep):
            sub_region[sub == value] = r
        is_sub = sub_region >= 0
        self.labels_ = {"whole": np.zeros(mask.sum(), dtype=np.int64)}
        self.names_ = {"whole": ["whole_brain"]}
        for level in ("yeo7", "yeo17"):
            img, _ = load_atlas(level, self.data_dir)
            net = np.asanyarray(img.dataobj)[mask].astype(np.int64) - 1
            # Harvard-Oxford's subcortical structures take precedence over Yeo's liberal
            # cortical masks, which spill into the medial temporal lobe.
            net[is_sub] = -1
            self.labels_[level] = net
            self.names_[level] = list(YEO7_NAMES if level == "yeo7" else YEO17_NAMES)
            if net.max() != len(self.names_[level]) - 1:
                raise ValueError(
                    f"The {level} atlas does not have {len(self.names_[level])} networks."
                )
        self.labels_["subcortical"] = sub_region
        self.names_["subcortical"] = list(SUBCORTICAL_STRUCTURES)
        n7, n_sub = len(self.names_["yeo7"]), len(SUBCORTICAL_STRUCTURES)
        parcels = np.full(mask.sum(), n7 + n_sub, dtype=np.int64)
        parcels[self.labels_["yeo7"] >= 0] = self.labels_["yeo7"][self.labels_["yeo7"] >= 0]
        parcels[is_sub] = n7 + sub_region[is_sub]
        self.parcels_ = parcels
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
            One of :attr:`LEVELS`.

        Returns
        -------
        :class:`numpy.ndarray`
            (n_maps, n_regions, n_voxels): each region's voxels keep their values, the others
            are zero.
        """
        regions = self.region_masks(level)
        return np.asarray(maps)[:, None, :] * regions[None, :, :]


# --------------------------------------------------------------------------- brain vector
@dataclass
class BrainVectorizer:
    """Compact whole-brain vector: mean of the map in each supervoxel, and back.

    The mask is cut into supervoxels that never straddle two regions of any level: cubes of
    ``block_mm`` intersected with the Yeo-17 networks (which refine Yeo-7), the 15
    Harvard-Oxford subcortical structures and the remaining voxels. With
    ``parcellation="schaeferN"`` the cortex is cut by the Schaefer parcels instead of cubes.
    The inverse puts each supervoxel's mean back on its voxels and smooths the result inside
    the mask (Gaussian, ``smooth_fwhm``), which recovers most of what averaging removed.

    Measured on 300 NeuroQuery studies (FWHM 9 mm densities), mean Pearson r between each
    map and its reconstruction with the smoothed inverse (raw piecewise-constant in
    brackets): 12 mm cubes 0.82 (0.75) with 5,285 components, 10 mm cubes 0.86 (0.79) with
    7,387, Schaefer-1000 parcels plus 8 mm cubes 0.84 (0.76) with 6,276. A PCA basis of
    1,024 components learned on 3,000 other studies reached 0.75 and would weigh about 1 GB
    to ship with a model. ``benchmarks/bench_features.py`` re-measures the default.

    Parameters
    ----------
    parcellation : {"blocks", "schaefer200", "schaefer400", "schaefer1000"}, default="blocks"
        How the cortex is cut.
    block_mm : :obj:`float`, default=12.0
        Edge of the cubes.
    smooth_fwhm : :obj:`float`, default=6.0
        FWHM (mm) of the smoothing applied by :meth:`inverse_transform`; 0 disables it.
    data_dir : :obj:`str` or :obj:`os.PathLike`, optional
        Where the atlases are (see :func:`load_atlas`).

    Attributes
    ----------
    assignment_ : :class:`numpy.ndarray`
        Supervoxel of each mask voxel.
    n_components_ : :obj:`int`
        Length of the vector.
    parcel_level_ : :obj:`dict`
        For each level of :class:`BrainLevels`, the region of each supervoxel (-1: none).
    """

    parcellation: str = "blocks"
    block_mm: float = 12.0
    smooth_fwhm: float = 6.0
    data_dir: str | os.PathLike | None = None

    def fit(self, levels: BrainLevels | None = None) -> BrainVectorizer:
        """Build the supervoxels from the atlases (no data needed)."""
        mask = np.asanyarray(load_mask().dataobj) > 0
        levels = levels if levels is not None else BrainLevels(self.data_dir).fit()
        compartment = np.c_[
            levels.labels_["yeo7"], levels.labels_["yeo17"], levels.labels_["subcortical"]
        ]
        ijk = np.argwhere(mask)
        block = max(1, int(round(self.block_mm / 2.0)))
        cells = ijk // block
        if self.parcellation != "blocks":
            if not self.parcellation.startswith("schaefer"):
                raise ValueError(
                    "parcellation must be 'blocks' or 'schaefer200/400/1000', "
                    f"got {self.parcellation!r}."
                )
            cortex_img, _ = load_atlas(self.parcellation, self.data_dir)
            cortex = np.asanyarray(cortex_img.dataobj)[mask].astype(np.int64)
            in_cortex = (cortex > 0) & (levels.labels_["yeo7"] >= 0)
            cells = np.where(in_cortex[:, None], np.c_[cortex, -cortex, -cortex], cells)
        _, assignment = np.unique(np.c_[cells, compartment], axis=0, return_inverse=True)
        self._set_assignment(assignment.ravel(), levels.labels_)
        return self

    def _set_assignment(self, assignment: np.ndarray, level_labels: dict) -> None:
        self.assignment_ = assignment.astype(np.int64)
        self.n_components_ = int(assignment.max()) + 1
        n_vox = len(assignment)
        counts = np.bincount(assignment, minlength=self.n_components_)
        self._pool = sp.csr_matrix(
            (1.0 / counts[assignment], (np.arange(n_vox), assignment)),
            shape=(n_vox, self.n_components_),
            dtype=np.float32,
        )
        self._spread = sp.csr_matrix(
            (np.ones(n_vox, np.float32), (assignment, np.arange(n_vox))),
            shape=(self.n_components_, n_vox),
        )
        first = np.zeros(self.n_components_, dtype=np.int64)
        first[assignment[::-1]] = np.arange(n_vox)[::-1]
        # Supervoxels never straddle regions, so any voxel tells the region.
        self.parcel_level_ = {level: labels[first] for level, labels in level_labels.items()}

    def _check(self) -> None:
        if not hasattr(self, "assignment_"):
            raise RuntimeError("BrainVectorizer is not fitted; call fit() first.")

    def transform(self, maps) -> np.ndarray:
        """Supervoxel means of (n_maps, n_voxels) maps -> (n_maps, n_components) float32."""
        self._check()
        maps = maps if sp.issparse(maps) else np.asarray(maps, dtype=np.float32)
        if maps.ndim == 1:
            maps = maps[None, :]
        if maps.shape[1] != len(self.assignment_):
            raise ValueError(
                f"Expected maps over the {len(self.assignment_)} mask voxels, "
                f"got {maps.shape[1]} values per map."
            )
        out = maps @ self._pool
        out = out.toarray() if sp.issparse(out) else out
        return np.asarray(out, dtype=np.float32)

    def inverse_transform(self, vectors: np.ndarray, smooth: bool = True) -> np.ndarray:
        """Voxel maps (n, n_voxels) from vectors (n, n_components).

        Parameters
        ----------
        vectors : :class:`numpy.ndarray`
            Brain vectors.
        smooth : :obj:`bool`, default=True
            Apply the ``smooth_fwhm`` smoothing inside the mask.

        Returns
        -------
        :class:`numpy.ndarray`
            float32 maps over the mask voxels.
        """
        self._check()
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        if vectors.shape[1] != self.n_components_:
            raise ValueError(
                f"Expected vectors of length {self.n_components_}, got {vectors.shape[1]}."
            )
        if not np.isfinite(vectors).all():
            raise ValueError("Brain vectors contain NaN or infinite values.")
        if not (smooth and self.smooth_fwhm > 0):
            return np.asarray(self._spread.T @ vectors.T, dtype=np.float32).T
        if getattr(self, "_smoother", None) is None:
            self._smoother = smoothing_operator(
                self.assignment_, self.n_components_, self.smooth_fwhm
            )
        # One sparse product; the result is (n_voxels, n) in memory, returned transposed
        # (rows are strided views) because a transposing copy would cost more than the product.
        return np.asarray(self._smoother @ vectors.T, dtype=np.float32).T

    def __getstate__(self) -> dict:
        # The smoothing operator (~90 MB) is rebuilt on first use rather than pickled.
        state = self.__dict__.copy()
        state.pop("_smoother", None)
        return state

    def to_img(self, vector: np.ndarray, smooth: bool = True) -> nib.Nifti1Image:
        """Return a NIfTI image on the MNI152 2 mm grid from one brain vector."""
        mask = np.asanyarray(load_mask().dataobj) > 0
        out = np.zeros(mask.shape, dtype=np.float32)
        out[mask] = self.inverse_transform(vector, smooth=smooth)[0]
        return nib.Nifti1Image(out, load_mask().affine)


@lru_cache(maxsize=4)
def _smoothing_frame(fwhm: float) -> tuple[tuple[slice, ...], np.ndarray, np.ndarray, float]:
    """Crop of the mask's bounding box (plus the kernel radius), the cropped mask, weights."""
    from scipy.ndimage import gaussian_filter

    mask = np.asanyarray(load_mask().dataobj) > 0
    sigma = fwhm * FWHM_TO_SIGMA / 2.0
    radius = int(SMOOTH_TRUNCATE * sigma + 0.5)
    ijk = np.argwhere(mask)
    lo = np.maximum(ijk.min(axis=0) - radius, 0)
    hi = np.minimum(ijk.max(axis=0) + radius + 1, mask.shape)
    crop = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    inner = mask[crop]
    weight = gaussian_filter(
        inner.astype(np.float32), sigma, mode="constant", truncate=SMOOTH_TRUNCATE
    )[inner]
    return crop, inner, weight, sigma


def _gaussian_band(n: int, sigma: float) -> sp.csr_matrix:
    """(n, n) banded matrix of :func:`scipy.ndimage.gaussian_filter1d` (zero padding)."""
    radius = int(SMOOTH_TRUNCATE * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel /= kernel.sum()
    diagonals = [np.full(n - abs(int(o)), w) for o, w in zip(offsets, kernel) if abs(o) < n]
    kept = [int(o) for o in offsets if abs(o) < n]
    return sp.diags(diagonals, kept, shape=(n, n), format="csr")


def smoothing_operator(assignment: np.ndarray, n_components: int, fwhm: float) -> sp.csr_matrix:
    """Sparse (n_voxels, n_components) map from supervoxel values to smoothed voxel values.

    The product of the supervoxel spread and a Gaussian smoothing inside the mask (kernel
    truncated at 3 sigma, renormalised by the smoothed mask so the mask edge keeps its
    level). Applying it gives the same values as spreading each supervoxel's value on its
    voxels and smoothing the volume along the three axes, but it is one sparse product for
    a whole batch: for the default 12 mm supervoxels and 6 mm smoothing it has 7.1 million
    non-zeros, takes about 1.7 s to build and turns 1,000 vectors into maps in about 1 s
    instead of 16 s.

    Parameters
    ----------
    assignment : :class:`numpy.ndarray`
        Supervoxel of each mask voxel.
    n_components : :obj:`int`
        Number of supervoxels.
    fwhm : :obj:`float`
        Smoothing FWHM in mm (2 mm voxels).

    Returns
    -------
    :class:`scipy.sparse.csr_matrix`
        float32 operator ``O`` such that ``maps = vectors @ O.T``.
    """
    crop, inner, weight, sigma = _smoothing_frame(float(fwhm))
    shape = inner.shape
    flat = np.flatnonzero(inner)
    spread = sp.csr_matrix(
        (np.ones(len(flat)), (flat, assignment)), shape=(inner.size, n_components)
    )
    eye = [sp.identity(n, format="csr") for n in shape]
    bands = [_gaussian_band(n, sigma) for n in shape]
    out = spread
    for axis in (2, 1, 0):  # the volume is C-ordered: the last axis varies fastest
        factors = [bands[a] if a == axis else eye[a] for a in range(3)]
        out = sp.kron(sp.kron(factors[0], factors[1]), factors[2], format="csr") @ out
    out = sp.diags(1.0 / weight.astype(np.float64)) @ out[flat]
    return sp.csr_matrix(out, dtype=np.float32)
