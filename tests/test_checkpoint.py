"""Tests for nimare_mnm.checkpoint: round trips, atomic writes and clear errors."""

import hashlib
import json
import logging
import os

import numpy as np
import pytest
import torch

import nimare_mnm
from nimare_mnm.checkpoint import (
    ARRAYS_FILE,
    CONFIG_FILE,
    WEIGHTS_FILE,
    load_checkpoint,
    save_checkpoint,
    state_shapes,
)


def _model(seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(7, 16),
        torch.nn.LayerNorm(16),
        torch.nn.ReLU(),
        torch.nn.Linear(16, 3),
    )


@pytest.fixture
def saved(tmp_path):
    model = _model(0)
    path = save_checkpoint(tmp_path / "ckpt", model.state_dict(), {"dim": 16})
    return model, path


def test_round_trip_bitwise_identical_outputs(tmp_path):
    model = _model(0)
    x = torch.randn(5, 7, generator=torch.Generator().manual_seed(1))
    expected = model(x)
    path = save_checkpoint(tmp_path / "ckpt", model.state_dict(), {"dim": 16})
    assert path == tmp_path / "ckpt"
    assert sorted(os.listdir(path)) == sorted([WEIGHTS_FILE, ARRAYS_FILE, CONFIG_FILE])

    fresh = _model(123)
    assert not torch.equal(fresh(x), expected)  # the fresh module really differs
    state, _, _ = load_checkpoint(path, expected_shapes=state_shapes(fresh))
    fresh.load_state_dict(state, strict=True)
    assert torch.equal(fresh(x), expected)
    for name, tensor in model.state_dict().items():
        assert state[name].dtype == tensor.dtype
        assert torch.equal(state[name], tensor)


def test_shared_noncontiguous_and_grad_tensors(tmp_path):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    weight = torch.randn(3, 3, requires_grad=True)
    state = {
        "a": base,
        "a_tied": base,  # same storage: safetensors alone would refuse this
        "t": base.t(),  # non-contiguous view of the same storage
        "slice": base[1:3],  # part of a larger storage
        "w": weight,  # requires grad
        "half": torch.ones(2, dtype=torch.float16),
        "empty": torch.zeros(0, 4),
    }
    save_checkpoint(tmp_path / "ckpt", state, {})
    loaded, _, _ = load_checkpoint(tmp_path / "ckpt")
    assert set(loaded) == set(state)
    for name, tensor in state.items():
        assert loaded[name].dtype == tensor.dtype
        assert torch.equal(loaded[name], tensor.detach()), name
        assert not loaded[name].requires_grad
    # the tied entries are independent copies after loading
    loaded["a"][0, 0] = -1.0
    assert loaded["a_tied"][0, 0] == 0.0


def test_extra_arrays_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        "assignment": rng.integers(0, 50, size=1000).astype(np.int32),
        "term_embeddings": rng.standard_normal((20, 8)).astype(np.float32),
        "mask": rng.random(30) > 0.5,
        "wide": rng.integers(0, 2**40, size=5, dtype=np.int64),
        "fortran": np.asfortranarray(rng.standard_normal((4, 3))),
        "u16": np.arange(10, dtype=np.uint16),
    }
    save_checkpoint(tmp_path / "ckpt", {"w": torch.ones(2)}, {}, extra_arrays=arrays)
    state, _, loaded = load_checkpoint(tmp_path / "ckpt")
    assert set(state) == {"w"}  # extra arrays do not leak into the weights
    assert set(loaded) == set(arrays)
    for name, arr in arrays.items():
        assert loaded[name].dtype == arr.dtype, name
        assert loaded[name].shape == arr.shape, name
        np.testing.assert_array_equal(loaded[name], arr)

    save_checkpoint(tmp_path / "none", {"w": torch.ones(2)}, {})
    assert load_checkpoint(tmp_path / "none")[2] == {}


def test_extra_arrays_reject_strings(tmp_path):
    with pytest.raises(TypeError, match="names"):
        save_checkpoint(tmp_path / "ckpt", {}, {}, extra_arrays={"names": np.array(["a"])})
    assert not (tmp_path / "ckpt").exists()


def test_config_round_trip_with_version_fields(tmp_path):
    config = {"dim": 16, "levels": ["whole", "yeo7"], "curvature": 1.5, "nested": {"a": None}}
    save_checkpoint(tmp_path / "ckpt", {"w": torch.ones(2)}, config)
    _, loaded, _ = load_checkpoint(tmp_path / "ckpt")
    for key, value in config.items():
        assert loaded[key] == value
    assert loaded["nimare_mnm_version"] == nimare_mnm.__version__
    assert loaded["format_version"] == 1
    assert loaded["created"][:4].isdigit() and "T" in loaded["created"]
    assert len(loaded["sha256"]) == 64
    assert len(loaded["arrays_sha256"]) == 64
    assert config == {  # the caller's dict is not modified
        "dim": 16,
        "levels": ["whole", "yeo7"],
        "curvature": 1.5,
        "nested": {"a": None},
    }


def test_non_json_config_writes_nothing(tmp_path):
    with pytest.raises(TypeError, match="JSON"):
        save_checkpoint(tmp_path / "ckpt", {"w": torch.ones(2)}, {"bad": object()})
    assert list(tmp_path.iterdir()) == []


