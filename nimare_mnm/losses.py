"""Training objectives, every term weighted and switchable.

One :class:`LossConfig` describes an objective: the published MNM objective, MERU, a
Euclidean CLIP (NeuroConText-style) and nimare-mnm's own are presets of the same code
(:data:`nimare_mnm.presets.PRESETS`), so baselines differ only by configuration.

Terms (all computed in full fp32):

``contrastive``
    InfoNCE between texts and their studies' whole-brain maps. ``"distance"``: logits are
    minus the geodesic distance (MERU); ``"angle"``: minus the exterior angle of the brain
    point seen from the text's entailment cone (MNM); ``"cosine"``: cosine similarity of
    L2-normalised Euclidean embeddings (CLIP). ``symmetric`` adds the brain -> text direction.
``centroid``
    MNM's centroid-distance regulariser: the batch centroids of text and brain points are
    pulled to target distances from the origin.
``hierarchy``
    MNM's brain hierarchy penalty: a map with broader activation than another should not be
    farther from the origin.
``entail_text_brain``
    Entailment cone: a text entails the map its study reports (text is the parent).
``entail_levels``
    Entailment cones between the whole-brain map and its level maps (each Yeo-7, Yeo-17
    network and the subcortical structures carrying enough of the study's activation).
``term_cones``
    Entailment cones of vocabulary terms: each term (with its term map, see
    :mod:`nimare_mnm.term_maps`) is the apex of a cone that should contain the text and
    brain points of the training studies using it. A term used by many different studies
    needs a wide cone, which only a point near the origin has.
``term_mean``
    Each vocabulary term's point is drawn to the hyperbolic mean of the text points of the
    training studies using it; the mean of many dissimilar studies lies nearer the origin
    than that of a few similar ones. The mean of all the batch's text points, the root every
    study shares, is drawn to the origin.
``reconstruction``
    1 - Pearson r between the decoder's prediction from the text point and the study's
    brain vector.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from nimare_mnm import lorentz
from nimare_mnm.model import SIMILARITIES, similarity

__all__ = ["LossConfig", "compute_losses"]


@dataclass
class LossConfig:
    """Weights and options of the training objective.

    Parameters
    ----------
    contrastive : {"distance", "angle", "cosine"}, default="distance"
        Similarity used by the contrastive term (and by retrieval).
    symmetric : :obj:`bool`, default=True
        Add the brain -> text direction to the contrastive term.
    w_contrastive, w_centroid, w_hierarchy, w_entail_text_brain, w_entail_levels, \
