"""The web app's routes, through an in-process client (no server, no browser)."""

import gzip
import io
import json
import logging

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

pytest.importorskip("starlette", reason="the web extra is not installed")
from starlette.testclient import TestClient  # noqa: E402

from nimare_mnm.web import create_app  # noqa: E402
from nimare_mnm.web.app import query_summary, read_nifti  # noqa: E402
from nimare_mnm.web.service import MNMService  # noqa: E402

QUERY = "working memory"


@pytest.fixture(scope="module")
def service(pretrained_decoder):
    return MNMService(pretrained_decoder)


@pytest.fixture(scope="module")
def client(service):
    return TestClient(create_app(service), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def motor_bytes():
    from nilearn.datasets import load_sample_motor_activation_image

    img = nib.load(load_sample_motor_activation_image())
    return img, gzip.compress(img.to_bytes())


def _error(response) -> str:
    """The message of the page's error box."""
    text = response.text
    start = text.index('id="error"')
    return text[text.index(">", start) + 1 : text.index("</p>", start)]


def _no_traceback(response) -> None:
    assert response.status_code < 500, response.text[:500]
    assert "Traceback" not in response.text
    assert 'File "' not in response.text


# --------------------------------------------------------------------------- queries
def test_home_page_offers_the_search_and_says_no_studies_are_loaded(client):
    page = client.get("/")
    assert page.status_code == 200
    assert '<input id="q" name="q"' in page.text
    assert "/decode" in page.text
    # Every asset comes from this server: no CDN, no outside script or style.
    assert "http://" not in page.text.replace("https://pubmed", "")
    assert 'src="http' not in page.text and 'href="http' not in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]


def test_query_page_shows_the_model_s_own_answer(client, pretrained_decoder):
    expected = pretrained_decoder.encoder_.transform(QUERY)
    page = client.get("/", params={"q": QUERY})
    assert page.status_code == 200
    html = page.text
    assert f"{expected.tables['query']['generality'].iloc[0]:.3f}" in html
    levels = expected.tables["levels"]
    for level in ("yeo7", "yeo17", "subcortical"):
        rows = levels[levels["level"] == level].sort_values("rank")
        block = html[html.index(f'data-level="{level}"') :]
        block = block[: block.index("</table>")]
        assert block.count("<tr>") == len(rows) + 1  # header + one row per region
        # The strongest region comes first, with its mean z.
        first = block[block.index("<tbody>") :]
        assert f"<td>1</td><td>{rows['region'].iloc[0]}</td>" in first
    assert 'id="viewer" src="/viewer?q=working+memory&amp;map=z"' in html
    assert 'href="/?q=working+memory"' in html  # the permalink
    assert "No studies listed" in html


def test_level_maps_are_selectable(client):
    page = client.get("/", params={"q": QUERY, "map": "z_level-yeo17"})
    assert page.status_code == 200
    assert 'class="current" aria-current="page">Yeo-17<' in page.text
    assert "map=z_level-yeo17" in page.text
    bad = client.get("/", params={"q": QUERY, "map": "../../etc/passwd"})
    assert bad.status_code == 404
    assert "Unknown map" in _error(bad)


def test_viewer_is_nilearn_s_self_contained_viewer(client):
    page = client.get("/viewer", params={"q": QUERY, "map": "z_level-yeo7"})
    assert page.status_code == 200
    assert "brainsprite" in page.text.lower()
    assert "<script src=" not in page.text  # nilearn inlines its JavaScript: works offline
    png = client.get("/glass.png", params={"q": QUERY})
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content[:8] == b"\x89PNG\r\n\x1a\n"


def test_downloads_equal_the_python_api(client, pretrained_decoder):
    expected = pretrained_decoder.encoder_.transform(QUERY)
    for name in ("z", "z_level-yeo7"):
        response = client.get("/download/map.nii.gz", params={"q": QUERY, "map": name})
        assert response.status_code == 200
        assert (
            f'filename="working_memory_{name}.nii.gz"' in response.headers["content-disposition"]
        )
        img = nib.Nifti1Image.from_bytes(gzip.decompress(response.content))
        np.testing.assert_allclose(img.get_fdata(), expected.get_map(name).get_fdata())
    tsv = client.get("/download/levels.tsv", params={"q": QUERY})
    table = pd.read_csv(io.StringIO(tsv.text), sep="\t")
    pd.testing.assert_frame_equal(table, expected.tables["levels"].reset_index(drop=True))
    # Studies need the corpus: a clear 404, not a crash.
    missing = client.get("/download/studyset.json", params={"q": QUERY})
    assert missing.status_code == 404
    assert "--data-dir" in _error(missing)


def test_api_query_is_the_page_s_figures(client, service):
    response = client.get("/api/query", params={"q": "fear extinction"})
    assert response.status_code == 200
    expected = query_summary(service.predict("fear extinction"))
    assert response.json() == json.loads(json.dumps(expected))
    assert client.get("/api/query", params={"q": " "}).json() == {
        "error": "Type a query: the text is empty."
    }


