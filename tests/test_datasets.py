import shutil
import urllib.error

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from conftest import make_studyset, requires_data

from nimare_mnm import load_neuroquery, load_neurosynth
from nimare_mnm.datasets import _NQ_FILES, MNI_BOX, neuroquery_texts, study_texts


def test_missing_data_dir_names_files_and_folders(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_neuroquery(tmp_path / "nowhere", download=False, cache_dir=tmp_path / "c")
    msg = str(err.value)
    assert "data-neuroquery_version-1_coordinates.tsv.gz" in msg
    assert str(tmp_path / "nowhere" / "neuroquery") in msg
    assert "fetch_neuroquery" in msg and "NIMARE_MNM_DATA" in msg
    with pytest.raises(FileNotFoundError, match="fetch_neurosynth"):
        load_neurosynth(tmp_path, download=False, cache_dir=tmp_path / "c")


def test_failed_download_leaves_nothing_behind(tmp_path, monkeypatch):
    import nimare.extract.extract as extract

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(extract, "urlopen", offline)
    with pytest.raises(FileNotFoundError, match="Download attempt failed: URLError"):
        load_neuroquery(tmp_path, cache_dir=tmp_path / "c")
    assert not (tmp_path / "neuroquery").exists()  # no empty or partial files


def test_env_variable_sets_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("NIMARE_MNM_DATA", str(tmp_path / "from-env"))
    with pytest.raises(FileNotFoundError, match="from-env"):
        load_neuroquery(download=False, cache_dir=tmp_path / "c")


def test_neuroquery_texts_order_terms_by_tfidf():
    vocab = np.array(["brain", "memory", "working memory", "fear"], dtype=object)
    abstract = sp.csr_matrix(np.array([[2, 1, 2, 0], [3, 0, 0, 1], [1, 0, 0, 0]]))
    keywords = sp.csr_matrix(np.array([[0, 0, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]]))
    texts = neuroquery_texts(["A title.", "Fear study", float("nan")], abstract, keywords, vocab)
    # "brain" is in every abstract: lowest idf, so it comes after rarer terms
    assert texts[0] == (
        "A title. Keywords: working memory. Abstract terms: working memory, brain, memory."
    )
    assert texts[1] == "Fear study. Abstract terms: brain, fear."
    assert texts[2] == "Abstract terms: brain."


def test_query_views():
    from nimare_mnm.training import N_QUERY_VIEWS, query_views

    neuroquery = (
        "Fear and the amygdala. Keywords: fear; amygdala; conditioning. "
        "Abstract terms: fear, amygdala, conditioned stimulus, extinction, shock, skin."
    )
    abstract = "A title here. First sentence of the abstract. Second one."
    views = query_views([neuroquery, abstract, "Only a title"], seed=0)
    assert [len(v) for v in views] == [N_QUERY_VIEWS] * 3
    title, keywords, terms = views[0]
    assert title == "Fear and the amygdala"
    assert keywords == "fear, amygdala, conditioning"
    drawn = terms.split(", ")
    assert 2 <= len(drawn) <= 5 and len(set(drawn)) == len(drawn)
    assert set(drawn) <= {
        "fear",
        "amygdala",
        "conditioned stimulus",
        "extinction",
        "shock",
        "skin",
    }
    assert views[1][:2] == ["A title here", "First sentence of the abstract"]
    assert views[2] == ["Only a title"] * 3
    assert query_views([neuroquery], seed=0) == views[:1]  # seeded


def test_study_texts_prefers_real_abstracts():
    ss = make_studyset(
        {"a": [(0, 0, 0)], "b": [(0, 0, 0)]}, abstracts=["Working memory in n-back.", ""]
    )
    texts = study_texts(ss)
    assert texts["a"] == "Study a. Working memory in n-back."
    assert texts["b"] == "Study b"  # no abstract: the title


def test_study_texts_on_nimare_bundled_studyset():
    from nimare.nimads import Studyset
    from nimare.utils import get_resource_path

    ss = Studyset(f"{get_resource_path()}/nback_vs_flanker_studyset_2026-07")
    texts = study_texts(ss)
    assert len(texts) == len(ss.study_ids) == 320
    desc = ss.store.study_attrs.get("description")
    assert texts.iloc[0].endswith(" ".join(str(desc[0]).split()))
    assert texts.str.len().min() > 200  # abstracts, not just titles


def test_study_texts_rejects_studies_without_text():
    from nimare.nimads import Studyset

    ss = Studyset({"id": "x", "studies": [{"id": "s", "analyses": [{"id": "a"}]}]})
    with pytest.raises(ValueError, match="no title, abstract or text"):
        study_texts(ss)


def test_bad_return_type(tmp_path):
    with pytest.raises(ValueError, match="return_type"):
        load_neuroquery(tmp_path, return_type="frame")


@requires_data
def test_fast_path_equals_nimare_conversion(data_dir, tmp_path):
    """Our Studyset equals NiMARE's own conversion on a subset of the NeuroQuery files."""
    from nimare.io import convert_neurosynth_to_studyset

    src, dst = data_dir / "neuroquery", tmp_path / "neuroquery"
    dst.mkdir()
    meta = pd.read_table(src / _NQ_FILES["metadata"])
    keep = np.r_[0:25, 5000:5010]
    meta.iloc[keep].to_csv(dst / _NQ_FILES["metadata"], sep="\t", index=False)
    coords = pd.read_table(src / _NQ_FILES["coordinates"])
    coords = coords[coords["id"].isin(meta["id"].iloc[keep])]
    coords.loc[coords.index[0], "x"] = 130.0  # one peak outside the MNI box
    coords.to_csv(dst / _NQ_FILES["coordinates"], sep="\t", index=False)
    for key in ("abstract", "keywords"):
        sp.save_npz(dst / _NQ_FILES[key], sp.load_npz(src / _NQ_FILES[key]).tocsr()[keep])
    shutil.copy(src / _NQ_FILES["vocabulary"], dst / _NQ_FILES["vocabulary"])

    ours = load_neuroquery(tmp_path, cache_dir=tmp_path / "cache", download=False)
    theirs = convert_neurosynth_to_studyset(
        str(dst / _NQ_FILES["coordinates"]),
        str(dst / _NQ_FILES["metadata"]),
        annotations_files={
            "features": str(dst / _NQ_FILES["abstract"]),
            "vocabulary": str(dst / _NQ_FILES["vocabulary"]),
        },
    )
    assert list(ours.ids) == list(theirs.ids)
    assert list(ours.study_ids) == list(theirs.study_ids)
    cols = ["id", "study_id", "contrast_id", "x", "y", "z", "space"]
    expected = theirs.coordinates[cols]
    expected = expected[expected["x"] != 130.0].reset_index(drop=True)  # we drop it
    pd.testing.assert_frame_equal(ours.coordinates[cols].reset_index(drop=True), expected)
    for field in ("title", "authors", "journal", "year"):
        assert list(ours.get_metadata(field)) == list(theirs.get_metadata(field)), field
    ann_ours, ann_theirs = ours.annotations_df, theirs.annotations_df
    assert sorted(ann_ours.columns) == sorted(ann_theirs.columns)
    # NiMARE stores explicit zeros, which its label blocks treat as "no annotation"
    np.testing.assert_array_equal(
        ann_ours[sorted(ann_ours.columns)].iloc[:, 3:].fillna(0).to_numpy(float),
        ann_theirs[sorted(ann_theirs.columns)].iloc[:, 3:].to_numpy(float),
    )
    # same cache is reused, not rebuilt
    again = load_neuroquery(tmp_path, cache_dir=tmp_path / "cache", download=False)
    assert len(list((tmp_path / "cache").iterdir())) == 1 and len(again.ids) == 35
    # the legacy Dataset on request
    from nimare.dataset import Dataset

    dset = load_neuroquery(
        tmp_path, cache_dir=tmp_path / "cache", download=False, return_type="dataset"
    )
    assert isinstance(dset, Dataset) and sorted(dset.ids) == sorted(ours.ids)
    assert len(dset.coordinates) == len(expected)


@pytest.mark.slow
@requires_data
def test_real_neuroquery(neuroquery):
    ss = neuroquery
    assert len(ss.study_ids) >= 13000
    texts = study_texts(ss)
    assert len(texts) == len(ss.study_ids) and texts.str.strip().str.len().min() > 20
    xyz = ss.coordinates[["x", "y", "z"]].to_numpy()
    assert len(xyz) > 400_000
    assert ((xyz >= MNI_BOX[:, 0]) & (xyz <= MNI_BOX[:, 1])).all()
    labels = ss.annotations_df.columns
    assert "neuroquery7547_abstract_count__working memory" in labels


@requires_data
def test_interrupted_cache_builds_are_cleaned_up(neuroquery, data_dir, cache_dir):
    # A build killed with kill -9 leaves .neuroquery-<hash>.tmp-*; the next load removes it,
    # but not a build that another process may still be writing.
    import os
    import shutil
    import time

    from nimare_mnm import load_neuroquery

    stale = cache_dir / ".neuroquery-0123abcd.tmp-killed"
    fresh = cache_dir / ".neuroquery-0123abcd.tmp-running"
    for folder in (stale, fresh):
        folder.mkdir()
        (folder / "coordinates.parquet").write_bytes(b"partial")
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    studyset = load_neuroquery(data_dir, cache_dir=cache_dir)
    assert len(studyset.study_ids) == len(neuroquery.study_ids)
    assert not stale.exists() and fresh.exists()
    shutil.rmtree(fresh)


@requires_data
def test_real_neurosynth(data_dir, cache_dir):
    ss = load_neurosynth(data_dir, cache_dir=cache_dir, annotations=False)
    assert len(ss.study_ids) == 14371
    texts = study_texts(ss)
    assert texts.str.contains("Topics:").mean() > 0.9
    xyz = ss.coordinates[["x", "y", "z"]].to_numpy()
    assert ((xyz >= MNI_BOX[:, 0]) & (xyz <= MNI_BOX[:, 1])).all()
