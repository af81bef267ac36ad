"""Peak densities: each study's reported peaks as a density map inside the brain mask.

:class:`PeakDensity` turns each study's peaks into a density map inside the MNI152 2 mm
brain mask (isotropic Gaussian, FWHM 9 mm, unit mass per peak), for a whole corpus in
seconds: peaks are rounded to the nearest voxel (NiMARE's convention) and a precomputed,
truncated kernel is scattered with one :func:`numpy.bincount` per chunk of studies. NiMARE's
MKDA and ALE kernels are available as options.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import nibabel as nib
import numpy as np
import pandas as pd
import scipy.sparse as sp

from nimare_mnm.atlases import load_mask

LGR = logging.getLogger(__name__)

__all__ = ["FWHM_TO_SIGMA", "PeakDensity", "study_coordinates"]

FWHM_TO_SIGMA = 1.0 / np.sqrt(8.0 * np.log(2.0))


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
