"""A local web app for nimare-mnm, in the spirit of neuroquery.org.

``nimare-mnm serve`` (or :func:`serve`) loads the model once and opens a page where a query
gives its predicted map (nilearn's viewer and a glass brain), the Yeo-7 / Yeo-17 /
subcortical table, its generality and, with a data folder, the nearest studies; an uploaded
map gives its decoded terms and studies. Everything is served from this package and nilearn:
the page works offline.

Needs the ``web`` extra: ``pip install "nimare-mnm[web]"`` (Starlette, uvicorn,
python-multipart).
"""

from __future__ import annotations

import gc
import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["bind", "create_app", "make_server", "running", "serve"]

#: Longest request line (URL) the server accepts, in bytes.
MAX_REQUEST_LINE = 512 * 1024

LGR = logging.getLogger(__name__)


def _require_web_packages() -> None:
    missing = []
    for module in ("starlette", "uvicorn", "python_multipart", "jinja2"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise ImportError(
            f'The web app needs {", ".join(missing)}: pip install "nimare-mnm[web]".'
        )


def create_app(service, **kwargs):
    """Build the ASGI app around a loaded :class:`~nimare_mnm.web.service.MNMService`.

    See :func:`nimare_mnm.web.app.create_app`.
    """
    _require_web_packages()
    from nimare_mnm.web.app import create_app as _create_app

    return _create_app(service, **kwargs)


def bind(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """Open a listening TCP socket (port 0: a free port chosen by the system)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"Cannot listen on {host}:{port}: {exc.strerror or exc}.") from None
    sock.listen(128)
    return sock


def serve(
    model: str | None = None,
    data_dir: str | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    device: str = "auto",
    n_studies: int = 20,
    log_level: str = "warning",
) -> None:
    """Load the model and serve the web app until interrupted (Ctrl+C).

    Parameters
    ----------
    model : :obj:`str`, optional
        Checkpoint folder (default: the pretrained model).
    data_dir : :obj:`str`, optional
        Folder holding ``neuroquery/`` (and ``neurosynth/`` for years and journals): the
        pages then list and download studies.
    host : :obj:`str`, default="127.0.0.1"
        Address to listen on; the default serves this machine only.
    port : :obj:`int`, default=0
        Port; 0 picks a free one. The address is printed on start.
    device : :obj:`str`, default="auto"
        Where the model runs.
    n_studies : :obj:`int`, default=20
        Studies listed per query or decoded map.
    log_level : :obj:`str`, default="warning"
        uvicorn's log level (``"info"`` logs every request).
    """
    _require_web_packages()
    from nimare_mnm.web.service import MNMService

    sock = bind(host, port)
    service = MNMService.load(model, data_dir=data_dir, device=device, n_studies=n_studies)
    app = create_app(service)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{sock.getsockname()[1]}/"
    scope = (
        "this machine only"
        if host in ("127.0.0.1", "localhost", "::1")
        else "every machine that can reach this one: there is no login"
    )
    studies = f"studies from {data_dir}" if service.corpus is not None else "no studies"
    # What is alive now (the model) lives as long as the server: keep it out of the garbage
    # collector's full passes, which nilearn runs on every image it reads (over the model's
    # objects, about a second per viewer; after the freeze, milliseconds).
    gc.collect()
    gc.freeze()
    print(f"nimare-mnm serving on {url} ({scope}; {studies}). Stop with Ctrl+C.", flush=True)
    make_server(app, log_level).run(sockets=[sock])


def make_server(app, log_level: str = "warning"):
    """Return a :class:`uvicorn.Server` for ``app`` (run it with ``.run(sockets=[sock])``)."""
    import uvicorn

    config = uvicorn.Config(
        app,
        log_level=log_level,
        timeout_graceful_shutdown=2,
        # A query may be a whole abstract: allow request lines up to 512 KB (h11's default,
        # 16 KB, refuses texts of a few thousand characters once URL-encoded).
        h11_max_incomplete_event_size=MAX_REQUEST_LINE,
    )
    return uvicorn.Server(config)


@contextmanager
def running(app, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``app`` from a background thread while the block runs; yields its URL.

    For tests, benchmarks and notebooks::

        with running(create_app(MNMService.load())) as url:
            urllib.request.urlopen(url + "?q=reading")
    """
    _require_web_packages()
    sock = bind(host, port)
    server = make_server(app)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("The web server stopped while starting.")
            time.sleep(0.02)
        shown = f"[{host}]" if ":" in host else host
        yield f"http://{shown}:{sock.getsockname()[1]}/"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
