"""The web app: a page in the spirit of neuroquery.org, served locally by uvicorn.

Routes (all ``GET`` unless said otherwise):

- ``/``: the search page; ``/?q=working+memory`` is a permalink to a query's results
  (``&map=z_level-yeo7`` picks a level's map). ``POST`` with a form field ``q`` takes a text
  too long for a URL.
- ``/viewer`` and ``/glass.png``: nilearn's interactive viewer and a glass brain of a query's
  map (``q``, ``map``).
- ``/download/map.nii.gz``, ``/download/levels.tsv``, ``/download/studies.tsv`` and
  ``/download/studyset.json``: the map, the level table, the retrieved studies, and those
  studies as a NiMARE Studyset (``k`` of them, default 50) that ``ALE`` and ``MKDADensity``
  fit.
- ``/decode``: a form to upload a NIfTI map (``POST``), or ``/decode?sample=motor`` for
  nilearn's sample motor map: ranked terms and the nearest studies.
- ``/api/query``: the query's figures as JSON (what the page shows, for scripts).

Bad input (an empty or overlong query, a file that is not a 3D NIfTI map in MNI space, an
upload over :data:`MAX_UPLOAD_BYTES`, an unknown path) gets a page saying what is wrong and a
4xx status; nothing the user sends is written to disk outside a private temporary file or
used as a path.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import time
import zlib
from importlib.resources import files
from urllib.parse import urlencode

import nibabel as nib
import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from nimare_mnm import __version__
from nimare_mnm.confidence import MAX_QUERY_CHARS
from nimare_mnm.web.figures import glass_brain_png, viewer_html, warm_up
from nimare_mnm.web.service import MNMService, Prediction

LGR = logging.getLogger(__name__)

__all__ = ["MAX_UPLOAD_BYTES", "create_app", "query_summary", "read_nifti"]

#: Largest request body accepted (an uploaded map): 50 MB.
MAX_UPLOAD_BYTES = 50 * 1024 * 1024
#: Largest decompressed size of an uploaded ``.nii.gz`` (a 1 mm float64 MNI volume is ~60 MB).
MAX_NIFTI_BYTES = 512 * 1024 * 1024
#: Most studies one Studyset download holds.
MAX_STUDYSET_K = 500

LEVEL_LABELS = {"yeo7": "Yeo-7", "yeo17": "Yeo-17", "subcortical": "Subcortical"}
SIGNS = ("positive", "negative", "absolute")
# A model's answer to a query does not change while it is served: browsers may keep figures.
_CACHE = {"cache-control": "private, max-age=3600"}

# Content-Security-Policy: everything comes from this server (nilearn's viewer inlines its
# scripts and images); no CDN, no outside request.
_SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self' 'unsafe-inline'; "
        b"style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'self'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


class UploadTooLarge(Exception):
    """A request body over the limit."""


class _Guard:
    """ASGI middleware: caps the request body, adds security and Server-Timing headers."""

    def __init__(self, app, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            response = _error_page(
                413, f"The upload is larger than {self.max_body // 2**20} MB: too large."
            )
            await response(scope, receive, send)
            return
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise UploadTooLarge
            return message

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.extend(_SECURITY_HEADERS)
                ms = 1000 * (time.perf_counter() - start)
                headers.append((b"server-timing", f"app;dur={ms:.1f}".encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, limited_receive, send_with_headers)


_ENV = Environment(
    loader=PackageLoader("nimare_mnm.web", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _page(template: str, status: int = 200, **context) -> HTMLResponse:
    context.setdefault("version", __version__)
    return HTMLResponse(_ENV.get_template(template).render(**context), status_code=status)


def _error_page(status: int, message: str, **context) -> HTMLResponse:
    return _page("error.html", status=status, status_code=status, message=message, **context)


# --------------------------------------------------------------------------- helpers
def read_nifti(data: bytes, filename: str = "the file") -> nib.Nifti1Image:
    """Read an uploaded ``.nii`` or ``.nii.gz`` from memory.

    Raises
    ------
    ValueError
        An empty file, a file that is not a NIfTI-1/2 image, or one that decompresses to
        more than :data:`MAX_NIFTI_BYTES`.
    """
    if not data:
        raise ValueError(f"{filename} is empty.")
    raw = data
    if data[:2] == b"\x1f\x8b":  # gzip
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            raw = inflater.decompress(data, MAX_NIFTI_BYTES)
        except zlib.error as exc:
            raise ValueError(f"{filename} is a damaged gzip file: {exc}") from None
        if inflater.unconsumed_tail:
            raise ValueError(
                f"{filename} decompresses to more than {MAX_NIFTI_BYTES // 2**20} MB."
            )
    for kind in (nib.Nifti1Image, nib.Nifti2Image):
        try:
            img = kind.from_bytes(raw)
            np.asanyarray(img.dataobj)  # the data must be all there
            return img
        except Exception:  # noqa: BLE001 - nibabel raises many types for a bad header
            continue
    raise ValueError(
        f"{filename} is not a NIfTI image: upload a statistical map as .nii or .nii.gz."
    )


def _round(value, digits: int = 4):
    value = float(value)
    return round(value, digits) if math.isfinite(value) else None


def query_summary(prediction: Prediction) -> dict:
    """Return what the page shows for a query, as JSON-ready Python objects."""
    info = prediction.query
    levels = prediction.levels
    out = {
        "query": prediction.text,
        "radius": _round(info["radius"]),
        "generality": _round(info["generality"]),
        "confidence": _round(info["confidence"]),
        "terms": str(info["terms"]),
        "levels": [
            {
                "level": row.level,
                "region": row.region,
                "mean_z": _round(row.mean_z),
                "peak_z": _round(row.peak_z),
                "rank": int(row.rank),
            }
            for row in levels.itertuples(index=False)
        ],
        "studies": None,
    }
    if prediction.studies is not None:
        out["studies"] = _records(prediction.studies)
    return out


def _records(table: pd.DataFrame) -> list[dict]:
    rows = []
    for sid, row in table.iterrows():
        record = {"id": str(sid)}
        for key, value in row.items():
            record[key] = _round(value) if isinstance(value, (float, np.floating)) else value
            if isinstance(value, np.integer):
                record[key] = int(value)
        rows.append(record)
    return rows


def _level_tables(prediction: Prediction, levels) -> list[dict]:
    table = prediction.levels
    out = []
    for level in levels:
        rows = table[table["level"] == level].sort_values("rank")
        out.append({"name": level, "label": LEVEL_LABELS.get(level, level), "rows": rows})
    return out


def _json_safe(value):
    """Replace NaN and infinities (which JSON cannot hold) by None, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return _json_safe(value.item())
    return value


