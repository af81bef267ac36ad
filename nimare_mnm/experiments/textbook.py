"""Textbook queries: where a predicted map must peak, by the Harvard-Oxford atlases.

A product check of a text -> brain model: twelve queries whose activation is in every
textbook (finger tapping in the precentral and postcentral gyri, fear conditioning in the
amygdala...). :func:`textbook_hits` says, for each, in which structure the predicted map
peaks and whether that is one of the expected ones. ``benchmarks/bench_estimators.py``
reports it for the shipped model and the tests check it together with a control.
"""

from __future__ import annotations

import numpy as np

__all__ = ["TEXTBOOK", "textbook_hits"]

#: Textbook queries and the Harvard-Oxford structures (neuroparc names) where the predicted
#: map must peak, searched within the cortical ("cort") or subcortical ("sub") atlas. The
#: saccade network includes the supplementary eye field, in the juxtapositional lobule
#: (the atlas spells it "Justapositional").
TEXTBOOK = {
    "finger tapping": ("cort", ["Precentral_Gyrus", "Postcentral_Gyrus"]),
    "face recognition": (
        "cort",
        [
            "Temporal_Occipital_Fusiform_Cortex",
            "Occipital_Fusiform_Gyrus",
            "Temporal_Fusiform_Cortex_posterior_division",
            "Lateral_Occipital_Cortex_inferior_division",
        ],
    ),
    "fear conditioning": ("sub", ["Left_Amygdala", "Right_Amygdala"]),
    "listening to tones": (
        "cort",
        [
            "Heschl's_Gyrus_(includes_H1_and_H2)",
            "Planum_Temporale",
            "Planum_Polare",
            "Superior_Temporal_Gyrus_posterior_division",
            "Superior_Temporal_Gyrus_anterior_division",
        ],
    ),
    "monetary reward anticipation": (
        "sub",
        [f"{side}_{s}" for side in ("Left", "Right") for s in ("Accumbens", "Caudate", "Putamen")],
    ),
    "episodic memory encoding": ("sub", ["Left_Hippocampus", "Right_Hippocampus"]),
    "spatial navigation": ("sub", ["Left_Hippocampus", "Right_Hippocampus"]),
    "sentence comprehension": (
        "cort",
        [
            "Inferior_Frontal_Gyrus_pars_triangularis",
            "Inferior_Frontal_Gyrus_pars_opercularis",
            "Superior_Temporal_Gyrus_posterior_division",
            "Superior_Temporal_Gyrus_anterior_division",
            "Middle_Temporal_Gyrus_posterior_division",
            "Middle_Temporal_Gyrus_anterior_division",
        ],
    ),
    "painful heat": (
        "cort",
        [
            "Insular_Cortex",
            "Central_Opercular_Cortex",
            "Parietal_Operculum_Cortex",
            "Cingulate_Gyrus_anterior_division",
        ],
    ),
    "saccadic eye movements": (
        "cort",
        [
            "Precentral_Gyrus",  # frontal eye fields
            "Superior_Frontal_Gyrus",
            "Middle_Frontal_Gyrus",
            "Justapositional_Lobule_Cortex_(formerly_Supplementary_Motor_Cortex)",  # SEF
            "Superior_Parietal_Lobule",  # parietal eye field
        ],
    ),
    "visual word form reading": (
        "cort",
        [
            "Temporal_Occipital_Fusiform_Cortex",
            "Inferior_Temporal_Gyrus_temporoocipital_part",
            "Occipital_Fusiform_Gyrus",
            "Lateral_Occipital_Cortex_inferior_division",
        ],
    ),
    # The 19 NeuroQuery training studies that mention a checkerboard peak, on average, in the
    # temporo-occipital inferior temporal gyrus rather than V1: a model that follows its
    # corpus may miss this one.
    "visual checkerboard stimulation": (
        "cort",
        [
            "Occipital_Pole",
            "Intracalcaring_Cortex",
            "Supracalcarine_Cortex",
            "Lingual_Gyrus",
            "Cuneal_Cortex",
            "Lateral_Occipital_Cortex_inferior_division",
        ],
    ),
}


def textbook_hits(encoder, data_dir, queries: dict | None = None, maps=None) -> dict:
    """Where each textbook query's predicted map peaks, within its atlas.

    Parameters
    ----------
    encoder : :class:`~nimare_mnm.encoder.MNMEncoder`
        Fitted.
    data_dir : path-like
        Folder with the Harvard-Oxford atlases (``atlases/``).
    queries : :obj:`dict`, optional
        Query -> ``(atlas kind, expected structures)``; default :data:`TEXTBOOK`.
    maps : sequence of :class:`numpy.ndarray`, optional
        The maps to score, one per query (default: the encoder's predictions).

    Returns
    -------
    :obj:`dict`
        Query -> ``(structure at the peak, whether it is expected)``.
    """
    from nimare_mnm.atlases import load_atlas, load_mask
    from nimare_mnm.levels import SUBCORTICAL_STRUCTURES

    mask = np.asanyarray(load_mask().dataobj) > 0
    atlases = {}
    for kind in ("cort", "sub"):
        img, names = load_atlas(f"harvard_oxford_{kind}", data_dir)
        labels = np.asanyarray(img.dataobj)[mask]
        names = np.asarray(names, dtype=object)
        inside = labels > 0
        if kind == "sub":
            inside &= np.isin(names[labels], SUBCORTICAL_STRUCTURES)
        atlases[kind] = (names[labels], inside)
    queries = TEXTBOOK if queries is None else queries
    maps = encoder.predict_maps(list(queries)) if maps is None else maps
    found = {}
    for (query, (kind, expected)), z in zip(queries.items(), maps):
        names, inside = atlases[kind]
        peak = np.flatnonzero(inside)[np.argmax(z[inside])]
        found[query] = (str(names[peak]), bool(names[peak] in expected))
    return found
