"""Brain figures for the web app: nilearn's interactive slice viewer and a glass brain.

Both come from nilearn and work offline: :func:`nilearn.plotting.view_img` writes a
self-contained HTML page (its JavaScript is inlined from nilearn's package data) and
:func:`nilearn.plotting.plot_glass_brain` a PNG.
"""

from __future__ import annotations

import io
import threading
import warnings
from functools import lru_cache

import nibabel as nib
import numpy as np

__all__ = ["glass_brain_png", "viewer_html", "warm_up"]

#: Display threshold (|z|) of the figures.
THRESHOLD = 2.0

# matplotlib's pyplot state is global: one figure at a time.
_PLOT_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def _background():
    """Return nilearn's MNI152 template on the brain mask's grid (no stat map is resampled)."""
    from nilearn.datasets import load_mni152_template
    from nilearn.image import resample_to_img

    from nimare_mnm.atlases import load_mask

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return resample_to_img(
            load_mni152_template(resolution=2),
            load_mask(),
            interpolation="continuous",
            force_resample=True,
            copy_header=True,
        )


def warm_up() -> None:
    """Build the viewer's background once (about a second), before the first request."""
    _background()


def _peak(img: nib.Nifti1Image) -> np.ndarray:
    """World coordinates of the largest absolute value: where the viewer opens."""
    data = np.asanyarray(img.dataobj)
    ijk = np.unravel_index(int(np.argmax(np.abs(data))), data.shape)
    return nib.affines.apply_affine(img.affine, ijk)


def viewer_html(img: nib.Nifti1Image, threshold: float = THRESHOLD) -> str:
    """Return a self-contained HTML page with nilearn's interactive slice viewer of ``img``.

    Parameters
    ----------
    img : :class:`nibabel.nifti1.Nifti1Image`
        A 3D map on the MNI152 2 mm grid (what the encoder predicts).
    threshold : :obj:`float`, default=2.0
        Values with a smaller absolute value are transparent.
    """
    from nilearn.plotting import view_img

    with _PLOT_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        view = view_img(
            img,
            bg_img=_background(),
            threshold=threshold,
            cut_coords=_peak(img),
            symmetric_cmap=True,
            colorbar=True,
            title=None,
            width_view=530,
        )
    return view.get_standalone()


def glass_brain_png(img: nib.Nifti1Image, threshold: float = THRESHOLD, dpi: int = 72) -> bytes:
    """Draw a glass brain of ``img`` (positive and negative values) as PNG bytes."""
    from matplotlib.figure import Figure
    from nilearn.plotting import plot_glass_brain

    buffer = io.BytesIO()
    with _PLOT_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # A bare Figure (no pyplot): nothing is registered in a global figure manager.
        figure = Figure(figsize=(7.5, 2.8))
        plot_glass_brain(
            img,
            figure=figure,
            threshold=threshold,
            plot_abs=False,
            colorbar=True,
            display_mode="lyrz",
        )
        figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()