def test_long_texts_may_be_posted(client, pretrained_decoder):
    abstract = "Participants held letters in working memory while we recorded fMRI. " * 40
    page = client.post("/", data={"q": abstract})
    assert page.status_code == 200
    expected = pretrained_decoder.encoder_.transform(abstract).tables["query"]
    assert f"{expected['generality'].iloc[0]:.3f}" in page.text


def test_query_text_is_escaped(client):
    page = client.get("/", params={"q": "<script>alert(1)</script>"})
    assert page.status_code == 200
    assert "<script>alert(1)</script>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text


@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        ({"q": ""}, 400, "the text is empty"),
        ({"q": "   "}, 400, "the text is empty"),
        ({"q": "a" * 30_000}, 400, "at most 20,000"),
    ],
)
def test_bad_queries_get_a_message_and_a_4xx(client, params, status, message):
    page = client.get("/", params=params)
    assert page.status_code == status
    assert message in _error(page)
    _no_traceback(page)


def test_a_10_mb_query_is_refused_before_the_model(client, service):
    calls = []
    original = service.encoder.transform
    service.encoder.transform = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        page = client.post("/", data={"q": "memory " * (10 * 2**20 // 7)})
    finally:
        del service.encoder.transform
    assert page.status_code == 400 and calls == []
    assert "at most 20,000 characters" in _error(page)


def test_unknown_paths_and_methods(client):
    for path in ("/nope", "/static/../app.py", "/download/secret.txt"):
        page = client.get(path)
        assert page.status_code == 404, path
        _no_traceback(page)
    assert client.put("/", data={"q": QUERY}).status_code == 405
    assert client.get("/viewer/extra").status_code == 404
    bad_k = client.get("/download/studyset.json", params={"q": QUERY, "k": "0"})
    assert bad_k.status_code in (400, 404)


def test_per_query_work_logs_nothing_at_info(pretrained_decoder, caplog):
    with caplog.at_level(logging.INFO, logger="nimare_mnm"):
        pretrained_decoder.encoder_.transform("visual word form area")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO] == []


# --------------------------------------------------------------------------- maps
def test_uploaded_map_is_decoded_as_the_decoder_does(client, pretrained_decoder, motor_bytes):
    img, data = motor_bytes
    page = client.post("/decode", files={"map": ("motor.nii.gz", data)})
    assert page.status_code == 200
    expected = pretrained_decoder.transform(img).head(30).index
    rows = page.text[page.text.index('id="terms"') :]
    found = [t for t in expected if f">{t}</a></td>" in rows]
    assert found == list(expected)
    assert rows.index(f">{expected[0]}<") < rows.index(f">{expected[1]}<")
    assert 'src="data:image/png;base64,' in page.text
    sample = client.get("/decode", params={"sample": "motor"})
    assert sample.status_code == 200 and f">{expected[0]}</a></td>" in sample.text
    negative = client.post(
        "/decode", files={"map": ("motor.nii.gz", data)}, data={"sign": "negative"}
    )
    top_negative = pretrained_decoder.transform(img, sign="negative").index[0]
    assert f">{top_negative}</a></td>" in negative.text


def _upload(client, name, data):
    return client.post("/decode", files={"map": (name, data)})


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        ("notes.nii.gz", lambda: b"this is not an image", "is not a NIfTI image"),
        ("empty.nii", lambda: b"", "is empty"),
        ("broken.nii.gz", lambda: b"\x1f\x8b" + b"\x00" * 40, "damaged gzip"),
        (
            "series.nii",
            lambda: nib.Nifti1Image(np.ones((4, 4, 4, 3), np.float32), np.eye(4)).to_bytes(),
            "3D",
        ),
        (
            "nan.nii",
            lambda: nib.Nifti1Image(
                np.full((91, 109, 91), np.nan, np.float32),
                np.array([[-2, 0, 0, 90], [0, 2, 0, -126], [0, 0, 2, -72], [0, 0, 0, 1.0]]),
            ).to_bytes(),
            "data (non-NaN values) on only",
        ),
        (
            "native_space.nii",
            lambda: nib.Nifti1Image(
                np.ones((64, 64, 30), np.float32), np.diag([3.0, 3.0, 4.0, 1.0])
            ).to_bytes(),
            "MNI",
        ),
    ],
)
def test_bad_uploads_get_a_message_and_a_400(client, name, make, message):
    page = _upload(client, name, make())
    assert page.status_code == 400
    assert message in _error(page)
    assert name in _error(page) or "empty" in message
    _no_traceback(page)


def test_upload_without_a_file_or_with_a_bad_sign(client, motor_bytes):
    assert client.post("/decode", data={"sign": "positive"}).status_code == 400
    page = client.post(
        "/decode", files={"map": ("m.nii.gz", motor_bytes[1])}, data={"sign": "sideways"}
    )
    assert page.status_code == 400 and "sign must be one of" in _error(page)


