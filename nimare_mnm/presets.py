"""Named configurations of the models nimare-mnm trains and compares.

A :class:`Preset` keeps apart what it sets: the architecture (``geometry``, ``decoder`` and
further :class:`~nimare_mnm.model.MNMConfig` settings), the objective (a
:class:`~nimare_mnm.losses.LossConfig`), the optimisation (further
:class:`~nimare_mnm.training.TrainConfig` settings) and the training data (``query_views``).
:class:`~nimare_mnm.encoder.MNMEncoder` takes one by name; the benchmark trains every row
through it, so baselines differ only by configuration.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from nimare_mnm.losses import LossConfig
from nimare_mnm.model import MNMConfig

__all__ = ["PRESETS", "Preset", "preset"]


@dataclass(frozen=True)
class Preset:
    """One model configuration.

    Parameters
    ----------
    loss : :class:`~nimare_mnm.losses.LossConfig`
        The objective; its ``contrastive`` similarity also ranks at inference.
    geometry : {"lorentz", "euclidean"}
        Geometry of the shared space.
    decoder : :obj:`bool`
        Whether the model has a decoder head (else maps are neighbour means).
    model : :obj:`dict`, optional
        Further :class:`~nimare_mnm.model.MNMConfig` settings.
    train : :obj:`dict`, optional
        Further :class:`~nimare_mnm.training.TrainConfig` settings.
    query_views : :obj:`bool`, default=False
        Also train on short views of each study (title, keywords, a few terms), see
        :func:`nimare_mnm.training.query_views`.
    term_maps : :obj:`int`, default=0
        Also train on (term, term map) pairs: every NeuroQuery vocabulary term used by at
        least this many training studies, paired with the mean brain map of those studies
        (:func:`nimare_mnm.term_maps.build_term_maps`, never the validation studies); 0
        turns it off.
    term_features : :obj:`int`, default=0
        The text head also reads the TF-IDF of the vocabulary terms that at least this many
        training texts use (:mod:`nimare_mnm.term_features`), a trainable embedding bag next
        to the frozen sentence embedding; 0 turns it off.
    """

    loss: LossConfig
    geometry: str
    decoder: bool
    model: Mapping = field(default_factory=dict)
    train: Mapping = field(default_factory=dict)
    query_views: bool = False
    term_maps: int = 0
    term_features: int = 0

    def __post_init__(self) -> None:
        if self.geometry not in ("lorentz", "euclidean"):
            raise ValueError(f"geometry must be 'lorentz' or 'euclidean', got {self.geometry!r}.")
        if not isinstance(self.term_maps, int) or self.term_maps < 0:
            raise ValueError(f"term_maps must be an integer >= 0, got {self.term_maps!r}.")
        if not isinstance(self.term_features, int) or self.term_features < 0:
            raise ValueError(f"term_features must be an integer >= 0, got {self.term_features!r}.")
        if self.loss.needs_terms and not self.term_maps:
            raise ValueError(
                "Term cones and term means (w_term_cones, w_term_mean > 0) need term maps: set "
                "term_maps to the fewest studies a term needs."
            )
        self.loss.check_geometry(self.geometry, "this preset's")
        object.__setattr__(self, "model", MappingProxyType(dict(self.model)))
        object.__setattr__(self, "train", MappingProxyType(dict(self.train)))

    @property
    def similarity(self) -> str:
        """The similarity the model is trained with and ranks by."""
        return self.loss.contrastive

    def model_config(self, **settings) -> MNMConfig:
        """Return the architecture, completed by ``settings`` (dimensions, widths...)."""
        return MNMConfig(
            geometry=self.geometry, decoder=self.decoder, **{**self.model, **settings}
        )


# Exterior-angle contrastive in both directions: on the NeuroQuery validation split (10
# epochs, no level term) it reached Recall@10 13.3 % against 9.9 % by distance. The linear
# decoder is fitted in closed form after training, so no reconstruction term. Query views
# (title, keywords, a few terms), validation split, same seed, against no views: Recall@10
# with the title as query 8.4 -> 9.0 %, with the keywords 8.0 -> 9.1 %, with a few terms
# 5.4 -> 6.4 %, full text 13.1 -> 13.9 %. Views alone pushed single words farther from the
# origin than sentences (term radius vs frequency rho +0.11); the view order term undoes it
# (-0.05 for the shipped model). A weight of 1.0 instead of 0.1 pushed the terms so near the
# origin that decoding suffered. The text head reads the frozen MiniLM embedding only.
_NIMARE_MNM_V1 = Preset(
    loss=LossConfig(
        contrastive="angle",
        symmetric=True,
        w_entail_text_brain=0.1,
        w_entail_levels=0.05,
        w_view_order=0.1,
    ),
    geometry="lorentz",
    decoder=True,
    query_views=True,
)

# Model v2: the same, and the text head also reads the TF-IDF of the NeuroQuery terms used by
# at least 10 training texts (a trainable embedding bag beside the frozen MiniLM embedding).
# Validation split, 3 seeds, against v1 in the same run (benchmarks/results/
# term-features-validation): text->brain Recall@10 15.1 +- 0.9 % against 11.3 +- 0.7,
# brain->text 14.0 against 9.4, map r 0.148 against 0.140. Term maps as extra training pairs
# and a floor on the text radius did not help v1 (term-maps-validation, radius-floor-
# validation).
_NIMARE_MNM_V2 = replace(_NIMARE_MNM_V1, term_features=10)

# v2.1: v2 without the entailment term between a whole-brain map and its Yeo-7, Yeo-17 and
# subcortical maps, and brain points kept within 4 of the origin. The per-level outputs do not
# depend on that term (they summarise the decoded map per region). Validation split, 3 seeds,
# against v2 in the same run (benchmarks/results/level-cones-cap-validation): text->brain
# Recall@10 and map r not distinguishable (see that run's verdicts), the fit 2.4-2.7 times
# faster. Without the bound the brain points drifted to radius 4.1-4.5, where float32
# distances lose resolution (level-cones-validation).
_NIMARE_MNM_V21 = replace(
    _NIMARE_MNM_V2,
    loss=replace(_NIMARE_MNM_V2.loss, w_entail_levels=0.0),
    model={"max_brain_radius": 4.0},
)

# The default: v2.1, and a text hierarchy. Every NeuroQuery term used by at least 20 training
# studies (never the studies training validates on) becomes a training pair with its term map,
# its point is drawn to the hyperbolic mean of its studies' text points, and the mean of all
# text points to the origin (w_term_mean). A term used by many different studies so lands
# nearer the origin than a specific one. Validation split, 3 seeds, against v2.1 in the same
# run (benchmarks/results/term-means-validation): generality rho -0.56 against +0.01, ladders
# outward 5.3 of 8 against 0.3, decoding per-term AUC 0.618 against 0.601, text->brain
# Recall@10 and map r not distinguishable. Scouting (one seed): weight 1.0 gave rho -0.79 but
# Recall@10 13.9 against 16.4 at 0.3; term maps alone rho -0.15; without the origin as root the
# frequent terms moved outward (rho +0.30), towards the off-centre mean of the study texts.
_NIMARE_MNM = replace(
    _NIMARE_MNM_V21,
    loss=replace(_NIMARE_MNM_V21.loss, w_term_mean=0.3),
    term_maps=20,
)

PRESETS: Mapping[str, Preset] = MappingProxyType(
    {
        "nimare-mnm": _NIMARE_MNM,
        # The default before the text hierarchy (no term maps, no term means).
        "nimare-mnm-v2.1": _NIMARE_MNM_V21,
        # Model v2 as first shipped (with the level term), kept for comparison.
        "nimare-mnm-v2": _NIMARE_MNM_V2,
        # The model shipped before model v2 (MiniLM only), kept for comparison.
        "nimare-mnm-v1": _NIMARE_MNM_V1,
        # Candidate for the text hierarchy, built on v2: term maps as training pairs, every
        # term the apex of an entailment cone containing the text and brain points of its
        # studies, text points kept at least 0.5 from the origin (out of the zone where cones
        # are saturated) and brain points within 4 of it (without that bound the cones drove
        # them to radius 6.7-7.5, past float32's resolution). Validation split only; not the
        # default.
        "nimare-mnm-cones": replace(
            _NIMARE_MNM_V2,
            loss=replace(_NIMARE_MNM_V2.loss, w_term_cones=0.1),
            model={"min_text_radius": 0.5, "max_brain_radius": 4.0},
            term_maps=20,
        ),
        # MNM as its repository trains it: one-directional exterior-angle contrastive,
        # centroid regulariser 0.5, hierarchy penalty 30, dropout 0.6, weight decay 0.05,
        # every epoch run and the best kept (no early stopping; here the best on
        # validation), with batch 4096, learning rate 1e-4 and 200 epochs (the MNMEncoder
        # parameters the benchmark sets). Our text encoder, brain vector and loss code: a
        # reimplementation, not the published model.
        "mnm": Preset(
            loss=LossConfig(
                contrastive="angle",
                symmetric=False,
                w_centroid=0.5,
                w_hierarchy=30.0,
            ),
            geometry="lorentz",
            decoder=False,
            model={"dropout": 0.6},
            train={"weight_decay": 0.05, "patience": 200},
        ),
        "meru": Preset(
            loss=LossConfig(contrastive="distance", symmetric=True, w_entail_text_brain=0.2),
            geometry="lorentz",
            decoder=False,
        ),
        "clip": Preset(
            loss=LossConfig(contrastive="cosine", symmetric=True),
            geometry="euclidean",
            decoder=False,
        ),
    }
)


def preset(name: str, **loss_overrides) -> Preset:
    """Return a preset, with loss weights overridden by keyword.

    Raises
    ------
    ValueError
        Unknown preset name.
    """
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}; choose from {sorted(PRESETS)}.")
    entry = PRESETS[name]
    return replace(entry, loss=replace(entry.loss, **loss_overrides))
