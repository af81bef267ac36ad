import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from nimare_mnm.losses import PRESETS, LossConfig, compute_losses, preset, similarity
from nimare_mnm.model import LevelLayout, MNMConfig, MNMModel
from nimare_mnm.training import TrainConfig, prepare_brain, train


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
    spec = PRESETS["nimare-mnm"]
    with pytest.warns(UserWarning, match="no level layout"):
        res = train(
            text,
            brain,
            model_config=small(text, brain),
            loss_config=spec["loss"],
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
        sim = similarity(spec["loss"].contrastive, t, b, model.curvature)
    fit = np.setdiff1d(np.arange(len(text)), res.val_rows)
    top1 = sim.argmax(1).numpy()
    assert np.mean(top1[fit] == fit) >= 0.9
    assert res.best_val_recall_at_10 > 50  # generalises to held-out studies
    assert res.history[res.best_epoch]["val_recall_at_10"] == res.best_val_recall_at_10


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
        loss_config=preset("nimare-mnm", w_hierarchy=0.5)["loss"],
        train_config=TrainConfig(
            epochs=60, batch_size=64, lr=3e-3, patience=60, show_progress=False
        ),
    )
    with torch.no_grad():
        radius = res.model.generality(res.model.encode_text(torch.as_tensor(text))).numpy()
    assert radius[is_parent].mean() < radius[~is_parent].mean()


def test_high_learning_rate_never_produces_nan():
    text, brain = linked_corpus(n=300)
    res = train(
        text,
        brain,
        model_config=small(text, brain),
        loss_config=preset("nimare-mnm", w_hierarchy=0.1, w_centroid=0.1)["loss"],
        train_config=TrainConfig(
            epochs=75, batch_size=64, lr=0.5, patience=1000, show_progress=False
        ),
    )
    steps = len(res.history) * (270 // 64)
    assert steps >= 300
    for record in res.history:
        assert all(np.isfinite(v) for v in record.values())


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


def test_losses_use_levels_and_directions():
    rng = np.random.default_rng(0)
    layout = tiny_layout(rng)
    model = MNMModel(MNMConfig(8, 20, embed_dim=6, hidden_dim=16), layout)
    prepared = prepare_brain(rng.random((6, 20)).astype(np.float32) + 0.01, layout)
    text = torch.as_tensor(rng.random((6, 8)), dtype=torch.float32)
    terms = {}
    for direction in ("whole_to_part", "part_to_whole"):
        cfg = LossConfig(w_entail_levels=1.0, level_direction=direction)
        terms[direction] = compute_losses(
            model,
            text,
            torch.as_tensor(prepared["brain"]),
            cfg,
            breadth=torch.as_tensor(prepared["breadth"]),
            region_mass=torch.as_tensor(prepared["region_mass"]),
        )["entail_levels"]
    assert terms["whole_to_part"] != terms["part_to_whole"]
    np.testing.assert_allclose(
        prepared["region_mass"][:, -1]
        + prepared["region_mass"][:, 0]
        + prepared["region_mass"][:, 1],
        1.0,
        rtol=1e-5,
    )


def test_view_order_term():
    """A short view farther from the origin than its full text is penalised, not the reverse."""
    rng = np.random.default_rng(0)
    model = MNMModel(MNMConfig(8, 20, embed_dim=6, hidden_dim=16, dropout=0.0)).eval()
    brain = torch.as_tensor(prepare_brain(rng.random((4, 20)).astype(np.float32) + 0.01)["brain"])
    full = torch.as_tensor(rng.random((4, 8)), dtype=torch.float32)
    cfg = LossConfig(w_view_order=1.0, view_margin=0.0)
    mask = torch.tensor([True, True, False, False])
    with torch.no_grad():
        radius = model.generality(model.encode_text(full))
    # Views scaled from the full texts: the head is not linear, so check the radii it gives.
    for factor in (0.1, 3.0):
        views = torch.where(mask[:, None], full * factor, full)
        with torch.no_grad():
            farther = model.generality(model.encode_text(views))[:2] > radius[:2]
        term = compute_losses(model, views, brain, cfg, full_text=full, view_mask=mask)
        assert ("view_order" in term) and torch.isfinite(term["view_order"])
        assert (term["view_order"] > 0) == bool(farther.any())
    with pytest.raises(ValueError, match="full texts"):
        compute_losses(model, views, brain, cfg, view_mask=mask)
    assert "view_order" not in compute_losses(model, full, brain, cfg)  # no views


def _run(cmd, env):
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]


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
    text, brain = linked_corpus(n=200)
    res = train(
        text,
        brain,
        model_config=small(text, brain),
        train_config=TrainConfig(epochs=2, batch_size=64, device="cuda", show_progress=False),
    )
    assert res.device.startswith("cuda")
    assert next(res.model.parameters()).is_cuda
    assert all(np.isfinite(h["total"]) for h in res.history)


def test_checkpoint_round_trip_gives_identical_embeddings(tmp_path):
    from nimare_mnm.model import load_model, save_model

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
