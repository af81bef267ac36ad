import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from nimare_mnm import lorentz
from nimare_mnm.features import prepare_brain
from nimare_mnm.levels import LevelLayout
from nimare_mnm.losses import LossConfig, compute_losses
from nimare_mnm.model import MNMConfig, MNMModel, similarity
from nimare_mnm.presets import PRESETS, preset
from nimare_mnm.training import RIDGE_ALPHAS, TrainConfig, fit_linear_decoder, train


def linked_corpus(n=400, text_dim=48, brain_dim=120, seed=0):
    """Texts and brain vectors generated from the same latent code."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 12))
    text = np.tanh(z @ rng.normal(size=(12, text_dim))).astype(np.float32)
    brain = np.exp(0.5 * z @ rng.normal(size=(12, brain_dim))).astype(np.float32)
    return text, brain


def tiny_layout(rng, dim=20):
    """Three compartments: two cortical networks and the subcortical structures."""
    return LevelLayout(
        rng.integers(0, 3, dim),
        {
            "yeo7": np.array([0, 1, -1]),
            "yeo17": np.array([0, 1, -1]),
            "subcortical": np.array([-1, -1, 0]),
        },
        {"yeo7": ["A", "B"], "yeo17": ["a", "b"], "subcortical": ["s"]},
    )


def small(text, brain, **kw):
    return MNMConfig(text.shape[1], brain.shape[1], embed_dim=16, hidden_dim=64, **kw)


def test_learns_linked_pairs():
    text, brain = linked_corpus()
    spec = preset("nimare-mnm", w_term_mean=0.0)  # no vocabulary terms in this corpus
    res = train(
        text,
        brain,
        model_config=small(text, brain, **spec.model),
        loss_config=spec.loss,
        train_config=TrainConfig(
            epochs=40, batch_size=64, lr=3e-3, patience=40, show_progress=False
        ),
    )
    losses = [h["total"] for h in res.history]
    assert losses[-1] < 0.5 * losses[0]
    model = res.model
    with torch.no_grad():
        t = model.encode_text(torch.as_tensor(text))
        b = model.encode_brain(torch.as_tensor(prepare_brain(brain)["brain"]))
        sim = similarity(spec.loss.contrastive, t, b, model.curvature)
    fit = np.setdiff1d(np.arange(len(text)), res.val_rows)
    top1 = sim.argmax(1).numpy()
    assert np.mean(top1[fit] == fit) >= 0.9
    assert res.best_val_recall_at_10 > 50  # generalises to held-out studies
    assert res.history[res.best_epoch]["val_recall_at_10"] == res.best_val_recall_at_10
    # The default bounds the brain radius.
    assert model.radius(b).max() < spec.model["max_brain_radius"]


def test_level_term_without_level_layout_warns():
    text, brain = linked_corpus()
    spec = PRESETS["nimare-mnm-v2"]  # model v2 as first shipped trained a level term
    assert spec.loss.w_entail_levels > 0
    with pytest.warns(UserWarning, match="no level layout"):
        train(
            text,
            brain,
            model_config=small(text, brain),
            loss_config=spec.loss,
            train_config=TrainConfig(epochs=1, batch_size=64, show_progress=False),
        )


@pytest.mark.parametrize(
    "geometry, kind", [("lorentz", "angle"), ("lorentz", "distance"), ("euclidean", "cosine")]
)
def test_constant_model_gets_chance_validation_recall(geometry, kind):
    """A model that maps every text and every map to one point has chance recall, not 100 %."""
    from nimare_mnm.training import validation_recall

    rng = np.random.default_rng(0)
    n = 50
    text = rng.normal(size=(n, 12)).astype(np.float32)
    brain = prepare_brain(rng.random((n, 30)).astype(np.float32) + 0.01)["brain"]
    cfg = MNMConfig(12, 30, embed_dim=6, hidden_dim=16, dropout=0.0, geometry=geometry)
    model = MNMModel(cfg).eval()
    with torch.no_grad():  # the last layers ignore their input: constant outputs
        for layer in (model.text_head[-1], model.brain_out[-1]):
            layer.weight.zero_()
            layer.bias.fill_(1.0)
        t = model.encode_text(torch.as_tensor(text))
        b = model.encode_brain(torch.as_tensor(brain))
        sim = similarity(kind, t, b, model.curvature).numpy()
    assert np.ptp(sim) == 0  # every study ties with every other
    recall = validation_recall(model, text, brain, kind, "cpu")
    assert recall[1] == pytest.approx(100 * 1 / n)
    assert recall[10] == pytest.approx(100 * 10 / n)


def test_general_texts_sit_nearer_the_origin():
    """Parents (broad maps, generic texts) end nearer the origin than their children."""
    rng = np.random.default_rng(1)
    n_parent, n_child, dim = 8, 12, 160
    texts, brains, is_parent = [], [], []
    for _ in range(n_parent):
        base = rng.normal(size=32)
        blobs = []
        for _ in range(n_child):
            spec = base + 1.5 * rng.normal(size=32)
            blob = np.zeros(dim, np.float32)
            blob[rng.choice(dim, 4, replace=False)] = 1.0
            blobs.append(blob)
            texts.append(spec)
            brains.append(blob + 0.01)
            is_parent.append(False)
        for _ in range(3):  # several generic studies per parent
            texts.append(base + 0.1 * rng.normal(size=32))
            brains.append(np.mean(blobs, axis=0) + 0.01)
            is_parent.append(True)
    text = np.asarray(texts, np.float32)
    brain = np.asarray(brains, np.float32)
    is_parent = np.asarray(is_parent)
    res = train(
        text,
        brain,
        model_config=small(text, brain),
        loss_config=preset("nimare-mnm", w_hierarchy=0.5, w_term_mean=0.0).loss,
        train_config=TrainConfig(
            epochs=60, batch_size=64, lr=3e-3, patience=60, show_progress=False
        ),
    )
    with torch.no_grad():
        radius = res.model.radius(res.model.encode_text(torch.as_tensor(text))).numpy()
    assert radius[is_parent].mean() < radius[~is_parent].mean()


def test_high_learning_rate_never_produces_nan():
    """300 steps at learning rate 0.5 finish: train() raises at the first non-finite step."""
    text, brain = linked_corpus(n=300)
    res = train(
        text,
        brain,
        model_config=small(text, brain),
        loss_config=preset("nimare-mnm", w_hierarchy=0.1, w_centroid=0.1, w_term_mean=0.0).loss,
        train_config=TrainConfig(
            epochs=75, batch_size=64, lr=0.5, patience=1000, show_progress=False
        ),
    )
    assert len(res.history) == 75  # every epoch ran: no step was refused
    assert len(res.history) * ((len(text) - len(res.val_rows)) // 64) >= 300  # steps
    # The run reached the regime the test is about: brain points far past radius 4, where
    # float32 loses distance resolution (see nimare_mnm.lorentz); lr 3e-3 stays near 1-2.
    assert max(h["mean_brain_radius"] for h in res.history) > 4


def test_nonfinite_loss_stops_with_the_step_and_term(monkeypatch):
    import nimare_mnm.training as training

    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        terms = compute_losses(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:
            terms["contrastive"] = terms["contrastive"] * float("nan")
        return terms

    monkeypatch.setattr(training, "compute_losses", poisoned)
    text, brain = linked_corpus(n=200)
    with pytest.raises(FloatingPointError, match="step 2 .*'contrastive'"):
        train(
            text,
            brain,
            model_config=small(text, brain),
            train_config=TrainConfig(epochs=2, batch_size=32, show_progress=False),
        )


def test_bad_inputs_are_refused():
    text, brain = linked_corpus(n=50)
    with pytest.raises(ValueError, match="NaN"):
        train(np.full_like(text, np.nan), brain, train_config=TrainConfig(epochs=1))
    zero = brain.copy()
    zero[3] = 0
    with pytest.raises(ValueError, match="all zero"):
        train(text, zero, train_config=TrainConfig(epochs=1))
    with pytest.raises(ValueError, match="one row per study"):
        train(text[:10], brain, train_config=TrainConfig(epochs=1))
    with pytest.raises(ValueError, match="contrastive"):
        LossConfig(contrastive="dot")
    with pytest.raises(ValueError, match="curvature"):
        MNMConfig(4, 4, curvature=100)


def test_query_views_teach_short_queries():
    """Training on partial views of each text makes such views retrieve their studies."""
    text, brain = linked_corpus(n=600)
    rng = np.random.default_rng(1)
    # A view keeps a random 15 % of the text's features (a short text says less).
    keep = rng.random((len(text), 3, text.shape[1])) < 0.15
    views = (text[:, None, :] * keep / 0.15).astype(np.float32)
    kw = dict(
        model_config=small(text, brain),
        loss_config=LossConfig(contrastive="angle", symmetric=True),
        train_config=TrainConfig(
            epochs=30, batch_size=64, lr=3e-3, patience=30, show_progress=False
        ),
    )
    recall = {}
    for name, text_views in (("plain", None), ("views", views)):
        res = train(text, brain, text_views=text_views, **kw)
        model, val = res.model, res.val_rows
        with torch.no_grad():
            q = model.encode_text(torch.as_tensor(views[val].reshape(-1, text.shape[1])))
            b = model.encode_brain(torch.as_tensor(prepare_brain(brain[val])["brain"]))
            sim = similarity("angle", q, b, model.curvature).numpy()
        target = np.repeat(np.arange(len(val)), 3)
        ranks = (sim > sim[np.arange(len(target)), target][:, None]).sum(axis=1)
        recall[name] = float(np.mean(ranks < 10))
    assert recall["views"] > recall["plain"] + 0.05, recall
    with pytest.raises(ValueError, match="text_views"):
        train(text, brain, text_views=views[:10], **kw)


def test_seed_makes_runs_repeatable():
    text, brain = linked_corpus(n=200)
    kw = dict(
        model_config=small(text, brain),
        train_config=TrainConfig(epochs=3, batch_size=32, seed=3, show_progress=False),
    )
    a, b = train(text, brain, **kw), train(text, brain, **kw)
    assert [h["total"] for h in a.history] == [h["total"] for h in b.history]


def test_scalars_are_clamped():
    model = MNMModel(MNMConfig(8, 10))
    with torch.no_grad():
        model.log_c.fill_(10.0)
        model.log_logit_scale.fill_(10.0)
    assert float(model.curvature.detach()) == pytest.approx(10.0)
    assert float(model.logit_scale.detach()) == pytest.approx(100.0)


def test_level_encoding_equals_masked_maps():
    rng = np.random.default_rng(0)
    dim = 30
    regions = {
        "yeo7": np.array([0, 0, 1, -1]),
        "yeo17": np.array([0, 1, 2, -1]),
        "subcortical": np.array([-1, -1, -1, 0]),
    }
    names = {"yeo7": ["A", "B"], "yeo17": ["a", "b", "c"], "subcortical": ["subcortical"]}
    layout = LevelLayout(rng.integers(0, 4, dim), regions, names)
    model = MNMModel(MNMConfig(8, dim, embed_dim=6, hidden_dim=16, dropout=0.0), layout).eval()
    brain = torch.as_tensor(rng.random((5, dim)), dtype=torch.float32)
    with torch.no_grad():
        whole, parts = model.encode_levels(brain)
        np.testing.assert_allclose(whole, model.encode_brain(brain), atol=1e-5)
        matrix, region_names = layout.region_matrix()
        for r, _ in enumerate(region_names):
            members = torch.as_tensor(matrix[r][layout.compartment] > 0)
            hidden = model._brain_hidden(model.brain_in(brain * members), model.region_level[r])
            expected = model._lift(model.brain_out(hidden), model.log_brain_alpha)
            np.testing.assert_allclose(parts[:, r], expected, atol=1e-5)


def _entailment_by_hand(parent, child, c, min_radius, eps=lorentz.EPS_FLOAT32):
    """max(0, exterior angle - half-aperture), from the textbook formulas in float64.

    Exterior angle at ``parent`` toward ``child``: acos((y_t + x_t c <x, y>_L) /
    (|x_s| sqrt((c <x, y>_L)^2 - 1))); half-aperture asin(2 K / (sqrt(c) |x_s|)) (Ganea et
    al. 2018, in the convention of nimare_mnm.lorentz), whose acos/asin arguments are
    clamped to [-1 + eps, 1 - eps]: inside radius 2 K / sqrt(c) the aperture is just below
    pi / 2.
    """
    x, y = np.asarray(parent, np.float64), np.asarray(child, np.float64)
    x_t = np.sqrt(1 / c + (x * x).sum(-1))
    y_t = np.sqrt(1 / c + (y * y).sum(-1))
    lor = (x * y).sum(-1) - x_t * y_t
    x_norm = np.linalg.norm(x, axis=-1)
    cos = (y_t + x_t * c * lor) / (x_norm * np.sqrt((c * lor) ** 2 - 1))
    angle = np.arccos(np.clip(cos, -1 + eps, 1 - eps))
    aperture = np.arcsin(np.minimum(1 - eps, 2 * min_radius / (np.sqrt(c) * x_norm)))
    return np.maximum(0.0, angle - aperture)


def test_level_entailment_term_by_hand():
    """The level term is the mean cone loss over the level maps holding enough activation,
    with the whole-brain map as the child (part_to_whole) or as the parent (whole_to_part)."""
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    layout = tiny_layout(rng)
    model = MNMModel(MNMConfig(8, 20, embed_dim=6, hidden_dim=16, dropout=0.0), layout).eval()
    vectors = rng.random((6, 20)).astype(np.float32) + 0.01
    vectors[:2, layout.compartment == 2] *= 1e-3  # two studies barely touch compartment 2
    prepared = prepare_brain(vectors, layout)
    brain = torch.as_tensor(prepared["brain"])
    text = torch.as_tensor(rng.random((6, 8)), dtype=torch.float32)

    # Region mass by hand: region order yeo7 (A, B), yeo17 (a, b), subcortical, and in the
    # tiny layout region r covers exactly compartment [0, 1, 0, 1, 2][r].
    p = vectors / vectors.sum(axis=1, keepdims=True)
    mass = np.stack([p[:, layout.compartment == k].sum(axis=1) for k in (0, 1, 0, 1, 2)], 1)
    np.testing.assert_allclose(prepared["region_mass"], mass, rtol=1e-5)
    valid = mass >= 0.05
    assert valid.sum() == 6 * 5 - 2  # the two weak subcortical maps are left out

    with torch.no_grad():
        whole, parts = model.encode_levels(brain)
    c = float(model.curvature.detach())
    whole = np.broadcast_to(whole.numpy()[:, None, :], parts.shape)
    by_hand = {
        "part_to_whole": _entailment_by_hand(parts.numpy(), whole, c, 0.1),
        "whole_to_part": _entailment_by_hand(whole, parts.numpy(), c, 0.1),
    }
    for direction, cone in by_hand.items():
        expected = 0.5 * cone[valid].mean()
        assert expected > 0.01  # the cones are violated: the comparison is not 0 == 0
        cfg = LossConfig(w_entail_levels=0.5, level_direction=direction, min_radius=0.1)
        with torch.no_grad():
            terms = compute_losses(
                model,
                text,
                brain,
                cfg,
                breadth=torch.as_tensor(prepared["breadth"]),
                region_mass=torch.as_tensor(prepared["region_mass"]),
            )
        assert float(terms["entail_levels"]) == pytest.approx(expected, rel=1e-4, abs=1e-5)
    # The two directions are different losses on these points, not one loss twice.
    assert (
        abs(by_hand["part_to_whole"][valid].mean() - by_hand["whole_to_part"][valid].mean()) > 0.01
    )


def test_term_cone_term_by_hand():
    """Each term is the apex of a cone that should hold the text and brain points of the
    batch row it is paired with: half the mean cone loss over both children."""
    rng = np.random.default_rng(1)
    torch.manual_seed(0)
    model = MNMModel(
        MNMConfig(8, 20, embed_dim=6, hidden_dim=16, dropout=0.0, min_text_radius=0.5)
    ).eval()
    brain = torch.as_tensor(prepare_brain(rng.random((5, 20)).astype(np.float32) + 0.01)["brain"])
    text = torch.as_tensor(rng.normal(size=(5, 8)), dtype=torch.float32)
    term_text = torch.as_tensor(rng.normal(size=(3, 8)), dtype=torch.float32)
    child = torch.tensor([4, 0, 4])
    with torch.no_grad():
        apex = model.encode_text(term_text).numpy()
        text_pts = model.encode_text(text).numpy()[child]
        brain_pts = model.encode_brain(brain).numpy()[child]
    c = float(model.curvature.detach())
    cone = _entailment_by_hand(apex, text_pts, c, 0.1) + _entailment_by_hand(
        apex, brain_pts, c, 0.1
    )
    expected = 0.3 * 0.5 * cone.mean()
    assert expected > 0.01  # violated cones: the comparison is not 0 == 0
    cfg = LossConfig(w_term_cones=0.3, min_radius=0.1)
    with torch.no_grad():
        terms = compute_losses(model, text, brain, cfg, term_text=term_text, term_child=child)
        none = compute_losses(
            model, text, brain, cfg, term_text=term_text[:0], term_child=child[:0]
        )
    assert float(terms["term_cones"]) == pytest.approx(expected, rel=1e-4, abs=1e-5)
    assert float(none["term_cones"]) == 0.0  # a batch without terms adds nothing
    with pytest.raises(ValueError, match="one batch row per term"):
        compute_losses(model, text, brain, cfg, term_text=term_text, term_child=child[:2])


def test_term_mean_term_by_hand():
    """Each term's point is drawn to the text point of the batch row it is paired with (the
    mean squared geodesic distance over the children's mean squared radius, children fixed),
    and the mean of the batch's text points to the origin (the same, over their mean squared
    radius)."""
    rng = np.random.default_rng(2)
    torch.manual_seed(0)
    model = MNMModel(MNMConfig(8, 20, embed_dim=6, hidden_dim=16, dropout=0.0)).eval()
    brain = torch.as_tensor(prepare_brain(rng.random((5, 20)).astype(np.float32) + 0.01)["brain"])
    text = torch.as_tensor(rng.normal(size=(5, 8)), dtype=torch.float32)
    term_text = torch.as_tensor(rng.normal(size=(3, 8)), dtype=torch.float32)
    child = torch.tensor([4, 0, 4])
    with torch.no_grad():
        apex = model.encode_text(term_text).double().numpy()
        points = model.encode_text(text).double().numpy()
    kids = points[child]
    c = float(model.curvature.detach())

    # Textbook hyperboloid formulas: time coordinate sqrt(1/c + |x|^2), distance
    # acosh(c (x_t y_t - <x, y>)) / sqrt(c), distance to the origin asinh(sqrt(c) |x|) /
    # sqrt(c); the centroid of points is their ambient sum rescaled onto the hyperboloid.
    def time(x):
        return np.sqrt(1 / c + (x**2).sum(-1))

    def radius(x):
        return np.arcsinh(np.sqrt(c) * np.linalg.norm(x, axis=-1)) / np.sqrt(c)

    dist = np.arccosh(c * (time(apex) * time(kids) - (apex * kids).sum(1))) / np.sqrt(c)
    total = np.concatenate([time(points).sum(keepdims=True), points.sum(0)])
    centre = total[1:] / np.sqrt(c * (total[0] ** 2 - (total[1:] ** 2).sum()))
    root = radius(centre) ** 2 / (radius(points) ** 2).mean()
    pairs = (dist**2).mean() / (radius(kids) ** 2).mean()
    assert root > 0.01 and pairs > 0.1  # the comparisons are not 0 == 0
    cfg = LossConfig(w_contrastive=0.0, w_term_mean=0.7)
    grads = {}
    for name, n in (("with terms", 3), ("no terms", 0)):
        x = text.clone().requires_grad_(True)
        t = term_text[:n].clone().requires_grad_(True)
        terms = compute_losses(model, x, brain, cfg, term_text=t, term_child=child[:n])
        value = float(terms["term_mean"].detach())
        expected = 0.7 * (root + pairs) if n else 0.7 * root
        assert value == pytest.approx(expected, rel=1e-4), name
        terms["total"].backward()
        grads[name] = x.grad
        if n:
            assert t.grad.abs().sum() > 0
    # The terms' pull sends no gradient into the studies' points (only the root does); it
    # still moves them in training, through the text head's weights they share with the terms.
    torch.testing.assert_close(grads["with terms"], grads["no terms"])
    assert grads["no terms"].abs().sum() > 0
    # Shrinking every point towards the origin does not lower it.
    with torch.no_grad():
        full = compute_losses(model, text, brain, cfg, term_text=term_text, term_child=child)
        model.log_text_alpha -= 2.0
        shrunk = compute_losses(model, text, brain, cfg, term_text=term_text, term_child=child)
    assert float(shrunk["term_mean"]) == pytest.approx(float(full["term_mean"]), rel=0.05)
    flat = MNMModel(MNMConfig(8, 20, embed_dim=6, hidden_dim=16, geometry="euclidean"))
    with pytest.raises(ValueError, match="Lorentz model"):
        compute_losses(flat, text, brain, cfg, term_text=term_text, term_child=child)


def test_term_mean_refuses_a_euclidean_model_before_training():
    """The Lorentz-only term mean is refused when the configuration is read, not at the
    first training step after the encoding and the term maps are built."""
    from dataclasses import replace

    from scipy import sparse

    from nimare_mnm.presets import Preset

    euclid = LossConfig(contrastive="cosine", w_term_mean=0.3)
    with pytest.raises(ValueError, match="Lorentz model.*'euclidean'"):
        Preset(loss=euclid, geometry="euclidean", decoder=True, term_maps=20)
    Preset(loss=replace(euclid, w_term_mean=0.0), geometry="euclidean", decoder=True)
    rng = np.random.default_rng(0)
    text, brain = rng.normal(size=(64, 8)), rng.random((64, 20))
    usage = sparse.random(64, 3, density=0.3, random_state=0, format="csr") > 0
    with pytest.raises(ValueError, match="Lorentz model.*'euclidean'"):
        train(
            text,
            brain,
            model_config=MNMConfig(8, 20, embed_dim=6, hidden_dim=16, geometry="euclidean"),
            loss_config=euclid,
            term_text=rng.normal(size=(3, 8)),
            term_usage=usage,
        )


def test_term_mean_puts_general_terms_nearer_the_origin():
    """A synthetic vocabulary with a known hierarchy: each general term is used by every
    study of two specific terms, whose studies point in different directions. Drawn to the
    mean of its studies, every general term ends nearer the origin than its specific terms;
    without the term nothing orders them."""
    from scipy import sparse

    rng = np.random.default_rng(3)
    n_general, per_term, text_dim, brain_dim = 4, 20, 32, 60
    n_terms = 3 * n_general  # general term g is term g, its specific terms 4 + 2 g and 5 + 2 g
    general, specific, latents, usage = [], [], [], []

    def unit(v):  # every term latent has the same norm: the input does not give away which
        return 4.0 * v / np.linalg.norm(v)

    for g in range(n_general):
        general.append(unit(rng.normal(size=12)))
        for s in range(2):
            specific.append(unit(general[-1] + 3.0 * rng.normal(size=12)))
            for _ in range(per_term):
                latents.append(specific[-1] + 0.5 * rng.normal(size=12))
                row = np.zeros(n_terms, bool)
                row[[g, n_general + 2 * g + s]] = True
                usage.append(row)
    text_map = rng.normal(size=(12, text_dim))
    brain_map = rng.normal(size=(12, brain_dim))
    text = np.tanh(np.asarray(latents) @ text_map / 3).astype(np.float32)
    brain = np.exp(0.3 * np.asarray(latents) @ brain_map).astype(np.float32)
    term_text = np.tanh(np.asarray(general + specific) @ text_map / 3).astype(np.float32)
    usage = sparse.csr_matrix(np.asarray(usage))
    radius = {}
    for weight in (0.0, 1.0):
        result = train(
            text,
            brain,
            model_config=small(text, brain),
            loss_config=LossConfig(contrastive="angle", w_term_mean=weight),
            train_config=TrainConfig(
                epochs=40, batch_size=32, lr=3e-3, patience=40, show_progress=False, seed=0
            ),
            term_text=term_text if weight else None,
            term_usage=usage if weight else None,
        )
        with torch.no_grad():
            points = result.model.encode_text(torch.as_tensor(term_text))
            radius[weight] = result.model.radius(points).numpy()
    specific = radius[1.0][n_general:].reshape(n_general, 2)
    assert (radius[1.0][:n_general, None] < specific).all(), radius[1.0]
    control = radius[0.0][n_general:].reshape(n_general, 2)
    assert not (radius[0.0][:n_general, None] < control).all(), radius[0.0]


def test_each_study_is_paired_with_one_of_its_own_terms():
    from scipy import sparse

    from nimare_mnm.training import _draw_terms

    usage = sparse.csr_matrix(np.array([[1, 1, 0], [0, 0, 0], [0, 0, 1], [1, 1, 1]], dtype=bool))
    rng = np.random.default_rng(0)
    drawn = {0: set(), 3: set()}
    for _ in range(200):
        terms, child = _draw_terms(usage, np.array([3, 1, 0, 2]), rng)
        np.testing.assert_array_equal(child, [0, 2, 3])  # row 1 uses no term
        assert usage[[3, 0, 2], terms].all()
        drawn[3].add(int(terms[0]))
        drawn[0].add(int(terms[1]))
        assert terms[2] == 2
    assert drawn == {3: {0, 1, 2}, 0: {0, 1}}  # every term of a study gets drawn


def _pearson(a, b):
    """Row-wise Pearson r, as np.corrcoef computes it."""
    return np.array([np.corrcoef(x, y)[0, 1] for x, y in zip(a, b)])


@pytest.mark.parametrize("geometry", ["lorentz", "euclidean"])
def test_fit_linear_decoder_is_plain_ridge(geometry):
    """The refitted decoder is ridge regression with an intercept from the text points'
    tangent vectors at the origin, its penalty chosen by validation map r, solved here
    independently as least squares on the augmented system [X; sqrt(lam) I] W = [Y; 0]."""
    rng = np.random.default_rng(0)
    n_fit, n_val, text_dim, brain_dim, d = 14, 40, 10, 30, 6
    model = MNMModel(
        MNMConfig(text_dim, brain_dim, embed_dim=d, hidden_dim=16, geometry=geometry)
    ).eval()
    text = rng.normal(size=(n_fit + n_val, text_dim)).astype(np.float32)
    with torch.no_grad():
        points = model.encode_text(torch.as_tensor(text))
        if geometry == "lorentz":
            points = lorentz.logmap0(points, model.curvature)
    x = points.double().numpy()  # the tangent vectors: the decoder's inputs
    # Maps linear in the tangent vectors, plus noise strong enough that few training rows
    # over-fit: the penalty matters.
    y = 3 * (x - x.mean(0)) @ rng.normal(size=(d, brain_dim)) / x.std()
    y = (y + rng.normal(size=y.shape) + 2.0).astype(np.float32)
    fit, val = slice(0, n_fit), slice(n_fit, None)

    x_mean, y_mean = x[fit].mean(0), y[fit].astype(np.float64).mean(0)
    xc, yc = x[fit] - x_mean, y[fit] - y_mean
    solutions = {}
    for alpha in RIDGE_ALPHAS:
        lam = alpha * np.sum(xc**2) / d  # relative to the mean eigenvalue of xc.T @ xc
        augmented = np.vstack([xc, np.sqrt(lam) * np.eye(d)])
        targets = np.vstack([yc, np.zeros((d, brain_dim))])
        weight = np.linalg.lstsq(augmented, targets, rcond=None)[0]
        r = _pearson((x[val] - x_mean) @ weight + y_mean, y[val]).mean()
        solutions[alpha] = (r, weight)
    best = max(solutions, key=lambda a: solutions[a][0])
    r_best, w_best = solutions[best]
    assert np.ptp([r for r, _ in solutions.values()]) > 1e-3  # the choice is not moot

    out = fit_linear_decoder(model, text[fit], y[fit], text[val], y[val])
    assert out["alpha"] == best
    assert out["val_r"] == pytest.approx(r_best, rel=1e-6)
    tol = 1e-5 * np.abs(w_best).max()  # float32 weights
    np.testing.assert_allclose(model.decoder.weight.detach().numpy().T, w_best, atol=tol)
    bias = y_mean - x_mean @ w_best
    np.testing.assert_allclose(model.decoder.bias.detach().numpy(), bias, atol=tol)
    # decode() of new texts' points applies the same affine map to their tangent vectors.
    with torch.no_grad():
        decoded = model.decode(model.encode_text(torch.as_tensor(text[val]))).numpy()
    expected = (x[val] - x_mean) @ w_best + y_mean
    np.testing.assert_allclose(decoded, expected, atol=1e-4 * np.abs(expected).max())


def test_view_order_term():
    """A short view farther from the origin than its full text is penalised, not the reverse."""
    rng = np.random.default_rng(0)
    model = MNMModel(MNMConfig(8, 20, embed_dim=6, hidden_dim=16, dropout=0.0)).eval()
    brain = torch.as_tensor(prepare_brain(rng.random((4, 20)).astype(np.float32) + 0.01)["brain"])
    full = torch.as_tensor(rng.random((4, 8)), dtype=torch.float32)
    cfg = LossConfig(w_view_order=1.0, view_margin=0.0)
    mask = torch.tensor([True, True, False, False])
    with torch.no_grad():
        radius = model.radius(model.encode_text(full))
    # Views scaled from the full texts: the head is not linear, so check the radii it gives.
    for factor in (0.1, 3.0):
        views = torch.where(mask[:, None], full * factor, full)
        with torch.no_grad():
            farther = model.radius(model.encode_text(views))[:2] > radius[:2]
        term = compute_losses(model, views, brain, cfg, full_text=full, view_mask=mask)
        assert ("view_order" in term) and torch.isfinite(term["view_order"])
        assert (term["view_order"] > 0) == bool(farther.any())
    with pytest.raises(ValueError, match="full texts"):
        compute_losses(model, views, brain, cfg, view_mask=mask)
    assert "view_order" not in compute_losses(model, full, brain, cfg)  # no views


def _run(cmd, env):
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]


@pytest.mark.slow
def test_torchrun_two_processes_match_one(tmp_path):
    text, brain = linked_corpus(n=160, text_dim=16, brain_dim=24)
    np.save(tmp_path / "text.npy", text)
    np.save(tmp_path / "brain.npy", brain)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = [
        "--text",
        str(tmp_path / "text.npy"),
        "--brain",
        str(tmp_path / "brain.npy"),
        "--epochs",
        "3",
        "--batch-size",
        "32",
        "--preset",
        "meru",
    ]
    _run(
        [
            sys.executable,
            "-m",
            "nimare_mnm.training",
            *common,
            "--history",
            str(tmp_path / "one.json"),
        ],
        env,
    )
    _run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "nimare_mnm.training",
            *common,
            "--history",
            str(tmp_path / "two.json"),
        ],
        env,
    )
    one = json.loads((tmp_path / "one.json").read_text())
    two = json.loads((tmp_path / "two.json").read_text())
    assert len(one) == len(two) == 3
    for a, b in zip(one, two):
        assert b["total"] == pytest.approx(a["total"], rel=1e-4)
        assert b["val_recall_at_10"] == pytest.approx(a["val_recall_at_10"])
    assert one[-1]["total"] < one[0]["total"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_training_path():
    """Training on the GPU follows the CPU run (same seed, no dropout) up to rounding."""
    text, brain = linked_corpus(n=200)
    runs = {}
    for device in ("cpu", "cuda"):
        runs[device] = train(
            text,
            brain,
            model_config=small(text, brain, dropout=0.0),
            train_config=TrainConfig(epochs=2, batch_size=64, device=device, show_progress=False),
        )
    res = runs["cuda"]
    assert res.device.startswith("cuda")
    assert next(res.model.parameters()).is_cuda
    for cpu, gpu in zip(runs["cpu"].history, res.history, strict=True):
        assert gpu["total"] == pytest.approx(cpu["total"], rel=1e-3)


def test_checkpoint_round_trip_gives_identical_embeddings(tmp_path):
    from nimare_mnm.checkpoint import load_model, save_model

    rng = np.random.default_rng(0)
    layout = tiny_layout(rng)
    model = MNMModel(MNMConfig(8, 20, embed_dim=6, hidden_dim=16), layout).eval()
    save_model(
        model,
        tmp_path / "ckpt",
        extra_config={"corpus": "synthetic"},
        extra_arrays={"ids": np.arange(5)},
    )
    loaded, config, arrays = load_model(tmp_path / "ckpt")
    x = torch.as_tensor(rng.random((4, 8)), dtype=torch.float32)
    b = torch.as_tensor(rng.random((4, 20)), dtype=torch.float32)
    with torch.no_grad():
        assert torch.equal(model.encode_text(x), loaded.encode_text(x))
        assert torch.equal(model.encode_levels(b)[1], loaded.encode_levels(b)[1])
        assert torch.equal(
            model.decode(model.encode_text(x)), loaded.decode(loaded.encode_text(x))
        )
    assert config["corpus"] == "synthetic" and arrays["ids"].tolist() == list(range(5))
    # a corrupt file is reported, not loaded
    weights = tmp_path / "ckpt" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(ValueError, match="corrupt"):
        load_model(tmp_path / "ckpt")


def test_min_text_radius_keeps_text_points_out_of_the_saturated_cone_zone():
    from nimare_mnm.model import MNMConfig, MNMModel

    torch.manual_seed(0)
    text = torch.randn(64, 16) * 1e-3  # tiny inputs: without a floor the points sit at 0
    plain = MNMModel(MNMConfig(text_dim=16, brain_dim=8, embed_dim=8)).eval()
    floored = MNMModel(MNMConfig(text_dim=16, brain_dim=8, embed_dim=8, min_text_radius=0.5))
    floored.load_state_dict(plain.state_dict())
    floored.eval()
    with torch.no_grad():
        r_plain = plain.radius(plain.encode_text(text))
        r_floor = floored.radius(floored.encode_text(text))
        # The floor shifts the distance by exactly 0.5 and keeps each point's direction.
        torch.testing.assert_close(r_floor, r_plain + 0.5, atol=1e-5, rtol=1e-5)
        cos = torch.nn.functional.cosine_similarity(
            plain.encode_text(text), floored.encode_text(text), dim=-1
        )
        assert (cos > 0.9999).all()
        # Out there the cone of a text point no longer spans pi/2.
        c = floored.curvature
        assert (lorentz.half_aperture(floored.encode_text(text), c) < 1.2).all()
    with pytest.raises(ValueError, match="min_text_radius"):
        MNMConfig(text_dim=16, brain_dim=8, min_text_radius=-1)


def test_max_brain_radius_bounds_brain_points_and_keeps_near_ones():
    from nimare_mnm.model import MNMConfig, MNMModel

    torch.manual_seed(0)
    plain = MNMModel(MNMConfig(text_dim=8, brain_dim=16, embed_dim=8)).eval()
    capped = MNMModel(MNMConfig(text_dim=8, brain_dim=16, embed_dim=8, max_brain_radius=3.0))
    capped.load_state_dict(plain.state_dict())
    capped.eval()
    with torch.no_grad():
        plain.log_brain_alpha.fill_(math.log(20.0))  # far-out brain points
        capped.log_brain_alpha.fill_(math.log(20.0))
        brain = torch.randn(64, 16)
        r_plain = plain.radius(plain.encode_brain(brain))
        r_capped = capped.radius(capped.encode_brain(brain))
        assert r_plain.max() > 6
        assert r_capped.max() <= 3.0 + 1e-5
        # The radius follows 3 tanh(r / 3), each point keeping its direction.
        torch.testing.assert_close(r_capped, 3.0 * torch.tanh(r_plain / 3.0), atol=1e-3, rtol=1e-3)
        cos = torch.nn.functional.cosine_similarity(
            plain.encode_brain(brain), capped.encode_brain(brain), dim=-1
        )
        assert (cos > 0.9999).all()
        # Near the origin the cap changes almost nothing; text points are never capped.
        plain.log_brain_alpha.fill_(math.log(0.01))
        capped.log_brain_alpha.fill_(math.log(0.01))
        near = plain.radius(plain.encode_brain(brain))
        assert near.max() < 0.5
        torch.testing.assert_close(
            capped.radius(capped.encode_brain(brain)), near, atol=0.01, rtol=0.03
        )
        text = torch.randn(8, 8)
        torch.testing.assert_close(capped.encode_text(text), plain.encode_text(text))
    with pytest.raises(ValueError, match="max_brain_radius"):
        MNMConfig(text_dim=16, brain_dim=8, max_brain_radius=-1)