def _stem(text: str) -> str:
    keep = "".join(c if c.isalnum() else "_" for c in text.lower())[:40].strip("_")
    return "_".join(filter(None, keep.split("_"))) or "query"


def _download(content: bytes | str, filename: str, media_type: str) -> Response:
    return Response(
        content,
        media_type=media_type,
        headers={"content-disposition": f'attachment; filename="{filename}"'},
    )


# --------------------------------------------------------------------------- the app
def create_app(service: MNMService, max_upload_bytes: int = MAX_UPLOAD_BYTES):
    """Build the ASGI application around a loaded model.

    Parameters
    ----------
    service : :class:`~nimare_mnm.web.service.MNMService`
        The model (and studies) every request shares.
    max_upload_bytes : :obj:`int`, default=:data:`MAX_UPLOAD_BYTES`
        Largest request body accepted.

    Returns
    -------
    ASGI application
        Serve it with ``uvicorn.run(app, host="127.0.0.1", port=...)`` or call
        :func:`nimare_mnm.web.serve`.
    """
    warm_up()
    levels = [level.name for level in service.encoder.levels_]
    map_names = ["z"] + [f"z_level-{name}" for name in levels]
    map_labels = {"z": "Whole brain"} | {
        f"z_level-{name}": LEVEL_LABELS.get(name, name) for name in levels
    }
    common = {
        "has_corpus": service.corpus is not None,
        "n_studies": service.n_studies,
        "map_names": map_names,
        "map_labels": map_labels,
        "preset": service.encoder.preset,
        "n_training": len(getattr(service.encoder, "study_ids_", ())),
    }

    def link(path: str, **params) -> str:
        return f"{path}?{urlencode({k: v for k, v in params.items() if v is not None})}"

    async def _prediction(request: Request, text: str | None = None) -> Prediction:
        """Predict the query (``?q=`` by default) off the event loop; 400 on a bad query."""
        if text is None:
            text = request.query_params.get("q", "")
        try:
            text = MNMService.check_query(text)
        except ValueError as exc:
            raise _BadInput(str(exc), query=text[:200]) from None
        return await run_in_threadpool(service.predict, text)

    def _map_name(request: Request) -> str:
        name = request.query_params.get("map", "z")
        if name not in map_names:
            raise _BadInput(
                f"Unknown map {name[:50]!r}: choose one of {', '.join(map_names)}.", status=404
            )
        return name

    async def home(request: Request) -> Response:
        text = None
        if request.method == "POST":
            # Texts too long for a URL (a whole abstract) may be posted as a form.
            try:
                form = await request.form(max_files=0, max_fields=4)
            except Exception as exc:  # noqa: BLE001 - Starlette's errors for bad form bodies
                raise _BadInput(
                    f"Could not read the query ({exc}): at most {MAX_QUERY_CHARS:,} characters "
                    "are accepted."
                ) from None
            text = str(form.get("q", ""))
        elif "q" not in request.query_params:
            return _page("index.html", **common, query="", prediction=None)
        map_name = _map_name(request)
        prediction = await _prediction(request, text)
        q = prediction.text
        return _page(
            "index.html",
            **common,
            query=q,
            prediction=prediction,
            info=prediction.query,
            level_tables=_level_tables(prediction, levels),
            map_name=map_name,
            map_links={name: link("/", q=q, map=name) for name in map_names},
            viewer_url=link("/viewer", q=q, map=map_name),
            glass_url=link("/glass.png", q=q, map=map_name),
            downloads={
                "map": link("/download/map.nii.gz", q=q, map=map_name),
                "levels": link("/download/levels.tsv", q=q),
                "studies": link("/download/studies.tsv", q=q),
                "studyset": link("/download/studyset.json", q=q, k=50),
            },
            permalink=link("/", q=q),
        )

    async def viewer(request: Request) -> Response:
        name = _map_name(request)
        prediction = await _prediction(request)
        html = await run_in_threadpool(viewer_html, prediction.result.get_map(name))
        return HTMLResponse(html, headers=_CACHE)

    async def glass(request: Request) -> Response:
        name = _map_name(request)
        prediction = await _prediction(request)
        png = await run_in_threadpool(glass_brain_png, prediction.result.get_map(name))
        return Response(png, media_type="image/png", headers=_CACHE)

    async def download_map(request: Request) -> Response:
        name = _map_name(request)
        prediction = await _prediction(request)
        img = prediction.result.get_map(name)
        data = gzip_nifti(img)
        return _download(data, f"{_stem(prediction.text)}_{name}.nii.gz", "application/gzip")

    async def download_levels(request: Request) -> Response:
        prediction = await _prediction(request)
        tsv = prediction.levels.to_csv(sep="\t", index=False)
        return _download(tsv, f"{_stem(prediction.text)}_levels.tsv", "text/tab-separated-values")

    def _need_corpus() -> None:
        if service.corpus is None:
            raise _BadInput(
                "No studies are loaded: start the app with --data-dir (the folder holding "
                "neuroquery/) to list and download studies.",
                status=404,
            )

    async def download_studies(request: Request) -> Response:
        _need_corpus()
        prediction = await _prediction(request)
        tsv = prediction.studies.to_csv(sep="\t")
        return _download(tsv, f"{_stem(prediction.text)}_studies.tsv", "text/tab-separated-values")

    async def download_studyset(request: Request) -> Response:
        _need_corpus()
        raw_k = request.query_params.get("k", "50")
        if not raw_k.isdigit() or not 1 <= int(raw_k) <= MAX_STUDYSET_K:
            raise _BadInput(f"k must be a whole number from 1 to {MAX_STUDYSET_K}.")
        prediction = await _prediction(request)
        studyset = await run_in_threadpool(service.retrieve, prediction.text, int(raw_k))
        body = json.dumps(_json_safe(studyset.to_dict()), allow_nan=False)
        name = f"{_stem(prediction.text)}_top{raw_k}_studyset.json"
        return _download(body, name, "application/json")

    async def api_query(request: Request) -> Response:
        try:
            prediction = await _prediction(request)
        except _BadInput as exc:
            return JSONResponse({"error": exc.message}, status_code=exc.status)
        return JSONResponse(query_summary(prediction))

    async def decode(request: Request) -> Response:
        if request.method == "GET":
            if request.query_params.get("sample") == "motor":
                from nilearn.datasets import load_sample_motor_activation_image

                img = load_sample_motor_activation_image()
                return await _decoded(img, "nilearn's sample motor activation map", "positive")
            if "sample" in request.query_params:
                raise _BadInput("Unknown sample map: the one sample is ?sample=motor.")
            return _page("decode.html", **common, decoding=None)
        try:
            form = await request.form(max_files=1, max_fields=4)
        except UploadTooLarge:
            raise
        except Exception as exc:  # noqa: BLE001 - python-multipart's errors for bad bodies
            raise _BadInput(f"Could not read the upload: {exc}", page="decode.html") from None
        upload = form.get("map")
        sign = str(form.get("sign", "positive"))
        if sign not in SIGNS:
            raise _BadInput(f"sign must be one of {', '.join(SIGNS)}.", page="decode.html")
        if not isinstance(upload, UploadFile) or not upload.filename:
            raise _BadInput("Choose a NIfTI file (.nii or .nii.gz) to upload.", page="decode.html")
        data = await upload.read()
        await upload.close()
        name = upload.filename[:100]
        try:
            img = read_nifti(data, name)
        except ValueError as exc:
            raise _BadInput(str(exc), page="decode.html") from None
        return await _decoded(img, name, sign)

    async def _decoded(img, name: str, sign: str) -> Response:
        try:
            decoding = await run_in_threadpool(service.decode, img, sign)
        except (ValueError, TypeError) as exc:
            raise _BadInput(f"{name}: {exc}", page="decode.html") from None
        from nimare_mnm.decoder import load_brain_image

        # The map as decoded (on the MNI152 2 mm mask), for the picture.
        values = await run_in_threadpool(load_brain_image, img)
        shown = service.encoder.masker_.inverse_transform(values)
        png = await run_in_threadpool(glass_brain_png, shown, _display_threshold(values))
        terms = decoding.terms.head(30)
        tsv = decoding.terms.to_csv(sep="\t")
        return _page(
            "decode.html",
            **common,
            decoding=decoding,
            name=name,
            sign=sign,
            terms=terms,
            glass_png=base64.b64encode(png).decode(),
            terms_tsv=base64.b64encode(tsv.encode()).decode(),
            studies_tsv=(
                None
                if decoding.studies is None
                else base64.b64encode(decoding.studies.to_csv(sep="\t").encode()).decode()
            ),
        )

    async def not_found(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 404:
            return _error_page(404, f"Nothing here: {request.url.path[:100]!r} is not a page.")
        if exc.status_code == 405:
            return _error_page(405, f"{request.method} is not accepted on this page.")
        return _error_page(exc.status_code, str(exc.detail))

    async def bad_input(request: Request, exc: _BadInput) -> Response:
        if exc.page is not None:
            return _page(exc.page, status=exc.status, **common, error=exc.message, decoding=None)
        if exc.query is not None or request.url.path == "/":
            return _page(
                "index.html",
                status=exc.status,
                **common,
                query=exc.query or "",
                prediction=None,
                error=exc.message,
            )
        return _error_page(exc.status, exc.message)

    async def too_large(request: Request, exc: UploadTooLarge) -> Response:
        return _error_page(413, f"The upload is larger than {max_upload_bytes // 2**20} MB.")

    async def server_error(request: Request, exc: Exception) -> Response:
        LGR.exception("Error while serving %s", request.url.path)
        return _error_page(500, "Something went wrong on the server; the log says what.")

    static = StaticFiles(directory=str(files("nimare_mnm.web") / "static"))
    app = Starlette(
        routes=[
            Route("/", home, methods=["GET", "POST"]),
            Route("/viewer", viewer),
            Route("/glass.png", glass),
            Route("/download/map.nii.gz", download_map),
            Route("/download/levels.tsv", download_levels),
            Route("/download/studies.tsv", download_studies),
            Route("/download/studyset.json", download_studyset),
            Route("/decode", decode, methods=["GET", "POST"]),
            Route("/api/query", api_query),
            Mount("/static", app=static, name="static"),
        ],
        exception_handlers={
            HTTPException: not_found,
            _BadInput: bad_input,
            UploadTooLarge: too_large,
            Exception: server_error,
        },
    )
    app.state.service = service
    return _Guard(app, max_upload_bytes)


class _BadInput(Exception):
    """Bad user input: shown on ``page`` (or the error page) with a 4xx status."""

    def __init__(
        self, message: str, status: int = 400, page: str | None = None, query: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.page = page
        self.query = query


def gzip_nifti(img: nib.Nifti1Image) -> bytes:
    """Return a NIfTI image as ``.nii.gz`` bytes, written in memory."""
    import gzip

    return gzip.compress(img.to_bytes(), compresslevel=6)


def _display_threshold(values: np.ndarray) -> float:
    """Return a glass-brain threshold for any map: its 95th percentile of |value|."""
    nonzero = np.abs(values[values != 0])
    return float(np.percentile(nonzero, 95)) if nonzero.size else 0.0
