"""Training the MNM backbone: validation-based model selection, NaN guard, DDP.

:func:`train` fits an :class:`~nimare_mnm.model.MNMModel` on text embeddings and brain
vectors. The validation studies are carved from the training studies only (the protocol's
test split is never passed in); early stopping and model selection use validation Recall@10
(text -> brain). AdamW applies no weight decay to the scalars (curvature, temperature, input
scales). The geometry and the loss run in full fp32, with TF32 disabled on CUDA. Any
non-finite loss term or gradient stops training with a message naming the step and the term.

Under ``torchrun`` (one process per CPU socket or GPU) the same call trains with
DistributedDataParallel: each process takes its share of every global batch, and the
contrastive logits are computed against embeddings gathered from all processes, so the loss
trajectory equals a single process with the same global batch.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import re
import time
import warnings
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch

from nimare_mnm import lorentz
from nimare_mnm.evaluation import map_correlation, recall_at_k
from nimare_mnm.features import prepare_brain
from nimare_mnm.levels import LevelLayout
from nimare_mnm.losses import LossConfig, compute_losses
from nimare_mnm.model import MNMConfig, MNMModel, embed_all, similarity
from nimare_mnm.presets import PRESETS

LGR = logging.getLogger(__name__)

__all__ = [
    "N_QUERY_VIEWS",
    "TrainConfig",
    "TrainResult",
    "fit_linear_decoder",
    "query_views",
    "default_val_rows",
    "resolve_device",
    "train",
]

#: Ridge penalties tried by :func:`fit_linear_decoder`, relative to the mean eigenvalue of the
#: tangent vectors' covariance.
RIDGE_ALPHAS = (1e-3, 1e-2, 1e-1, 1.0)


@dataclass
class TrainConfig:
    """Optimisation settings.

    Parameters
    ----------
    epochs : :obj:`int`, default=40
        Maximum number of epochs.
    batch_size : :obj:`int`, default=512
        Global batch size (split across processes under torchrun).
    lr : :obj:`float`, default=1e-3
        AdamW learning rate (cosine decay after a one-epoch warm-up).
    weight_decay : :obj:`float`, default=1e-2
        AdamW weight decay of the weight matrices (never of the scalars).
    patience : :obj:`int`, default=6
        Epochs without a better validation Recall@10 before stopping.
    val_fraction : :obj:`float`, default=0.1
        Fraction of the training studies used for validation (when no explicit validation
        rows are given).
    seed : :obj:`int`, default=0
        Seed of the initialisation, the validation split and the batch order.
    device : :obj:`str`, default="auto"
        "auto" picks CUDA when available, else the CPU.
    max_grad_norm : :obj:`float`, default=5.0
        Gradient clipping.
    show_progress : :obj:`bool` or None
        tqdm progress bar; None shows it when logging at INFO level.
    """

    epochs: int = 40
    batch_size: int = 512
    lr: float = 1e-3
    weight_decay: float = 1e-2
    patience: int = 6
    val_fraction: float = 0.1
    seed: int = 0
    device: str = "auto"
    max_grad_norm: float = 5.0
    show_progress: bool | None = None

    def to_dict(self) -> dict:
        """Return the configuration as a JSON-serialisable dict."""
        return asdict(self)


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    model: MNMModel
    history: list = field(default_factory=list)
    best_epoch: int = -1
    best_val_recall_at_10: float = float("nan")
    fit_seconds: float = float("nan")
    val_rows: np.ndarray | None = None
    device: str = "cpu"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Return the torch device: CUDA when available for "auto", else the CPU."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"Device {device!r} requested but CUDA is not available.")
    return dev


def _distributed() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _gather(tensor: torch.Tensor) -> torch.Tensor:
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(tensor), dim=0)


@torch.no_grad()
def validation_recall(
    model: MNMModel, text: np.ndarray, brain: np.ndarray, kind: str, device
) -> dict[int, float]:
    """Text -> brain Recall@1/10 (%) on held-out studies.

    Ties count as if broken at random (``ties="average"``): a model that scores every study
    alike gets chance recall, not 100 %.
    """
    t = embed_all(model, text, "text", device)
    b = embed_all(model, brain, "brain", device)
    sim = similarity(kind, t, b, model.curvature).cpu().numpy()
    return recall_at_k(sim, (1, 10), ties="average")


class _Objective(torch.nn.Module):
    """The loss as a module, so DistributedDataParallel sees the forward pass."""

    def __init__(self, model: MNMModel, config: LossConfig, gather, offset: int) -> None:
        super().__init__()
        self.model, self.config, self.gather, self.offset = model, config, gather, offset

    def forward(
        self,
        text,
        brain,
        breadth,
        region_mass,
        full_text=None,
        view_mask=None,
        term_text=None,
        term_child=None,
    ):
        return compute_losses(
            self.model,
            text,
            brain,
            self.config,
            breadth=breadth,
            region_mass=region_mass,
            gather=self.gather,
            offset=self.offset,
            full_text=full_text,
            view_mask=view_mask,
            term_text=term_text,
            term_child=term_child,
        )


def _check_finite(terms: dict, step: int, epoch: int) -> None:
    for name, value in terms.items():
        if not torch.isfinite(value):
            raise FloatingPointError(
                f"Training stopped at step {step} (epoch {epoch}): the {name!r} loss term is "
                f"{value.item()}. Lower the learning rate or the term's weight."
            )


def _check_grads(model: torch.nn.Module, step: int, epoch: int) -> None:
    for name, param in model.named_parameters():
        if param.grad is not None and not torch.isfinite(param.grad).all():
            raise FloatingPointError(
                f"Training stopped at step {step} (epoch {epoch}): the gradient of {name!r} "
                "is not finite. Lower the learning rate."
            )


def _draw_terms(usage, rows: np.ndarray, rng: np.random.Generator):
    """One term drawn at random for each row that uses any: (term indices, batch positions)."""
    sub = usage[rows]
    counts = np.diff(sub.indptr)
    child = np.flatnonzero(counts)
    pick = sub.indptr[child] + (rng.random(len(child)) * counts[child]).astype(np.int64)
    return sub.indices[pick], child


def default_val_rows(n: int, config: TrainConfig) -> np.ndarray:
    """Rows :func:`train` validates on when given none: a seeded ``val_fraction`` of ``n``."""
    perm = np.random.default_rng(config.seed + 1).permutation(n)
    return np.sort(perm[: max(1, int(n * config.val_fraction))])


def train(
    text: np.ndarray,
    brain: np.ndarray,
    *,
    model_config: MNMConfig | None = None,
    loss_config: LossConfig | None = None,
    train_config: TrainConfig | None = None,
    layout: LevelLayout | None = None,
    val_rows: np.ndarray | None = None,
    text_views: np.ndarray | None = None,
    view_prob: float = 0.5,
    term_text: np.ndarray | None = None,
    term_usage=None,
) -> TrainResult:
    """Train the backbone on paired text embeddings and brain vectors.

    Parameters
    ----------
    text : :class:`numpy.ndarray`
        (n, text_dim) text embeddings of the training studies.
    brain : :class:`numpy.ndarray`
        (n, brain_dim) raw brain vectors of the same studies (see :func:`prepare_brain`).
    model_config : :class:`~nimare_mnm.model.MNMConfig`, optional
        Architecture; defaults to nimare-mnm's for these dimensions.
    loss_config : :class:`~nimare_mnm.losses.LossConfig`, optional
        Objective; defaults to the ``"nimare-mnm"`` preset's, without its vocabulary-term
        terms when no ``term_text`` is given.
    train_config : :class:`TrainConfig`, optional
        Optimisation settings.
    layout : :class:`~nimare_mnm.model.LevelLayout`, optional
        Level structure of the brain vector (needed by the level entailment term).
    val_rows : :class:`numpy.ndarray`, optional
        Rows used for validation; by default a seeded ``val_fraction`` of the rows.
    text_views : :class:`numpy.ndarray`, optional
        (n, n_views, text_dim) embeddings of short texts of the same studies (see
        :func:`query_views`): at each step a study's text is replaced by
        one of its views with probability ``view_prob``, and the linear decoder is fitted on
        the views as well, so that short queries land where the studies they describe do.
        Validation always uses the full texts.
    view_prob : :obj:`float`, default=0.5
        Probability of using a view instead of the full text.
    term_text : :class:`numpy.ndarray`, optional
        (n_terms, text_dim) text embeddings of vocabulary terms, the apexes of the term cones
        and the points drawn to their studies' mean (the loss's ``w_term_cones`` and
        ``w_term_mean``).
    term_usage : sparse matrix, optional
        (n, n_terms) boolean: row uses term. At each step every study of the batch that uses
        a term is paired with one of its terms, drawn at random, whose cone should contain it
        and whose point is drawn towards it.

    Returns
    -------
    :class:`TrainResult`
        The model at its best validation epoch, the per-epoch history and timings.
    """
    t_start = time.perf_counter()
    cfg = train_config or TrainConfig()
    loss_cfg = loss_config
    if loss_cfg is None:
        loss_cfg = PRESETS["nimare-mnm"].loss
        if term_text is None:  # the default's vocabulary-term terms need the terms
            loss_cfg = replace(loss_cfg, w_term_cones=0.0, w_term_mean=0.0)
    # Before any work: the default MNMConfig is a Lorentz model.
    loss_cfg.check_geometry(model_config.geometry if model_config else "lorentz", "model_config's")
    text = np.asarray(text, dtype=np.float32)
    if text.ndim != 2 or len(text) != len(brain):
        raise ValueError(
            f"text ({getattr(text, 'shape', None)}) and brain ({np.shape(brain)}) must be 2D "
            "with one row per study."
        )
    if not np.isfinite(text).all():
        raise ValueError("Text embeddings contain NaN or infinite values.")
    if text_views is not None:
        text_views = np.asarray(text_views, dtype=np.float32)
        if text_views.ndim != 3 or text_views.shape[::2] != text.shape:
            raise ValueError(
                f"text_views must be (n_studies, n_views, {text.shape[1]}) for {len(text)} "
                f"studies, got {text_views.shape}."
            )
        if not np.isfinite(text_views).all():
            raise ValueError("Text view embeddings contain NaN or infinite values.")
        if not 0.0 <= view_prob <= 1.0:
            raise ValueError(f"view_prob must be in [0, 1], got {view_prob}.")
    if (term_text is None) != (term_usage is None):
        raise ValueError("term_text and term_usage go together.")
    if term_text is not None:
        import scipy.sparse as sp

        term_text = np.asarray(term_text, dtype=np.float32)
        term_usage = sp.csr_matrix(term_usage, dtype=bool)
        if term_text.ndim != 2 or term_text.shape[1] != text.shape[1]:
            raise ValueError(
                f"term_text must be (n_terms, {text.shape[1]}), got {term_text.shape}."
            )
        if term_usage.shape != (len(text), len(term_text)):
            raise ValueError(
                f"term_usage must be ({len(text)}, {len(term_text)}) (rows x terms), got "
                f"{term_usage.shape}."
            )
        if not np.isfinite(term_text).all():
            raise ValueError("Term embeddings contain NaN or infinite values.")
        if not loss_cfg.needs_terms:
            warnings.warn(
                "Term embeddings were given but w_term_cones and w_term_mean are 0: they are "
                "not used.",
                UserWarning,
                stacklevel=2,
            )
    elif loss_cfg.needs_terms:
        warnings.warn(
            f"The term cone and term mean terms (w_term_cones={loss_cfg.w_term_cones}, "
            f"w_term_mean={loss_cfg.w_term_mean}) are skipped: no term_text/term_usage were "
            "given.",
            UserWarning,
            stacklevel=2,
        )
    prepared = prepare_brain(brain, layout)
    mcfg = model_config or MNMConfig(text_dim=text.shape[1], brain_dim=prepared["brain"].shape[1])
    if (mcfg.text_dim, mcfg.brain_dim) != (text.shape[1], prepared["brain"].shape[1]):
        raise ValueError(
            f"model_config expects text_dim={mcfg.text_dim}, brain_dim={mcfg.brain_dim}; the "
            f"data have {text.shape[1]} and {prepared['brain'].shape[1]}."
        )
    rank, world = _distributed()
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        # Full fp32 in the Lorentz inner products: no TF32 rounding.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(cfg.seed)
    if loss_cfg.needs_levels and layout is None:
        warnings.warn(
            "The level entailment term (w_entail_levels="
            f"{loss_cfg.w_entail_levels}) is skipped: no level layout was given.",
            UserWarning,
            stacklevel=2,
        )
    model = MNMModel(mcfg, layout if loss_cfg.needs_levels else None).to(device)

    n = len(text)
    if val_rows is None:
        val_rows = default_val_rows(n, cfg)
    val_rows = np.asarray(val_rows, dtype=np.int64)
    fit_rows = np.setdiff1d(np.arange(n), val_rows)
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} is not divisible by {world} processes.")
    batch = min(cfg.batch_size, len(fit_rows) - len(fit_rows) % world)
    local = batch // world
    steps_per_epoch = len(fit_rows) // batch
    if steps_per_epoch == 0:
        raise ValueError(f"Only {len(fit_rows)} training studies: fewer than one batch.")

    def tensor(name):
        return torch.as_tensor(prepared[name], device=device) if name in prepared else None

    text_t = torch.as_tensor(text, device=device)
    views_t = None if text_views is None else torch.as_tensor(text_views, device=device)
    brain_t, breadth_t, mass_t = tensor("brain"), tensor("breadth"), tensor("region_mass")
    terms_t = None if term_text is None else torch.as_tensor(term_text, device=device)

    scalars = {id(p) for p in model.scalar_parameters()}
    decay = [p for p in model.parameters() if id(p) not in scalars and p.ndim > 1]
    no_decay = [p for p in model.parameters() if id(p) not in scalars and p.ndim <= 1]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
            {
                "params": [p for p in model.scalar_parameters() if p.requires_grad],
                "weight_decay": 0.0,
            },
        ],
        lr=cfg.lr,
    )
    total_steps = cfg.epochs * steps_per_epoch

    def lr_at(step):
        warm = steps_per_epoch
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total_steps - warm)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    objective = _Objective(model, loss_cfg, _gather if world > 1 else None, rank * local)
    if world > 1:
        # Gradients are averaged across processes; parameters a config leaves unused (the
        # decoder of a retrieval-only model, the level tokens) are tolerated.
        objective = torch.nn.parallel.DistributedDataParallel(
            objective, find_unused_parameters=True
        )

    show = cfg.show_progress
    if show is None:
        show = LGR.isEnabledFor(logging.INFO) and rank == 0
    from tqdm.auto import tqdm

    bar = tqdm(total=total_steps, disable=not show, desc="training", leave=False)
    history, best, best_state, best_epoch, bad_epochs, step = [], (-1.0,), None, -1, 0, 0
    for epoch in range(cfg.epochs):
        model.train()
        rng = np.random.default_rng([cfg.seed, epoch])
        order = fit_rows[rng.permutation(len(fit_rows))]
        sums: dict[str, float] = {}
        for b in range(steps_per_epoch):
            rows = order[b * batch : (b + 1) * batch][rank * local : (rank + 1) * local]
            idx = torch.as_tensor(rows, device=device)
            batch_text, use = text_t[idx], None
            if views_t is not None:
                use = torch.as_tensor(rng.random(len(rows)) < view_prob, device=device)
                pick = torch.as_tensor(rng.integers(views_t.shape[1], size=len(rows)))
                batch_text = torch.where(use[:, None], views_t[idx, pick.to(device)], batch_text)
            term_batch = term_child = None
            if terms_t is not None:
                term_rows, term_child = _draw_terms(term_usage, rows, rng)
                term_batch = terms_t[torch.as_tensor(term_rows, device=device)]
                term_child = torch.as_tensor(term_child, device=device)
            terms = objective(
                batch_text,
                brain_t[idx],
                breadth_t[idx],
                mass_t[idx] if mass_t is not None else None,
                text_t[idx],
                use,
                term_batch,
                term_child,
            )
            _check_finite(terms, step, epoch)
            optimizer.zero_grad(set_to_none=True)
            terms["total"].backward()
            _check_grads(model, step, epoch)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            step += 1
            logged = torch.stack([v.detach() for v in terms.values()])
            if world > 1:  # report the global batch's loss, not this process's share
                torch.distributed.all_reduce(logged)
                logged /= world
            for name, value in zip(terms, logged.tolist()):
                sums[name] = sums.get(name, 0.0) + value
            bar.update(1)
        recall = validation_recall(
            model, text[val_rows], prepared["brain"][val_rows], loss_cfg.contrastive, device
        )
        with torch.no_grad():
            radius = embed_all(model, prepared["brain"][val_rows], "brain", device)
            radius = float(model.radius(radius).mean())
        record = {
            "epoch": epoch,
            **{k: v / steps_per_epoch for k, v in sums.items()},
            "val_recall_at_1": recall[1],
            "val_recall_at_10": recall[10],
            "curvature": float(model.curvature.detach()),
            "logit_scale": float(model.logit_scale.detach()),
            "mean_brain_radius": radius,
        }
        history.append(record)
        bar.set_postfix(
            {
                **{k: f"{record[k]:.3f}" for k in sums},
                "val_R@10": f"{recall[10]:.1f}",
                "c": f"{record['curvature']:.2f}",
                "radius": f"{radius:.2f}",
            }
        )
        LGR.debug(json.dumps(record))
        # Select on validation Recall@10, ties broken by Recall@1 (small validation sets
        # saturate Recall@10 early).
        score = (recall[10], recall[1])
        if score > best:
            best, best_epoch, bad_epochs = score, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad_epochs += 1
            if bad_epochs >= cfg.patience:
                break
    bar.close()
    model.load_state_dict(best_state)
    model.eval()
    if isinstance(model.decoder, torch.nn.Linear):
        fit_text, fit_brain = text[fit_rows], prepared["brain"][fit_rows]
        if text_views is not None:
            # The decoder also learns to map short texts to their studies' maps.
            n_views = text_views.shape[1]
            fit_text = np.concatenate([fit_text, text_views[fit_rows].reshape(-1, text.shape[1])])
            fit_brain = np.concatenate([fit_brain, np.repeat(fit_brain, n_views, axis=0)])
        fit_linear_decoder(model, fit_text, fit_brain, text[val_rows], prepared["brain"][val_rows])
    return TrainResult(
        model=model,
        history=history,
        best_epoch=best_epoch,
        best_val_recall_at_10=best[0],
        fit_seconds=time.perf_counter() - t_start,
        val_rows=val_rows,
        device=str(device),
    )


def fit_linear_decoder(
    model: MNMModel,
    text: np.ndarray,
    brain: np.ndarray,
    val_text: np.ndarray,
    val_brain: np.ndarray,
) -> dict:
    """Refit a linear decoder head in closed form (ridge regression on tangent vectors).

    The decoder maps the tangent vector at the origin of a text point (its point itself in
    the Euclidean geometry) to the prepared brain vector. Gradient training leaves it
    under-fitted next to the contrastive terms; the ridge solution is exact. The penalty is
    chosen among :data:`RIDGE_ALPHAS` by the mean Pearson r on the validation rows.

    Parameters
    ----------
    model : :class:`~nimare_mnm.model.MNMModel`
        Trained model with a linear decoder (modified in place).
    text, brain : :class:`numpy.ndarray`
        Training text embeddings and prepared brain vectors (see :func:`prepare_brain`).
    val_text, val_brain : :class:`numpy.ndarray`
        The same for the validation rows.

    Returns
    -------
    :obj:`dict`
        ``alpha`` (the chosen relative penalty) and ``val_r`` (its validation mean r).
    """
    if not isinstance(model.decoder, torch.nn.Linear):
        raise ValueError("fit_linear_decoder() needs a model with a linear decoder head.")
    device = next(model.parameters()).device
    model.eval()

    def tangents(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            points = embed_all(model, x, "text", device)
            if model.config.geometry == "lorentz":
                points = lorentz.logmap0(points, model.curvature.to(points.device))
        return points.cpu().double().numpy()

    t_fit, t_val = tangents(text), tangents(val_text)
    t_mean, y_mean = t_fit.mean(axis=0), brain.mean(axis=0, dtype=np.float64)
    tc = t_fit - t_mean
    gram = tc.T @ tc
    cross = np.zeros((tc.shape[1], brain.shape[1]))
    for start in range(0, len(tc), 8192):  # bounded float64 temporaries
        chunk = slice(start, start + 8192)
        cross += tc[chunk].T @ (brain[chunk] - y_mean)
    scale = np.trace(gram) / len(gram)
    best = None
    for alpha in RIDGE_ALPHAS:
        weight = np.linalg.solve(gram + alpha * scale * np.eye(len(gram)), cross)
        r = float(map_correlation((t_val - t_mean) @ weight + y_mean, val_brain).mean())
        if best is None or r > best[1]:
            best = (alpha, r, weight)
    alpha, r, weight = best
    if not np.isfinite(weight).all():
        raise FloatingPointError("The ridge decoder has non-finite weights.")
    bias = y_mean - t_mean @ weight
    with torch.no_grad():
        model.decoder.weight.copy_(torch.as_tensor(weight.T, dtype=torch.float32))
        model.decoder.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
    LGR.info("Linear decoder refitted: alpha %g, validation map r %.3f", alpha, r)
    return {"alpha": alpha, "val_r": r}


#: Number of short texts :func:`query_views` makes per study.
N_QUERY_VIEWS = 3

_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def query_views(texts, seed: int = 0, max_terms: int = 15) -> list[list[str]]:
    """Short, query-like texts describing each study, for training on user-style queries.

    Users type a few words ("spatial navigation"); studies are described by a title and an
    abstract or term lists hundreds of characters long. Training on short views of each
    study as well teaches the text network where short queries belong. On the NeuroQuery
    validation split (nimare-mnm preset, same seed) it raised text -> brain Recall@10 with
    the study's title as the query from 8.4 % to 10.0 %, with its keywords from 8.0 % to
    8.9 %, and with the full text from 13.1 % to 13.5 %.

    Parameters
    ----------
    texts : sequence of :obj:`str`
        Study texts as :func:`~nimare_mnm.datasets.study_texts` returns them.
    seed : :obj:`int`, default=0
        Seed of the random term draws.
    max_terms : :obj:`int`, default=15
        The term view draws from this many of the study's first terms.

    Returns
    -------
    :obj:`list` of :obj:`list` of :obj:`str`
        :data:`N_QUERY_VIEWS` views per study, in order:

        1. the title (the text's first sentence);
        2. the keywords (``"Keywords: ..."`` in
           :func:`~nimare_mnm.datasets.load_neuroquery`'s texts), else the second sentence,
           else the title;
        3. two to five terms drawn from the first ``max_terms`` abstract terms (ordered by
           TF-IDF in NeuroQuery texts), else a random sentence.
    """
    rng = np.random.default_rng(seed)
    views = []
    for text in texts:
        text = " ".join(str(text).split())
        head, _, terms = text.partition(" Abstract terms: ")
        head, _, keywords = head.partition(" Keywords: ")
        sentences = [s for s in _SENTENCE.split(head) if s.strip()] or [text]
        title = sentences[0].rstrip(".")
        keyword_view = keywords.rstrip(".").replace(";", ",") if keywords else ""
        term_list = [t for t in terms.rstrip(".").split(", ") if t][:max_terms]
        if term_list:
            size = min(len(term_list), int(rng.integers(2, 6)))
            term_view = ", ".join(rng.choice(term_list, size=size, replace=False))
        else:
            term_view = sentences[int(rng.integers(len(sentences)))].rstrip(".")
        second = sentences[1].rstrip(".") if len(sentences) > 1 else title
        views.append([title, keyword_view or second, term_view])
    return views


def _main(argv: list[str] | None = None) -> None:
    """Train on arrays saved as .npy files; used by ``torchrun -m nimare_mnm.training``."""
    parser = argparse.ArgumentParser(description="Train the MNM backbone on saved arrays.")
    parser.add_argument("--text", required=True, help=".npy text embeddings (n, text_dim)")
    parser.add_argument("--brain", required=True, help=".npy brain vectors (n, brain_dim)")
    parser.add_argument("--history", required=True, help="JSON file for the loss history")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--preset", default="meru")
    args = parser.parse_args(argv)
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    text, brain = np.load(args.text), np.load(args.brain)
    spec = PRESETS[args.preset]
    result = train(
        text,
        brain,
        model_config=MNMConfig(
            text_dim=text.shape[1],
            brain_dim=brain.shape[1],
            dropout=0.0,
            geometry=spec.geometry,
            decoder=spec.decoder,
            hidden_dim=32,
            embed_dim=16,
        ),
        loss_config=spec.loss,
        train_config=TrainConfig(
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            patience=args.epochs,
            device="cpu",
            show_progress=False,
        ),
    )
    rank, _ = _distributed()
    if rank == 0:
        with open(args.history, "w") as fh:
            json.dump(result.history, fh)
    if torch.distributed.is_initialized():
        # Every rank finishes (rank 0 writes its file) before the group is torn down: a rank
        # destroying the group while its peer is still busy can abort at exit ("terminate
        # called without an active exception", seen once in CI).
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":  # pragma: no cover
    _main()
