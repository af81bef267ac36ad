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
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy
import safetensors.torch
import torch

LGR = logging.getLogger(__name__)

__all__ = [
    "ARRAYS_FILE",
    "CONFIG_FILE",
    "FORMAT_VERSION",
    "WEIGHTS_FILE",
    "load_checkpoint",
    "save_checkpoint",
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


def _fsync_dir(path: Path) -> None:
    """Flush a directory entry to disk where the platform allows it (POSIX)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - file systems that refuse directory fsync
        pass
    finally:
        os.close(fd)


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

    parent = path.parent
    parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:12]
    tmp = parent / f".{path.name}.tmp-{token}"
    old = parent / f".{path.name}.old-{token}"
    tmp.mkdir()
    try:
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
        config_file = tmp / CONFIG_FILE
        with open(config_file, "w", encoding="utf-8") as fh:
            json.dump(full_config, fh, indent=2, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        _fsync_file(weights_file)
        _fsync_file(arrays_file)
        _fsync_dir(tmp)

        moved_aside = False
        if path.exists():
            os.replace(path, old)
            moved_aside = True
        try:
            os.replace(tmp, path)
        except BaseException:
            if moved_aside:
                os.replace(old, path)
            raise
        _fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)
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
