"""The MNM network: text and brain encoders into one Lorentz space, and a map decoder.

Text embeddings (from :class:`nimare_mnm.text.TextEncoder`) and brain vectors (from
:class:`nimare_mnm.vectorizer.BrainVectorizer`) are projected to tangent vectors at the origin of
the hyperboloid, scaled by a learnable factor, and lifted with the exponential map. The brain
encoder is shared across levels: a level's map is the whole-brain map restricted to one
part of a level (by default a Yeo-7 or Yeo-17 network, or the subcortical structures; see
:mod:`nimare_mnm.levels`), and because the brain
vector's supervoxels never straddle regions, the first layer's output for every region of
every level comes from one matrix product over the finest compartments.

``geometry="euclidean"`` turns the same network into a NeuroConText-style CLIP model
(L2-normalised embeddings, cosine logits), so that baselines share the code.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from nimare_mnm import lorentz
from nimare_mnm.levels import LevelLayout

__all__ = [
    "SIMILARITIES",
    "MNMConfig",
    "MNMModel",
    "embed_all",
    "radius_to_generality",
    "similarity",
]

LOG_C_MIN, LOG_C_MAX = math.log(0.1), math.log(10.0)
MAX_LOGIT_SCALE = 100.0


@dataclass
class MNMConfig:
    """Architecture of :class:`MNMModel`.

    Parameters
    ----------
    text_dim : :obj:`int`
        Dimension of the input text embeddings (384 for all-MiniLM-L6-v2).
    brain_dim : :obj:`int`
        Length of the brain vector.
    embed_dim : :obj:`int`, default=128
        Dimension of the shared space (space coordinates of the hyperboloid).
    hidden_dim : :obj:`int`, default=256
        Width of the hidden layers.
    n_blocks : :obj:`int`, default=2
        Residual blocks in the brain encoder.
    geometry : {"lorentz", "euclidean"}, default="lorentz"
        The shared space.
    curvature : :obj:`float`, default=1.0
        Initial curvature c (the space has curvature -c); learnable, clamped to [0.1, 10].
    learn_curvature : :obj:`bool`, default=True
        Whether c is learned.
    temperature : :obj:`float`, default=0.07
        Initial softmax temperature; the logit scale 1/temperature is capped at 100.
    dropout : :obj:`float`, default=0.1
        Dropout in the encoders and the decoder.
    decoder : :obj:`bool`, default=True
        Include the decoder head (text point -> brain vector).
    decoder_kind : {"linear", "mlp"}, default="linear"
        "linear": one affine map from the text point's tangent vector, refitted in closed
        form after training (see :func:`nimare_mnm.training.fit_linear_decoder`); "mlp": a
        two-hidden-layer network trained with the reconstruction loss only. On the NeuroQuery
        validation split the linear decoder predicts maps better (mean Pearson r 0.153
        against 0.121 for the MLP).
    n_level_tokens : :obj:`int`, default=4
        Number of levels (whole, Yeo-7, Yeo-17, subcortical); each gets a learned embedding
        added to the brain encoder's hidden state.
    input_scale : :obj:`float`, default=0.25
        Initial value of the learnable factors applied to the text and brain tangent vectors
        before the exponential map. 0.25 gives initial radii near 1; on NeuroQuery it
        reached 9.1 % validation Recall@10 against 8.1 % with MERU's 1/sqrt(embed_dim).
    min_text_radius : :obj:`float`, default=0.0
        Smallest distance of a text point to the origin (Lorentz geometry; 0: none): the
        text tangent vector's norm is shifted by this much. Text points nearer the origin
        than about ``0.2 / sqrt(c)`` have entailment cones saturated at pi/2, which
        constrain nothing.
    max_brain_radius : :obj:`float`, default=0.0
        Largest distance of a brain point to the origin (Lorentz geometry; 0: none): the
        brain tangent vector's norm ``r`` becomes ``R tanh(r / R)``, near ``r`` for points well
        inside. Terms that pull brain points into narrow cones push them outwards, and float32
        distances lose resolution past a radius of about 4.
    """

    text_dim: int
    brain_dim: int
    embed_dim: int = 128
    hidden_dim: int = 256
    n_blocks: int = 2
    geometry: str = "lorentz"
    curvature: float = 1.0
    learn_curvature: bool = True
    temperature: float = 0.07
    dropout: float = 0.1
    decoder: bool = True
    decoder_kind: str = "linear"
    n_level_tokens: int = 4
    input_scale: float = 0.25
    min_text_radius: float = 0.0
    max_brain_radius: float = 0.0

    def __post_init__(self) -> None:
        if self.geometry not in ("lorentz", "euclidean"):
            raise ValueError(f"geometry must be 'lorentz' or 'euclidean', got {self.geometry!r}.")
        if self.decoder_kind not in ("linear", "mlp"):
            raise ValueError(f"decoder_kind must be 'linear' or 'mlp', got {self.decoder_kind!r}.")
        if not 0.1 <= self.curvature <= 10.0:
            raise ValueError(f"curvature must be in [0.1, 10], got {self.curvature}.")
        if self.min_text_radius < 0:
            raise ValueError(f"min_text_radius must be >= 0, got {self.min_text_radius}.")
        if self.max_brain_radius < 0:
            raise ValueError(f"max_brain_radius must be >= 0, got {self.max_brain_radius}.")
        if self.text_dim <= 0 or self.brain_dim <= 0 or self.embed_dim <= 0:
            raise ValueError("text_dim, brain_dim and embed_dim must be positive.")

    def to_dict(self) -> dict:
        """Return the configuration as a JSON-serialisable dict."""
        return asdict(self)


class _Residual(nn.Module):
    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, dim)
        self.fc2 = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(self.drop(torch.nn.functional.gelu(self.fc1(self.norm(x)))))


class MNMModel(nn.Module):
    """Text and brain encoders into a shared Lorentz (or Euclidean) space, plus a decoder.

    Parameters
    ----------
    config : :class:`MNMConfig`
        Architecture.
    layout : :class:`LevelLayout`, optional
        Level structure of the brain vector; without it only whole-brain maps are encoded.
    """

    def __init__(self, config: MNMConfig, layout: LevelLayout | None = None) -> None:
        super().__init__()
        self.config = config
        self.layout = layout
        h, d = config.hidden_dim, config.embed_dim
        self.text_head = nn.Sequential(
            nn.Linear(config.text_dim, h),
            nn.GELU(),
            nn.Dropout(config.dropout),
            nn.Linear(h, d),
        )
        self.brain_in = nn.Linear(config.brain_dim, h)
        self.level_token = nn.Embedding(config.n_level_tokens, h)
        nn.init.zeros_(self.level_token.weight)
        self.brain_blocks = nn.Sequential(
            *[_Residual(h, config.dropout) for _ in range(config.n_blocks)]
        )
        self.brain_out = nn.Sequential(nn.LayerNorm(h), nn.Linear(h, d))
        if config.decoder and config.decoder_kind == "linear":
            self.decoder = nn.Linear(d, config.brain_dim)
        elif config.decoder:
            self.decoder = nn.Sequential(
                nn.Linear(d, h),
                nn.GELU(),
                nn.Dropout(config.dropout),
                nn.Linear(h, h),
                nn.GELU(),
                nn.Linear(h, config.brain_dim),
            )
        else:
            self.decoder = None
        # Scalars: stored as logs, excluded from weight decay by the trainer.
        self.log_c = nn.Parameter(
            torch.tensor(math.log(config.curvature)), requires_grad=config.learn_curvature
        )
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / config.temperature)))
        # Learnable input scales keep the initial tangent norms moderate.
        self.log_text_alpha = nn.Parameter(torch.tensor(math.log(config.input_scale)))
        self.log_brain_alpha = nn.Parameter(torch.tensor(math.log(config.input_scale)))
        if layout is not None:
            region_matrix, self.region_names = layout.region_matrix()
            order = np.argsort(layout.compartment, kind="stable")
            bounds = np.searchsorted(
                layout.compartment[order], np.arange(layout.n_compartments + 1)
            )
            self.register_buffer("component_order", torch.as_tensor(order))
            self._segments = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
            self.register_buffer("region_matrix", torch.as_tensor(region_matrix))
            if len(layout.level_names) >= config.n_level_tokens:
                raise ValueError(
                    f"The layout has {len(layout.level_names)} levels but the model only "
                    f"{config.n_level_tokens - 1} level tokens (n_level_tokens counts the "
                    "whole brain too)."
                )
            level_ids = [layout.level_names.index(lv) + 1 for lv, _ in self.region_names]
            self.register_buffer("region_level", torch.as_tensor(level_ids))
        else:
            self.region_names = []

    # ------------------------------------------------------------------ scalars
    @property
    def curvature(self) -> torch.Tensor:
        """Curvature c (> 0), clamped to [0.1, 10]."""
        return self.log_c.clamp(LOG_C_MIN, LOG_C_MAX).exp()

    @property
    def logit_scale(self) -> torch.Tensor:
        """Inverse temperature, capped at 100."""
        return self.log_logit_scale.clamp(max=math.log(MAX_LOGIT_SCALE)).exp()

    def scalar_parameters(self) -> list[nn.Parameter]:
        """Parameters that must not get weight decay."""
        return [self.log_c, self.log_logit_scale, self.log_text_alpha, self.log_brain_alpha]

    # ------------------------------------------------------------------ encoders
    def _lift(
        self,
        tangent: torch.Tensor,
        log_alpha: torch.Tensor,
        min_norm: float = 0.0,
        max_norm: float = 0.0,
    ) -> torch.Tensor:
        # Geometry in full fp32 whatever the surrounding precision.
        tangent = tangent.float() * log_alpha.exp().float()
        if self.config.geometry == "euclidean":
            return torch.nn.functional.normalize(tangent, dim=-1)
        if min_norm > 0:
            # |v| -> |v| + min_norm: the point's distance to the origin is at least min_norm.
            norm = tangent.norm(dim=-1, keepdim=True).clamp_min(lorentz.eps_for(tangent.dtype))
            tangent = tangent * (1.0 + min_norm / norm)
        if max_norm > 0:
            # |v| -> R tanh(|v| / R): the point's distance to the origin stays below R.
            norm = tangent.norm(dim=-1, keepdim=True).clamp_min(lorentz.eps_for(tangent.dtype))
            tangent = tangent * (max_norm * torch.tanh(norm / max_norm) / norm)
        return lorentz.expmap0(tangent, self.curvature.float())

    def encode_text(self, text: torch.Tensor) -> torch.Tensor:
        """Points (space coordinates) of text embeddings, shape (n, embed_dim)."""
        return self._lift(self.text_head(text), self.log_text_alpha, self.config.min_text_radius)

    def _lift_brain(self, tangent: torch.Tensor) -> torch.Tensor:
        return self._lift(tangent, self.log_brain_alpha, max_norm=self.config.max_brain_radius)

    def _brain_hidden(self, pre: torch.Tensor, level: torch.Tensor | int) -> torch.Tensor:
        token = self.level_token(torch.as_tensor(level, device=pre.device))
        return self.brain_blocks(pre + token)

    def encode_brain(self, brain: torch.Tensor) -> torch.Tensor:
        """Points of whole-brain vectors, shape (n, embed_dim)."""
        hidden = self._brain_hidden(self.brain_in(brain), 0)
        return self._lift_brain(self.brain_out(hidden))

    def encode_levels(self, brain: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Whole-brain and region points in one pass.

        Parameters
        ----------
        brain : :class:`torch.Tensor`
            (n, brain_dim) brain vectors.

        Returns
        -------
        whole : :class:`torch.Tensor`
            (n, embed_dim) whole-brain points.
        regions : :class:`torch.Tensor`
            (n, n_regions, embed_dim) points of each region's map (the map restricted to
            the region), regions ordered as :attr:`region_names`.
        """
        if self.layout is None:
            raise RuntimeError("This model has no level layout; use encode_brain().")
        # The first layer is linear, so each region's pre-activation is a sum of
        # per-compartment partial products: one pass over the brain vector for all levels.
        x = brain[:, self.component_order]
        w = self.brain_in.weight[:, self.component_order]
        partial = torch.stack([x[:, a:b] @ w[:, a:b].T for a, b in self._segments], dim=1)
        region_pre = torch.einsum("rc,nch->nrh", self.region_matrix, partial)
        region_pre = region_pre + self.brain_in.bias
        whole_pre = partial.sum(1) + self.brain_in.bias
        region_hidden = self._brain_hidden(region_pre, self.region_level)
        whole_hidden = self._brain_hidden(whole_pre, 0)
        whole = self._lift_brain(self.brain_out(whole_hidden))
        regions = self._lift_brain(self.brain_out(region_hidden))
        return whole, regions

    def decode(self, text_points: torch.Tensor) -> torch.Tensor:
        """Predicted brain vectors from text points (through the tangent space)."""
        if self.decoder is None:
            raise RuntimeError("This model was built without a decoder head.")
        if self.config.geometry == "euclidean":
            tangent = text_points
        else:
            tangent = lorentz.logmap0(text_points, self.curvature)
        return self.decoder(tangent)

    def radius(self, points: torch.Tensor) -> torch.Tensor:
        """Distance to the origin (hyperbolic) or norm (Euclidean): lower is more general."""
        if self.config.geometry == "euclidean":
            return points.norm(dim=-1)
        return lorentz.dist0(points, self.curvature)

    def similarity(self, kind: str, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """All-pairs :func:`similarity` of ``kind`` at this model's curvature."""
        return similarity(kind, queries, keys, self.curvature)


def radius_to_generality(radius):
    """Generality from the distance to the origin: ``exp(-radius)``, 1 at the origin.

    Higher is more general; it falls towards 0 as points move outward.
    """
    return np.exp(-np.asarray(radius, dtype=np.float64))


#: Similarities between points of the shared space (see :func:`similarity`).
SIMILARITIES = ("distance", "angle", "cosine")


def similarity(
    kind: str, queries: torch.Tensor, keys: torch.Tensor, curvature: torch.Tensor
) -> torch.Tensor:
    """All-pairs similarity (higher is closer) between query and key points.

    Parameters
    ----------
    kind : {"distance", "angle", "cosine"}
        Minus the geodesic distance; minus the exterior angle of each key seen from the
        entailment cone of each query (asymmetric: queries are the general side, text
        points in training); the cosine (Euclidean geometry).
    queries, keys : :class:`torch.Tensor`
        Points, (n, d) and (m, d).
    curvature : :class:`torch.Tensor`
        Curvature c of the Lorentz model (ignored for "cosine").

    Returns
    -------
    :class:`torch.Tensor`
        (n, m) similarities.
    """
    if kind == "cosine":
        return queries @ keys.T
    if kind == "distance":
        return -lorentz.pairwise_dist(queries, keys, curvature)
    if kind == "angle":
        return -lorentz.pairwise_exterior_angle(queries, keys, curvature)
    raise ValueError(f"Unknown similarity {kind!r}; choose from {SIMILARITIES}.")


@torch.no_grad()
def embed_all(model: MNMModel, data: np.ndarray, kind: str, device="cpu", batch: int = 2048):
    """Points of texts (``kind="text"``) or whole-brain vectors (``"brain"``), in batches."""
    if kind not in ("text", "brain"):
        raise ValueError(f"kind must be 'text' or 'brain', got {kind!r}.")
    model.eval()
    out = []
    for start in range(0, len(data), batch):
        chunk = torch.as_tensor(data[start : start + batch], device=device)
        out.append(model.encode_text(chunk) if kind == "text" else model.encode_brain(chunk))
    return torch.cat(out)
