"""The brain levels: one specification that every part of nimare-mnm reads.

A :class:`Level` names an atlas and the regions it contributes. :data:`LEVELS`, the default,
holds the Yeo-7 and Yeo-17 networks and the Harvard-Oxford subcortical structures; the whole
brain is always a level of its own and is not listed. The atlases
(:class:`~nimare_mnm.atlases.BrainLevels`), the brain vector
(:class:`~nimare_mnm.vectorizer.BrainVectorizer`, whose supervoxels never straddle two
regions of any level), the model (:class:`LevelLayout`, one level token per level), the
estimators (a ``z_level-<name>`` map and table rows per level, decoder rows per region) and
the checkpoints (which record their specification and load with it) all follow it, so adding
a level is one entry plus its atlas::

    from nimare_mnm.levels import LEVELS, Level

    hemispheres = Level("hemisphere", atlas="/path/to/hemispheres.nii.gz",
                        regions=("left", "right"))
    encoder = MNMEncoder(levels=LEVELS + (hemispheres,)).fit(studyset)

This module depends on NumPy alone (it sits under the model, which must not need NiMARE).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field

import numpy as np

__all__ = [
    "LEVELS",
    "SUBCORTICAL_STRUCTURES",
    "WHOLE",
    "YEO17_NAMES",
    "YEO7_NAMES",
    "Level",
    "LevelLayout",
    "check_levels",
    "levels_from_dicts",
    "levels_to_dicts",
]

#: Name of the level every map has: the whole brain (one region).
WHOLE = "whole"

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

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Level:
    """One level of the brain hierarchy: an atlas and the regions it contributes.

    Parameters
    ----------
    name : :obj:`str`
        Short lower-case identifier (``"yeo7"``); maps are called ``z_level-<name>``.
    atlas : :obj:`str`
        A name :func:`~nimare_mnm.atlases.load_atlas` knows (``"yeo7"``,
        ``"harvard_oxford_sub"``...) or the path of a NIfTI label image in MNI152 space.
    regions : :obj:`tuple` of :obj:`str`
        Region names, in the order of the level's regions.
    labels : :obj:`tuple` of :obj:`str`, optional
        The atlas labels (by name) that make the regions, one per region. Without them,
        voxel values 1..n of the atlas are the regions in order (0 is background) and the
        atlas must have exactly ``len(regions)`` of them.
    precedence : :obj:`int`, default=0
        A voxel in a region of a level of higher precedence belongs to no region of a level
        of lower precedence (the Harvard-Oxford structures win over Yeo's liberal cortical
        masks, which spill into the medial temporal lobe). Levels of equal precedence may
        overlap (Yeo-17 refines Yeo-7).
    pooled : :obj:`bool`, default=False
        The model embeds the level's regions together, as one part of the map (the
        subcortical structures are too small to train one by one); its maps and tables
        still have one entry per region.
    """

    name: str
    atlas: str
    regions: tuple[str, ...]
    labels: tuple[str, ...] | None = None
    precedence: int = 0
    pooled: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name) or self.name == WHOLE:
            raise ValueError(
                f"A level name must be a lower-case identifier other than {WHOLE!r}, "
                f"got {self.name!r}."
            )
        object.__setattr__(self, "atlas", str(self.atlas))
        object.__setattr__(self, "regions", tuple(str(r) for r in self.regions))
        if not self.regions or len(set(self.regions)) != len(self.regions):
            raise ValueError(f"Level {self.name!r} needs distinct region names.")
        if self.labels is not None:
            object.__setattr__(self, "labels", tuple(str(x) for x in self.labels))
            if len(self.labels) != len(self.regions):
                raise ValueError(
                    f"Level {self.name!r} has {len(self.regions)} regions but "
                    f"{len(self.labels)} atlas labels."
                )

    @property
    def model_regions(self) -> tuple[str, ...]:
        """Names of the parts the model embeds: the regions, or the level itself if pooled."""
        return (self.name,) if self.pooled else self.regions

    def to_dict(self) -> dict:
        """JSON-serialisable form."""
        out = asdict(self)
        out["regions"] = list(self.regions)
        out["labels"] = None if self.labels is None else list(self.labels)
        return out


#: The default levels: Yeo-7 and Yeo-17 networks (liberal masks) and the Harvard-Oxford
#: subcortical structures (Yeo covers the cortex only, so amygdala, striatum, thalamus and
#: hippocampus come from Harvard-Oxford; the model embeds them as one subcortical part).
LEVELS: tuple[Level, ...] = (
    Level("yeo7", "yeo7", YEO7_NAMES),
    Level("yeo17", "yeo17", YEO17_NAMES),
    Level(
        "subcortical",
        "harvard_oxford_sub",
        SUBCORTICAL_STRUCTURES,
        labels=SUBCORTICAL_STRUCTURES,
        precedence=1,
        pooled=True,
    ),
)


def check_levels(levels: Iterable[Level] | None) -> tuple[Level, ...]:
    """Return a validated level specification (:data:`LEVELS` when ``None``).

    Raises
    ------
    TypeError, ValueError
        Not a sequence of :class:`Level`, empty, or two levels with one name.
    """
    if levels is None:
        return LEVELS
    if isinstance(levels, (Level, str, Mapping)):
        raise TypeError("levels must be a sequence of Level objects, not a single one.")
    levels = tuple(levels)
    bad = [type(lv).__name__ for lv in levels if not isinstance(lv, Level)]
    if bad:
        raise TypeError(f"levels must hold nimare_mnm.levels.Level objects, got {bad}.")
    if not levels:
        raise ValueError("At least one level is needed besides the whole brain.")
    names = [lv.name for lv in levels]
    if len(set(names)) != len(names):
        raise ValueError(f"Level names must be distinct, got {names}.")
    return levels


def levels_to_dicts(levels: Iterable[Level]) -> list[dict]:
    """JSON form of a specification (what checkpoints record)."""
    return [lv.to_dict() for lv in check_levels(levels)]


def levels_from_dicts(data: list[dict] | None) -> tuple[Level, ...]:
    """Inverse of :func:`levels_to_dicts`; ``None`` (an older checkpoint) gives :data:`LEVELS`."""
    if data is None:
        return LEVELS
    try:
        return check_levels(Level(**item) for item in data)
    except TypeError as exc:
        raise ValueError(f"Invalid level specification {data!r}: {exc}") from exc


@dataclass
class LevelLayout:
    """Which brain-vector components make each part of each level, for the model.

    Parameters
    ----------
    compartment : :class:`numpy.ndarray`
        For each brain-vector component, its finest compartment (an int in
        ``[0, n_compartments)``); compartments are the intersections of all level regions.
    regions : :obj:`dict`
        For each level name, in the specification's order, an int array giving the part of
        each compartment (-1: none).
    names : :obj:`dict`
        For each level name, the part names (:attr:`Level.model_regions`).
    """

    compartment: np.ndarray
    regions: dict = field(default_factory=dict)
    names: dict = field(default_factory=dict)

    @classmethod
    def from_vectorizer(cls, vectorizer, levels: Iterable[Level] | None = None) -> LevelLayout:
        """Build the layout of a fitted :class:`~nimare_mnm.vectorizer.BrainVectorizer`.

        Parameters
        ----------
        vectorizer : :class:`~nimare_mnm.vectorizer.BrainVectorizer`
            Fitted; its ``parcel_level_`` gives the region of each component.
        levels : :obj:`tuple` of :class:`Level`, optional
            The specification (default :data:`LEVELS`).
        """
        levels = check_levels(levels)
        keys = np.stack([vectorizer.parcel_level_[lv.name] for lv in levels], axis=1)
        uniq, compartment = np.unique(keys, axis=0, return_inverse=True)
        regions, names = {}, {}
        for j, level in enumerate(levels):
            regions[level.name] = np.where(uniq[:, j] >= 0, 0, -1) if level.pooled else uniq[:, j]
            names[level.name] = list(level.model_regions)
        return cls(compartment.ravel().astype(np.int64), regions, names)

    @property
    def n_compartments(self) -> int:
        """Number of finest compartments."""
        return int(self.compartment.max()) + 1

    @property
    def level_names(self) -> list[str]:
        """Level names in order (level token ``i + 1`` is level ``i``; 0 is the whole brain)."""
        return list(self.regions)

    def region_matrix(self) -> tuple[np.ndarray, list[tuple[str, str]]]:
        """(n_regions, n_compartments) 0/1 matrix over all levels' parts, and their names."""
        rows, names = [], []
        for level, region_of in self.regions.items():
            for r, name in enumerate(self.names[level]):
                rows.append((region_of == r).astype(np.float32))
                names.append((level, name))
        return np.stack(rows), names

    def to_dict(self) -> dict:
        """JSON-serialisable form (arrays as lists)."""
        return {
            "compartment": self.compartment.tolist(),
            "regions": {k: v.tolist() for k, v in self.regions.items()},
            "names": self.names,
        }

    @classmethod
    def from_dict(cls, data: dict) -> LevelLayout:
        """Inverse of :meth:`to_dict`."""
        return cls(
            np.asarray(data["compartment"], dtype=np.int64),
            {k: np.asarray(v, dtype=np.int64) for k, v in data["regions"].items()},
            data["names"],
        )