def test_atomic_overwrite_keeps_valid_checkpoint(tmp_path, saved):
    _, path = saved
    save_checkpoint(path, {"w": torch.full((3,), 2.0)}, {"run": 2}, {"x": np.arange(3)})
    state, config, arrays = load_checkpoint(path)
    assert set(state) == {"w"} and torch.equal(state["w"], torch.full((3,), 2.0))
    assert config["run"] == 2 and "dim" not in config
    np.testing.assert_array_equal(arrays["x"], np.arange(3))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temp or old folders left


def test_failed_overwrite_leaves_old_checkpoint(tmp_path, saved, monkeypatch):
    model, path = saved
    real_replace = os.replace
    calls = []

    def flaky_replace(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # moving the new folder into place fails
            raise OSError("disk full")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", flaky_replace)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"w": torch.ones(1)}, {"run": 2})
    monkeypatch.setattr(os, "replace", real_replace)
    assert len(calls) == 3  # aside, failed replace, restore
    state, config, _ = load_checkpoint(path)
    assert config["dim"] == 16
    assert set(state) == set(model.state_dict())
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_refuses_to_replace_non_checkpoint_folder(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="data"):
        save_checkpoint(folder, {"w": torch.ones(1)}, {})
    assert (folder / "precious.txt").read_text() == "keep me"
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="file"):
        save_checkpoint(tmp_path / "file", {"w": torch.ones(1)}, {})
    empty = tmp_path / "empty"
    empty.mkdir()
    save_checkpoint(empty, {"w": torch.ones(1)}, {})
    assert load_checkpoint(empty)[0]["w"].shape == (1,)


def test_truncated_weights_is_corrupt(saved):
    _, path = saved
    weights = path / WEIGHTS_FILE
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt") as info:
        load_checkpoint(path)
    assert WEIGHTS_FILE in str(info.value)


def test_edited_weights_is_corrupt(saved):
    _, path = saved
    weights = path / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # flip bits in the last weight: still a loadable safetensors file
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt"):
        load_checkpoint(path)


def test_unloadable_weights_with_matching_digest_is_corrupt(saved):
    _, path = saved
    weights = path / WEIGHTS_FILE
    weights.write_bytes(b"not a safetensors file")
    config = json.loads((path / CONFIG_FILE).read_text())
    config["sha256"] = hashlib.sha256(b"not a safetensors file").hexdigest()
    (path / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ValueError, match="corrupt") as info:
        load_checkpoint(path)
    assert WEIGHTS_FILE in str(info.value)


def test_garbage_config_is_corrupt(saved):
    _, path = saved
    (path / CONFIG_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="corrupt") as info:
        load_checkpoint(path)
    assert CONFIG_FILE in str(info.value)


def test_missing_folder(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="checkpoint folder not found.*nowhere"):
        load_checkpoint(missing)


@pytest.mark.parametrize("name", [WEIGHTS_FILE, CONFIG_FILE, ARRAYS_FILE])
def test_missing_file(saved, name):
    _, path = saved
    (path / name).unlink()
    with pytest.raises(FileNotFoundError) as info:
        load_checkpoint(path)
    assert str(path / name) in str(info.value)
    assert "checkpoint file missing" in str(info.value)


def test_shape_mismatch_names_tensor_and_shapes(saved):
    model, path = saved
    expected = state_shapes(model)
    assert expected["0.weight"] == (16, 7)
    expected["0.weight"] = (16, 8)
    with pytest.raises(ValueError) as info:
        load_checkpoint(path, expected_shapes=expected)
    msg = str(info.value)
    assert "0.weight" in msg and "(16, 8)" in msg and "(16, 7)" in msg
    assert "3.weight" not in msg  # only the mismatched tensor is listed


def test_missing_and_unexpected_tensors_listed(saved):
    model, path = saved
    expected = state_shapes(model)
    del expected["3.bias"]
    expected["head.weight"] = (2, 2)
    with pytest.raises(ValueError) as info:
        load_checkpoint(path, expected_shapes=expected)
    msg = str(info.value)
    assert "missing tensors: head.weight" in msg
    assert "unexpected tensors: 3.bias" in msg


def test_newer_format_version_asks_to_upgrade(saved):
    _, path = saved
    config = json.loads((path / CONFIG_FILE).read_text())
    config["format_version"] = 2
    (path / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ValueError, match="upgrade"):
        load_checkpoint(path)


def test_other_package_version_only_warns(saved, caplog):
    _, path = saved
    config = json.loads((path / CONFIG_FILE).read_text())
    config["nimare_mnm_version"] = "0.0.1"
    (path / CONFIG_FILE).write_text(json.dumps(config))
    with caplog.at_level(logging.WARNING, logger="nimare_mnm.checkpoint"):
        state, loaded, _ = load_checkpoint(path)
    assert loaded["nimare_mnm_version"] == "0.0.1"
    assert state
    assert any("0.0.1" in rec.getMessage() for rec in caplog.records)

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="nimare_mnm.checkpoint"):
        save_checkpoint(path, {"w": torch.ones(1)}, {})
        load_checkpoint(path)
    assert not caplog.records  # same version: no warning


def test_map_location_and_state_shapes(saved):
    model, path = saved
    state, _, _ = load_checkpoint(path, map_location=torch.device("cpu"))
    assert all(t.device.type == "cpu" for t in state.values())
    shapes = state_shapes(model)
    assert shapes == state_shapes(model.state_dict())
    assert shapes == {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert state_shapes({"a": np.zeros((2, 3))}) == {"a": (2, 3)}
    with pytest.raises(TypeError):
        state_shapes([1, 2])
