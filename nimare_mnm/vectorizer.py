"""The compact brain vector: the mean of a map in each supervoxel, and back to voxels.

:class:`BrainVectorizer` maps a voxel map to a compact vector (supervoxel means) and back to
a NIfTI image on the 2 mm grid; supervoxels never straddle two regions of any level.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

import nibabel as nib
import numpy as np
import scipy.sparse as sp

from nimare_mnm.atlases import BrainLevels, load_atlas, load_mask
from nimare_mnm.densities import FWHM_TO_SIGMA
from nimare_mnm.levels import WHOLE

__all__ = ["BrainVectorizer", "smoothing_operator"]

# Gaussian kernels of the inverse transform are truncated at 3 sigma.
SMOOTH_TRUNCATE = 3.0


# --------------------------------------------------------------------------- brain vector
@dataclass
class BrainVectorizer:
    """Compact whole-brain vector: mean of the map in each supervoxel, and back.

    The mask is cut into supervoxels that never straddle two regions of any level: cubes of
    ``block_mm`` intersected with the regions of every level (by default the Yeo-17
    networks, which refine Yeo-7, the 15 Harvard-Oxford subcortical structures and the
    remaining voxels). With
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
        For ``"whole"`` and each level of :class:`~nimare_mnm.atlases.BrainLevels`, the
        region of each supervoxel (-1: none).
    """

    parcellation: str = "blocks"
    block_mm: float = 12.0
    smooth_fwhm: float = 6.0
    data_dir: str | os.PathLike | None = None

    def fit(self, levels: BrainLevels | None = None) -> BrainVectorizer:
        """Build the supervoxels from the atlases (no data needed).

        Parameters
        ----------
        levels : :class:`~nimare_mnm.atlases.BrainLevels`, optional
            Fitted levels; default: the default levels read from :attr:`data_dir`.
        """
        mask = np.asanyarray(load_mask().dataobj) > 0
        levels = levels if levels is not None else BrainLevels(self.data_dir).fit()
        names = [name for name in levels.labels_ if name != WHOLE]
        compartment = np.stack([levels.labels_[name] for name in names], axis=1)
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
            # Schaefer parcels replace the cubes in the cortex: voxels of a region of the
            # first level (the Yeo-7 networks by default).
            in_cortex = (cortex > 0) & (compartment[:, 0] >= 0)
            cells = np.where(in_cortex[:, None], np.c_[cortex, -cortex, -cortex], cells)
        _, assignment = np.unique(np.c_[cells, compartment], axis=0, return_inverse=True)
        self.set_assignment(assignment.ravel(), levels.labels_)
        return self

    def set_assignment(self, assignment: np.ndarray, level_labels: dict) -> BrainVectorizer:
        """Set the supervoxels directly (as a checkpoint stores them) instead of fitting.

        Parameters
        ----------
        assignment : :class:`numpy.ndarray`
            Supervoxel of each mask voxel.
        level_labels : :obj:`dict`
            Level name -> region of each mask voxel (-1: none).
        """
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
        return self

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