def test_upload_over_the_limit_is_refused(service, motor_bytes):
    app = create_app(service, max_upload_bytes=100_000)
    small = TestClient(app, raise_server_exceptions=False)
    page = _upload(small, "motor.nii.gz", motor_bytes[1] + b"\x00" * 200_000)
    assert page.status_code == 413
    assert "larger than" in _error(page)

    def chunks():  # no Content-Length: the body is counted as it arrives
        for _ in range(30):
            yield b"x" * 10_000

    streamed = small.post(
        "/decode", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"}
    )
    assert streamed.status_code == 413
    # The default limit is 50 MB.
    default = TestClient(create_app(service), raise_server_exceptions=False)
    huge = default.post(
        "/decode",
        content=b"x" * (50 * 2**20 + 1),
        headers={"content-type": "multipart/form-data; boundary=b"},
    )
    assert huge.status_code == 413


def test_read_nifti_reads_both_compressions(motor_bytes):
    img, data = motor_bytes
    for raw in (data, img.to_bytes()):
        np.testing.assert_array_equal(read_nifti(raw).get_fdata(), img.get_fdata())


def test_unfitted_decoder_is_refused():
    from sklearn.exceptions import NotFittedError

    from nimare_mnm import MNMDecoder

    with pytest.raises(NotFittedError, match="fitted MNMDecoder"):
        MNMService(MNMDecoder())


# --------------------------------------------------------------------------- with studies
@pytest.mark.realdata
def test_with_studies_the_page_lists_and_downloads_them(pretrained_decoder, data_dir):
    from nimare.meta.cbma import ALE
    from nimare.nimads import Studyset

    from nimare_mnm.datasets import load_neuroquery
    from nimare_mnm.web.service import neurosynth_metadata, study_table

    corpus = load_neuroquery(data_dir, annotations=False, download=False)
    info = study_table(corpus, neurosynth_metadata(data_dir))
    service = MNMService(pretrained_decoder, corpus=corpus, study_info=info, n_studies=10)
    client = TestClient(create_app(service), raise_server_exceptions=False)

    scores = pretrained_decoder.encoder_.retrieval_scores(QUERY).iloc[:, 0]
    best = scores.sort_values(ascending=False, kind="stable").index[:10]
    page = client.get("/", params={"q": QUERY})
    assert page.status_code == 200
    rows = page.text[page.text.index('id="studies"') :]
    assert rows.count('<tr class="study">') == 10
    for sid in best:
        assert f'href="https://pubmed.ncbi.nlm.nih.gov/{sid}/"' in rows
    assert rows.index(f"/{best[0]}/") < rows.index(f"/{best[9]}/")
    # Years and journals come from Neurosynth's metadata where NeuroQuery has none.
    assert info.loc[info["year"] != "", "year"].str.fullmatch(r"\d{4}").all()
    assert (info["journal"] != "").mean() > 0.5

    tsv = pd.read_csv(
        io.StringIO(client.get("/download/studies.tsv", params={"q": QUERY}).text),
        sep="\t",
        dtype={"id": str},
    )
    assert list(tsv["id"]) == list(best)

    response = client.get("/download/studyset.json", params={"q": QUERY, "k": 12})
    assert response.status_code == 200
    studyset = Studyset(json.loads(response.content))
    assert sorted(map(str, studyset.study_ids)) == sorted(scores.nlargest(12).index)
    assert ALE(kernel__fwhm=10).fit(studyset).get_map("z").shape == (91, 109, 91)

    decoded = client.get("/decode", params={"sample": "motor"})
    assert decoded.text.count('<tr class="study">') == 10


# --------------------------------------------------------------------------- the command
@pytest.mark.slow
def test_serve_command_prints_its_address_and_answers(tmp_path):
    import os
    import subprocess
    import sys
    import urllib.request

    env = {**os.environ, "NIMARE_MNM_DATA": ""}  # no studies: the pretrained model alone
    server = subprocess.Popen(
        [sys.executable, "-m", "nimare_mnm.cli", "--quiet", "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = server.stdout.readline()
        assert "nimare-mnm serving on http://127.0.0.1:" in line, server.stderr.read()
        assert "this machine only" in line and "no studies" in line
        url = line.split("serving on ")[1].split()[0]
        with urllib.request.urlopen(url + "?q=reading", timeout=60) as response:
            page = response.read().decode()
        assert response.status == 200 and "<h1>reading</h1>" in page
        with urllib.request.urlopen(url + "viewer?q=reading", timeout=60) as response:
            assert "brainsprite" in response.read().decode().lower()
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_serve_refuses_a_port_in_use():
    from nimare_mnm.web import bind

    taken = bind("127.0.0.1", 0)
    try:
        with pytest.raises(OSError, match="Cannot listen on 127.0.0.1:"):
            bind("127.0.0.1", taken.getsockname()[1])
    finally:
        taken.close()
