"""Model checkpoints: a folder with the weights, extra arrays and the configuration.

A checkpoint is a folder holding three files:

- ``model.safetensors``: the model's weights (a ``state_dict``), written with
  :func:`safetensors.torch.save_file`. Tensors are detached, moved to the CPU and made
  contiguous; tensors sharing memory with another entry (tied weights) or viewing part of a
  larger storage are cloned, so that safetensors accepts them.
- ``arrays.safetensors``: extra NumPy arrays (for example the brain-vector assignment or
  term embeddings), written with :func:`safetensors.numpy.save_file`. They live in their own
  file rather than under a prefix in the weights file, so their names can never collide with
  weight names and their NumPy dtypes round trip exactly. The file is always written (empty
  when there are no extra arrays).
- ``config.json``: the caller's configuration plus ``"nimare_mnm_version"``,
  ``"format_version"`` (currently ``1``), ``"created"`` (ISO 8601 timestamp, UTC),
  ``"sha256"`` (of ``model.safetensors``) and ``"arrays_sha256"`` (of
  ``arrays.safetensors``).

Writes are atomic: everything is written into a temporary sibling folder, which is then
moved into place with :func:`os.replace`. An existing checkpoint is first moved aside, and
deleted only once the new one is in place; if anything fails, the old checkpoint is put back.
Loading checks the files' SHA-256 digests, so a truncated or edited file is reported as
corrupt instead of silently giving wrong weights.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy
import safetensors.torch
import torch

from nimare_mnm.levels import Level, LevelLayout, levels_from_dicts, levels_to_dicts
from nimare_mnm.model import MNMConfig, MNMModel
from nimare_mnm.utils import atomic_directory
from nimare_mnm.vectorizer import BrainVectorizer

LGR = logging.getLogger(__name__)

__all__ = [
    "ARRAYS_FILE",
    "EncoderCheckpoint",
    "CONFIG_FILE",
    "FORMAT_VERSION",
    "WEIGHTS_FILE",
    "load_checkpoint",
    "load_model",
    "encoder_contents",
    "read_encoder_checkpoint",
    "save_checkpoint",
    "save_model",
    "state_shapes",
]

#: Version of the on-disk layout written by :func:`save_checkpoint`.
FORMAT_VERSION = 1
#: Name of the weights file inside a checkpoint folder.
WEIGHTS_FILE = "model.safetensors"
#: Name of the extra-arrays file inside a checkpoint folder.
ARRAYS_FILE = "arrays.safetensors"
#: Name of the configuration file inside a checkpoint folder.
CONFIG_FILE = "config.json"

_RESERVED_KEYS = ("nimare_mnm_version", "format_version", "created", "sha256", "arrays_sha256")
_CHUNK = 1 << 20


def _package_version() -> str:
    from nimare_mnm import __version__

    return __version__


def _sha256(path: Path) -> str:
    """Return the hexadecimal SHA-256 digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _prepare_tensors(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detach, move to CPU, make contiguous, and unshare the tensors of a state dict."""
    out: dict[str, torch.Tensor] = {}
    seen_storages: set[tuple[int, int]] = set()
    for name, tensor in state_dict.items():
        if not isinstance(name, str):
            raise TypeError(f"state_dict keys must be str, got {type(name).__name__}: {name!r}")
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(
                f"state_dict[{name!r}] is a {type(tensor).__name__}, not a torch.Tensor"
            )
        if tensor.device.type == "meta":
            raise ValueError(f"state_dict[{name!r}] is on the meta device and has no data")
        t = tensor.detach().to("cpu").contiguous()
        storage = t.untyped_storage()
        key = (storage.data_ptr(), storage.nbytes())
        owns_storage = t.numel() * t.element_size() == storage.nbytes()
        if key in seen_storages or not owns_storage:
            t = t.clone()
            storage = t.untyped_storage()
            key = (storage.data_ptr(), storage.nbytes())
        if t.numel() > 0:
            seen_storages.add(key)
        out[name] = t
    return out


def _prepare_arrays(extra_arrays: Mapping[str, np.ndarray] | None) -> dict[str, np.ndarray]:
    """Check the extra arrays and make them contiguous NumPy arrays."""
    out: dict[str, np.ndarray] = {}
    for name, array in (extra_arrays or {}).items():
        if not isinstance(name, str):
            raise TypeError(f"extra_arrays keys must be str, got {type(name).__name__}: {name!r}")
        arr = np.asarray(array)
        if arr.dtype.hasobject or arr.dtype.kind in "USV":
            raise TypeError(
                f"extra_arrays[{name!r}] has dtype {arr.dtype}; only numeric and bool arrays "
                "can be stored (put strings in the config instead)"
            )
        out[name] = np.ascontiguousarray(arr)
    return out


def save_checkpoint(
    path: str | os.PathLike,
    state_dict: Mapping[str, torch.Tensor],
    config: Mapping[str, Any],
    extra_arrays: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """Write a checkpoint folder atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Folder to create. If it already holds a checkpoint (a folder with ``config.json``)
        or is an empty folder, it is replaced atomically.
    state_dict : dict of str to torch.Tensor
        The model weights, e.g. ``module.state_dict()``. Tensors may live on any device,
        be non-contiguous or share memory; they are detached, copied to the CPU, made
        contiguous and, where they share memory, cloned.
    config : dict
        JSON-serialisable configuration. The keys ``"nimare_mnm_version"``,
        ``"format_version"``, ``"created"``, ``"sha256"`` and ``"arrays_sha256"`` are
        reserved and overwritten (with a warning).
    extra_arrays : dict of str to numpy.ndarray, optional
        Extra numeric arrays (brain-vector assignment, term embeddings, ...), stored in
        ``arrays.safetensors`` with their dtypes.

    Returns
    -------
    pathlib.Path
        The checkpoint folder.

    Raises
    ------
    FileExistsError
        If ``path`` exists and is a file, or a non-empty folder that is not a checkpoint.
    TypeError
        If a weight is not a tensor, an extra array is not numeric, or the configuration is
        not JSON-serialisable. Nothing is written in that case.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"cannot write a checkpoint to {path}: it exists and is a file")
    if path.is_dir() and any(path.iterdir()) and not (path / CONFIG_FILE).is_file():
        raise FileExistsError(
            f"refusing to replace {path}: it is a non-empty folder without {CONFIG_FILE}, "
            "so it does not look like a checkpoint"
        )
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a mapping, got {type(config).__name__}")
    clash = sorted(set(config) & set(_RESERVED_KEYS))
    if clash:
        LGR.warning("config keys %s are reserved and will be overwritten", clash)

    tensors = _prepare_tensors(state_dict)
    arrays = _prepare_arrays(extra_arrays)
    full_config = {k: v for k, v in config.items() if k not in _RESERVED_KEYS}
    try:  # fail before touching the disk if the config cannot be written
        json.dumps(full_config)
    except (TypeError, ValueError) as err:
        raise TypeError(f"config is not JSON-serialisable: {err}") from err

    with atomic_directory(path) as tmp:
        weights_file = tmp / WEIGHTS_FILE
        arrays_file = tmp / ARRAYS_FILE
        safetensors.torch.save_file(
            tensors, str(weights_file), metadata={"format": "pt", "format_version": "1"}
        )
        safetensors.numpy.save_file(arrays, str(arrays_file), metadata={"format": "np"})
        full_config.update(
            nimare_mnm_version=_package_version(),
            format_version=FORMAT_VERSION,
            created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            sha256=_sha256(weights_file),
            arrays_sha256=_sha256(arrays_file),
        )
        with open(tmp / CONFIG_FILE, "w", encoding="utf-8") as fh:
            json.dump(full_config, fh, indent=2, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        _fsync_file(weights_file)
        _fsync_file(arrays_file)
    LGR.info("wrote checkpoint %s (%d tensors, %d extra arrays)", path, len(tensors), len(arrays))
    return path


def _check_digest(file: Path, expected: Any, key: str, config_file: Path) -> None:
    if not isinstance(expected, str):
        raise ValueError(
            f"checkpoint config {config_file} is corrupt: it has no valid {key!r} entry"
        )
    found = _sha256(file)
    if found != expected:
        raise ValueError(
            f"checkpoint file {file} is corrupt (truncated or modified): its SHA-256 is "
            f"{found}, but {config_file} records {expected}"
        )


def load_checkpoint(
    path: str | os.PathLike,
    expected_shapes: Mapping[str, tuple] | None = None,
    map_location: str | torch.device = "cpu",
) -> tuple[dict[str, torch.Tensor], dict, dict[str, np.ndarray]]:
    """Read a checkpoint folder written by :func:`save_checkpoint`.

    Parameters
    ----------
    path : str or os.PathLike
        The checkpoint folder.
    expected_shapes : dict of str to tuple, optional
        The tensor names and shapes the caller needs, e.g. ``state_shapes(model)``. When
        given, the weights must have exactly these names and shapes.
    map_location : str or torch.device, default="cpu"
        Device the weights are loaded onto.

    Returns
    -------
    state_dict : dict of str to torch.Tensor
        The weights.
    config : dict
        The configuration, including ``"nimare_mnm_version"``, ``"format_version"``,
        ``"created"``, ``"sha256"`` and ``"arrays_sha256"``.
    extra_arrays : dict of str to numpy.ndarray
        The extra arrays, with the dtypes they were saved with.

    Raises
    ------
    FileNotFoundError
        If the folder or one of its files is missing.
    ValueError
        If a file is corrupt (unparseable JSON, unreadable safetensors file, SHA-256
        mismatch), if the checkpoint's ``format_version`` is newer than this version of
        nimare-mnm supports, or if the weights do not match ``expected_shapes``.

    Notes
    -----
    A checkpoint written by a different version of nimare-mnm (same format) loads, with a
    logged warning.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint folder not found: {path}")
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint path is not a folder: {path}")
    config_file = path / CONFIG_FILE
    weights_file = path / WEIGHTS_FILE
    arrays_file = path / ARRAYS_FILE
    for file in (config_file, weights_file, arrays_file):
        if not file.is_file():
            raise FileNotFoundError(f"checkpoint file missing: {file}")

    try:
        with open(config_file, encoding="utf-8") as fh:
            config = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"checkpoint config {config_file} is corrupt: {err}") from err
    if not isinstance(config, dict):
        raise ValueError(
            f"checkpoint config {config_file} is corrupt: expected a JSON object, "
            f"got {type(config).__name__}"
        )

    fmt = config.get("format_version")
    if not isinstance(fmt, int) or isinstance(fmt, bool):
        raise ValueError(
            f"checkpoint config {config_file} is corrupt: missing or invalid 'format_version' "
            f"({fmt!r})"
        )
    if fmt > FORMAT_VERSION:
        raise ValueError(
            f"checkpoint {path} has format_version {fmt}, but this version of nimare-mnm "
            f"({_package_version()}) reads format_version <= {FORMAT_VERSION}; "
            "upgrade nimare-mnm to load it"
        )
    saved_version = config.get("nimare_mnm_version")
    if saved_version != _package_version():
        LGR.warning(
            "checkpoint %s was written by nimare-mnm %s; this is nimare-mnm %s",
            path,
            saved_version,
            _package_version(),
        )

    _check_digest(weights_file, config.get("sha256"), "sha256", config_file)
    _check_digest(arrays_file, config.get("arrays_sha256"), "arrays_sha256", config_file)
    device = str(map_location) if isinstance(map_location, torch.device) else map_location
    try:
        state_dict = safetensors.torch.load_file(str(weights_file), device=device)
    except Exception as err:  # safetensors raises its own error types
        raise ValueError(f"checkpoint file {weights_file} is corrupt: {err}") from err
    try:
        arrays = safetensors.numpy.load_file(str(arrays_file))
    except Exception as err:
        raise ValueError(f"checkpoint file {arrays_file} is corrupt: {err}") from err

    if expected_shapes is not None:
        _check_shapes(state_dict, expected_shapes, weights_file)
    return state_dict, config, arrays


def _check_shapes(
    state_dict: Mapping[str, torch.Tensor], expected: Mapping[str, tuple], file: Path
) -> None:
    """Raise a ValueError listing every missing, unexpected or mis-shaped tensor."""
    found = state_shapes(state_dict)
    expected = {k: tuple(v) for k, v in expected.items()}
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    mismatched = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
    if not (missing or unexpected or mismatched):
        return
    lines = [f"checkpoint weights in {file} do not match the expected shapes:"]
    if missing:
        lines.append(f"  missing tensors: {', '.join(missing)}")
    if unexpected:
        lines.append(f"  unexpected tensors: {', '.join(unexpected)}")
    for name in mismatched:
        lines.append(f"  {name}: expected shape {expected[name]}, found shape {found[name]}")
    raise ValueError("\n".join(lines))


def state_shapes(
    module_or_state_dict: torch.nn.Module | Mapping[str, torch.Tensor | np.ndarray],
) -> dict[str, tuple]:
    """Return the shape of every tensor of a module or state dict.

    Parameters
    ----------
    module_or_state_dict : torch.nn.Module or dict of str to tensor or array
        A module (its ``state_dict()`` is used) or a mapping of names to tensors or arrays.

    Returns
    -------
    dict of str to tuple of int
        Name to shape, suitable as ``expected_shapes`` for :func:`load_checkpoint`.
    """
    if isinstance(module_or_state_dict, torch.nn.Module):
        items = module_or_state_dict.state_dict()
    elif isinstance(module_or_state_dict, Mapping):
        items = module_or_state_dict
    else:
        raise TypeError(
            "expected a torch.nn.Module or a mapping of tensors, got "
            f"{type(module_or_state_dict).__name__}"
        )
    return {name: tuple(int(d) for d in value.shape) for name, value in items.items()}


# --------------------------------------------------------------------------- models
def save_model(
    model: MNMModel,
    path,
    *,
    extra_config: dict | None = None,
    extra_arrays: dict | None = None,
):
    """Save a model as a checkpoint folder (safetensors weights + JSON config).

    Parameters
    ----------
    model : :class:`~nimare_mnm.model.MNMModel`
        The model.
    path : path-like
        Checkpoint folder (written atomically, replacing an existing checkpoint).
    extra_config : :obj:`dict`, optional
        More JSON-serialisable configuration (training settings, corpus, split...).
    extra_arrays : :obj:`dict`, optional
        More NumPy arrays to store beside the weights.

    Returns
    -------
    :class:`pathlib.Path`
        The checkpoint folder.
    """
    arrays = dict(extra_arrays or {})
    config = {"model": model.config.to_dict(), **(extra_config or {})}
    if model.layout is not None:
        arrays["layout.compartment"] = model.layout.compartment
        for level, regions in model.layout.regions.items():
            arrays[f"layout.regions.{level}"] = regions
        config["layout_names"] = model.layout.names
    return save_checkpoint(path, model.state_dict(), config, arrays)


def load_model(path, map_location: str = "cpu") -> tuple[MNMModel, dict, dict]:
    """Load a checkpoint written by :func:`save_model`.

    Parameters
    ----------
    path : path-like
        Checkpoint folder.
    map_location : :obj:`str`, default="cpu"
        Device of the loaded weights.

    Returns
    -------
    model : :class:`~nimare_mnm.model.MNMModel`
        In evaluation mode.
    config : :obj:`dict`
        The stored configuration.
    arrays : :obj:`dict`
        The extra arrays (without the layout's).

    Raises
    ------
    FileNotFoundError, ValueError
        Missing, corrupt or incompatible checkpoint (the message names the problem).
    """
    state, config, arrays = load_checkpoint(path, map_location=map_location)
    if "model" not in config:
        raise ValueError(f"{path} is not an nimare-mnm model checkpoint (no model config).")
    try:
        mcfg = MNMConfig(**config["model"])
    except TypeError as exc:
        raise ValueError(f"The model configuration in {path} is incompatible: {exc}") from exc
    layout = None
    if "layout.compartment" in arrays:
        names = config["layout_names"]  # JSON keeps the levels' order; the arrays do not
        try:
            regions = {level: arrays.pop(f"layout.regions.{level}") for level in names}
        except KeyError as exc:
            raise ValueError(f"The checkpoint in {path} lacks the layout of level {exc}.") from exc
        layout = LevelLayout(arrays.pop("layout.compartment"), regions, names)
    model = MNMModel(mcfg, layout)
    expected = state_shapes(model)
    found = {k: tuple(v.shape) for k, v in state.items()}
    if expected != found:
        bad = sorted(set(expected) ^ set(found)) + sorted(
            k for k in set(expected) & set(found) if expected[k] != found[k]
        )
        raise ValueError(f"The weights in {path} do not match the model configuration: {bad[:5]}")
    model.load_state_dict(state)
    return model.eval(), config, arrays


# --------------------------------------------------------------------------- estimators
def encoder_contents(encoder) -> tuple[dict, dict]:
    """Return the configuration and arrays of an encoder's checkpoint (weights apart).

    Parameters
    ----------
    encoder : :class:`~nimare_mnm.encoder.MNMEncoder`
        Fitted.

    Returns
    -------
    config : :obj:`dict`
        JSON-serialisable: parameters, similarity, level specification, region names,
        vectoriser settings, training record, vocabulary.
    arrays : :obj:`dict`
        Brain-vector assignment, study ids and points, region labels per level, and for
        models trained on term maps the studies behind each map (CSR ``indptr``/``indices``).
    """
    vec = encoder.vectorizer_
    params = encoder.get_params(deep=False)
    params["data_dir"] = None  # a local path means nothing elsewhere
    params["levels"] = None  # recorded below as JSON
    if not isinstance(params["text_model"], str):
        # A custom text encoder object cannot be stored: record what it was.
        params["text_model"] = f"custom:{type(params['text_model']).__name__}"
    vocabulary = getattr(encoder, "vocabulary_", None)
    config = {
        "estimator": "MNMEncoder",
        "params": params,
        "similarity": encoder.similarity_,
        "levels": levels_to_dicts(encoder.levels_),
        "region_names": encoder.region_names_,
        "vectorizer": {
            "parcellation": vec.parcellation,
            "block_mm": vec.block_mm,
            "smooth_fwhm": vec.smooth_fwhm,
        },
        "n_neighbours": getattr(encoder, "n_neighbours_", None),
        "training": {k: v for k, v in encoder.training_.items() if k != "history"},
        "query_confidence": encoder.training_.get("query_confidence"),
        "vocabulary": sorted(vocabulary.terms) if vocabulary is not None else None,
        "term_features": (
            encoder.term_features_.to_dict()
            if getattr(encoder, "term_features_", None) is not None
            else None
        ),
        "history": encoder.training_.get("history", []),
    }
    arrays = {
        "vectorizer.assignment": vec.assignment_.astype(np.int16),
        "studies.ids": np.asarray(
            [int(i) if str(i).isdigit() else -1 for i in encoder.study_ids_]
        ),
        "studies.text_points": encoder.study_text_points_.astype(np.float16),
        "studies.brain_points": encoder.study_brain_points_.astype(np.float16),
    }
    if (arrays["studies.ids"] < 0).any():
        config["study_ids"] = [str(i) for i in encoder.study_ids_]
    for level in encoder.levels_:
        arrays[f"regions.{level.name}"] = encoder.region_labels_[level.name].astype(np.int16)
    if hasattr(encoder, "study_vectors_"):
        arrays["studies.vectors"] = encoder.study_vectors_
    sources = getattr(encoder, "term_map_sources_", None)
    if sources is not None:
        # Which training studies built each term map (columns follow the study ids).
        config["term_map_terms"] = [str(t) for t in encoder.term_map_terms_]
        arrays["term_maps.indptr"] = np.asarray(sources.indptr, dtype=np.int64)
        # Column indices fit 16 bits for up to 65,536 studies (half the size of int32).
        small = sources.shape[1] <= np.iinfo(np.uint16).max + 1
        arrays["term_maps.indices"] = np.asarray(
            sources.indices, dtype=np.uint16 if small else np.int32
        )
    return config, arrays


@dataclass
class EncoderCheckpoint:
    """What an encoder checkpoint holds, read and checked (see :func:`read_encoder_checkpoint`)."""

    path: Path
    model: MNMModel
    config: dict
    arrays: dict
    params: dict
    similarity: str
    vectorizer: BrainVectorizer
    levels: tuple[Level, ...]
    region_labels: dict
    region_names: dict
    study_ids: list
    text_points: np.ndarray
    brain_points: np.ndarray
    study_vectors: np.ndarray | None


def read_encoder_checkpoint(path) -> EncoderCheckpoint:
    """Read an encoder checkpoint written by :meth:`MNMEncoder.save_checkpoint`.

    Checkpoints record their level specification; those written before it was recorded
    load with the default :data:`~nimare_mnm.levels.LEVELS`.

    Raises
    ------
    FileNotFoundError, ValueError
        Missing, corrupt or incompatible checkpoint (the message names the problem).
    """
    model, config, arrays = load_model(path)
    if config.get("estimator") != "MNMEncoder":
        raise ValueError(f"{path} is a model checkpoint but not an MNMEncoder's.")
    try:
        levels = levels_from_dicts(config.get("levels"))
        labels = {lv.name: arrays[f"regions.{lv.name}"].astype(np.int64) for lv in levels}
        params = dict(config["params"])
        params["levels"] = levels
        vec = BrainVectorizer(**config["vectorizer"])
        vec.set_assignment(arrays["vectorizer.assignment"].astype(np.int64), labels)
        return EncoderCheckpoint(
            path=Path(path),
            model=model,
            config=config,
            arrays=arrays,
            params=params,
            similarity=config["similarity"],
            vectorizer=vec,
            levels=levels,
            region_labels=labels,
            region_names=config["region_names"],
            study_ids=config.get("study_ids") or [str(i) for i in arrays["studies.ids"]],
            text_points=arrays["studies.text_points"],
            brain_points=arrays["studies.brain_points"],
            study_vectors=arrays.get("studies.vectors"),
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"The checkpoint in {path} is incomplete or incompatible: {exc}") from exc