w_reconstruction, w_view_order, w_term_cones, w_term_mean : :obj:`float`
        Term weights; 0 switches a term off. ``view_order`` (used with query views, see
        :func:`nimare_mnm.training.train`) asks a study's short view to lie nearer the origin
        than its full text, by ``view_margin`` in log distance: a title or a few terms say
        less, so they are more general. ``term_mean`` draws each vocabulary term's point to
        the hyperbolic mean of the text points of the studies that use it (those held fixed):
        the squared distance between them, over the studies' mean squared radius. The mean
        of many studies that point in different directions lies nearer the origin than the
        mean of a few similar ones, so a term used widely ends nearer the origin.
    centroid_text_radius, centroid_brain_radius : :obj:`float`
        Target distances of the batch centroids from the origin (MNM).
    level_direction : {"whole_to_part", "part_to_whole"}, default="part_to_whole"
        Which of a whole-brain map and its level maps is the parent in the entailment cone.
    level_min_mass : :obj:`float`, default=0.05
        Level maps with less than this fraction of the study's activation are ignored.
    min_radius : :obj:`float`, default=0.1
        Entailment cones are defined outside this radius around the origin.
    """

    contrastive: str = "distance"
    symmetric: bool = True
    w_contrastive: float = 1.0
    w_centroid: float = 0.0
    w_hierarchy: float = 0.0
    w_entail_text_brain: float = 0.0
    w_entail_levels: float = 0.0
    w_reconstruction: float = 0.0
    w_view_order: float = 0.0
    w_term_cones: float = 0.0
    w_term_mean: float = 0.0
    view_margin: float = 0.2
    centroid_text_radius: float = 1.0
    centroid_brain_radius: float = 2.0
    level_direction: str = "part_to_whole"
    level_min_mass: float = 0.05
    min_radius: float = 0.1

    def __post_init__(self) -> None:
        if self.contrastive not in SIMILARITIES:
            raise ValueError(
                f"contrastive must be 'distance', 'angle' or 'cosine', got {self.contrastive!r}."
            )
        if self.level_direction not in ("whole_to_part", "part_to_whole"):
            raise ValueError(f"Unknown level_direction {self.level_direction!r}.")
        for name, value in asdict(self).items():
            if name.startswith("w_") and value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}.")

    @property
    def needs_levels(self) -> bool:
        """Whether level maps must be encoded."""
        return self.w_entail_levels > 0

    @property
    def needs_terms(self) -> bool:
        """Whether vocabulary terms and the studies that use them are needed."""
        return self.w_term_cones > 0 or self.w_term_mean > 0

    def check_geometry(self, geometry: str, whose: str = "the model's") -> None:
        """Refuse a geometry the enabled terms are not defined in.

        Raises
        ------
        ValueError
            ``w_term_mean > 0`` (defined in the Lorentz model) with another geometry.
        """
        if self.w_term_mean > 0 and geometry != "lorentz":
            raise ValueError(
                "The term mean term (w_term_mean > 0) is defined in the Lorentz model; "
                f"{whose} geometry is {geometry!r}."
            )

    def to_dict(self) -> dict:
        """Return the configuration as a JSON-serialisable dict."""
        return asdict(self)


def _pearson_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    pred = pred - pred.mean(dim=1, keepdim=True)
    target = target - target.mean(dim=1, keepdim=True)
    r = F.cosine_similarity(pred, target, dim=1, eps=1e-6)
    return (1.0 - r).mean()


def compute_losses(
    model,
    text: torch.Tensor,
    brain: torch.Tensor,
    config: LossConfig,
    *,
    breadth: torch.Tensor | None = None,
    region_mass: torch.Tensor | None = None,
    gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
    offset: int = 0,
    full_text: torch.Tensor | None = None,
    view_mask: torch.Tensor | None = None,
    term_text: torch.Tensor | None = None,
    term_child: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Compute every enabled loss term for one (local) batch.

    Parameters
    ----------
    model : :class:`~nimare_mnm.model.MNMModel`
        The network (unwrapped from DistributedDataParallel).
    text : :class:`torch.Tensor`
        (b, text_dim) text embeddings of the local batch.
    brain : :class:`torch.Tensor`
        (b, brain_dim) normalised brain vectors of the same studies.
    config : :class:`LossConfig`
        Which terms, with which weights.
    breadth : :class:`torch.Tensor`, optional
        (b,) breadth of each map's activation (needed by ``hierarchy``).
    region_mass : :class:`torch.Tensor`, optional
        (b, n_regions) fraction of each map's activation in each region (``entail_levels``).
    gather : callable, optional
        Concatenates a tensor across processes, keeping gradients (distributed training);
        batch-level terms then see the global batch. Identity when None.
    offset : :obj:`int`
        Position of the local batch in the gathered one.
    full_text, view_mask : :class:`torch.Tensor`, optional
        With query views: the studies' full-text embeddings (b, text_dim) and which rows of
        ``text`` are short views of them (b,) (needed by ``view_order``).
    term_text, term_child : :class:`torch.Tensor`, optional
        Text embeddings of vocabulary terms (m, text_dim) and, for each, the row of the batch
        of a study that uses it (m,) (needed by ``term_cones`` and ``term_mean``).

    Returns
    -------
    :obj:`dict`
        Each enabled term (weighted) and ``"total"``.
    """
    gather = gather or (lambda x: x)
    c = model.curvature
    need_levels = config.needs_levels and model.layout is not None
    if need_levels:
        brain_pts, region_pts = model.encode_levels(brain)
    else:
        brain_pts, region_pts = model.encode_brain(brain), None
    text_pts = model.encode_text(text)
    all_text, all_brain = gather(text_pts), gather(brain_pts)
    labels = torch.arange(offset, offset + text.shape[0], device=text.device)
    scale = model.logit_scale
    terms: dict[str, torch.Tensor] = {}

    if config.w_contrastive > 0:
        logits = scale * similarity(config.contrastive, text_pts, all_brain, c)
        loss = F.cross_entropy(logits, labels)
        if config.symmetric:
            logits_b = scale * similarity(config.contrastive, brain_pts, all_text, c)
            loss = 0.5 * (loss + F.cross_entropy(logits_b, labels))
        terms["contrastive"] = config.w_contrastive * loss

    if config.w_centroid > 0:
        text_center = lorentz.centroid(all_text, c)
        brain_center = lorentz.centroid(all_brain, c)
        loss = (lorentz.dist0(text_center, c) - config.centroid_text_radius) ** 2 + (
            lorentz.dist0(brain_center, c) - config.centroid_brain_radius
        ) ** 2
        terms["centroid"] = config.w_centroid * loss

    if config.w_hierarchy > 0:
        if breadth is None:
            raise ValueError("The hierarchy term needs the breadth of each map.")
        all_breadth = gather(breadth)
        d0_local, d0_all = lorentz.dist0(brain_pts, c), lorentz.dist0(all_brain, c)
        broader = (breadth[:, None] > all_breadth[None, :]).float()
        violation = F.relu(d0_local[:, None] - d0_all[None, :])
        loss = (broader * violation).sum() / broader.sum().clamp(min=1.0)
        terms["hierarchy"] = config.w_hierarchy * loss

    if config.w_entail_text_brain > 0:
        loss = lorentz.entailment_loss(text_pts, brain_pts, c, config.min_radius).mean()
        terms["entail_text_brain"] = config.w_entail_text_brain * loss

    if need_levels:
        if region_mass is None:
            raise ValueError("The level entailment term needs each region's mass.")
        valid = (region_mass >= config.level_min_mass).float()
        whole = brain_pts[:, None, :].expand_as(region_pts)
        if config.level_direction == "whole_to_part":
            cone = lorentz.entailment_loss(whole, region_pts, c, config.min_radius)
        else:
            cone = lorentz.entailment_loss(region_pts, whole, c, config.min_radius)
        loss = (cone * valid).sum() / valid.sum().clamp(min=1.0)
        terms["entail_levels"] = config.w_entail_levels * loss

    if config.w_view_order > 0 and view_mask is not None:
        if full_text is None:
            raise ValueError("The view order term needs the full texts of the views.")
        views = text_pts[view_mask]
        full = model.encode_text(full_text[view_mask])
        gap = torch.log(model.radius(views).clamp(min=1e-6)) - torch.log(
            model.radius(full).clamp(min=1e-6)
        )
        loss = torch.relu(gap + config.view_margin).mean() if len(views) else gap.sum()
        terms["view_order"] = config.w_view_order * loss

    if config.needs_terms and term_text is not None:
        if term_child is None or len(term_child) != len(term_text):
            raise ValueError("The term cone and term mean terms need one batch row per term.")
        apex = model.encode_text(term_text) if len(term_text) else None
        child = text_pts[term_child] if len(term_text) else None
        empty = text_pts.sum() * 0.0  # no study of this batch uses a term: keep the graph
        if config.w_term_cones > 0:
            if apex is None:
                loss = empty
            else:
                text_cone = lorentz.entailment_loss(apex, child, c, config.min_radius)
                brain_cone = lorentz.entailment_loss(
                    apex, brain_pts[term_child], c, config.min_radius
                )
                loss = 0.5 * (text_cone + brain_cone).mean()
            terms["term_cones"] = config.w_term_cones * loss
        if config.w_term_mean > 0:
            config.check_geometry(model.config.geometry, "this model's")
            # The root of the vocabulary, used by every study, is the origin: the mean of the
            # batch's text points is drawn to it (these points move). Scale-free, as below.
            spread = lorentz.dist0(all_text.detach(), c).pow(2).mean()
            root = lorentz.dist0(lorentz.centroid(all_text, c), c).pow(2)
            loss = root / spread.clamp_min(lorentz.eps_for(all_text.dtype))
            if apex is not None:
                child = child.detach()
                # The squared distance over the studies' mean squared radius, so shrinking
                # every text point does not lower it.
                spread = model.radius(child).pow(2).mean().clamp_min(lorentz.eps_for(child.dtype))
                loss = loss + lorentz.dist(apex, child, c).pow(2).mean() / spread
            terms["term_mean"] = config.w_term_mean * loss

    if config.w_reconstruction > 0:
        terms["reconstruction"] = config.w_reconstruction * _pearson_loss(
            model.decode(text_pts), brain
        )

    if not terms:
        raise ValueError("Every loss weight is 0: nothing to train.")
    terms["total"] = torch.stack(list(terms.values())).sum()
    return terms
