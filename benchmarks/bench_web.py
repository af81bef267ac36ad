"""Load test of ``nimare-mnm serve`` against 127.0.0.1: latency, concurrency, bad input.

Starts the real command (``nimare-mnm --quiet serve --port 0``, the pretrained model, and with
``--data-dir`` the NeuroQuery studies) as a subprocess and measures, on queries the server has
not seen (so its cache does not answer):

- sequential latency of the results page (``/?q=``), its viewer (``/viewer``) and glass brain
  (``/glass.png``), from the app's ``Server-Timing`` header (server side) and the client;
- 20 concurrent ``/api/query`` requests released together, each compared with the same
  query's answer computed in this process by the library (``MNMService`` +
  ``query_summary``): an answer mixed up between requests or a failed request counts as an
  error; then 20 concurrent result pages;
- the status of bad requests (empty query, a 10 MB query, a non-NIfTI upload, a 51 MB upload,
  an unknown path): all must be 4xx.

Writes ``benchmarks/results/web.json`` with the commit, date and machine it ran at::

    python benchmarks/bench_web.py --data-dir ../shared/data
"""

import argparse
import json
import math
import os
import re
import select
import shutil
import socket
import statistics
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_MS = 300
N_CONCURRENT = 20

QUERIES = [
    "working memory", "fear extinction", "reading words", "finger tapping", "face recognition",
    "reward anticipation", "pain perception", "auditory cortex tonal processing",
    "spatial navigation", "language comprehension", "episodic memory retrieval",
    "response inhibition", "visual motion", "saccadic eye movements", "mental arithmetic",
    "social cognition theory of mind", "emotion regulation", "motor imagery",
    "semantic memory", "attention shifting", "default mode network", "decision making under risk",
    "speech production", "music listening", "olfactory stimulation", "taste", "addiction craving",
    "depression", "schizophrenia hallucinations", "autism", "sleep deprivation", "self reference",
    "empathy for pain", "visual word form", "object recognition", "color perception",
    "somatosensory stimulation of the hand", "conflict monitoring", "error processing",
    "reinforcement learning prediction error", "numerical cognition", "mind wandering",
    "interoception heartbeat", "visual imagery", "verb generation", "sentence processing",
    "syntax", "phonological processing", "action observation mirror neurons", "tool use",
    "body perception", "biological motion", "moral judgment", "risk taking adolescents",
    "aging and memory", "bilingualism", "motor sequence learning", "anxiety", "thirst",
    "loss aversion",
]  # fmt: skip


def _get(url: str, timeout: float = 120.0) -> tuple[int, bytes, dict, float]:
    """GET ``url``: status, body, headers and client-side seconds (4xx/5xx included)."""
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = response.read()
            status, headers = response.status, dict(response.headers)
    except urllib.error.HTTPError as exc:
        body, status, headers = exc.read(), exc.code, dict(exc.headers)
    return status, body, headers, time.perf_counter() - start


def _post(url: str, body: bytes, content_type: str) -> int:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (ConnectionError, urllib.error.URLError):
        return -1  # the server closed the connection before reading the whole body


def _raw(url: str, head: bytes, body: bytes = b"") -> int | str:
    """Send a request in 64 KB pieces, stopping as soon as the server answers; its status.

    A server may answer (413, 431...) before an oversized request is fully sent and then close
    the connection; ``urllib`` would report only the reset, so this reads the answer first.
    """
    parts = urllib.parse.urlsplit(url)
    data = head + body
    with socket.create_connection((parts.hostname, parts.port), timeout=60) as sock:
        for start in range(0, len(data), 65536):
            if select.select([sock], [], [], 0)[0]:
                break  # the server has answered
            try:
                sock.sendall(data[start : start + 65536])
            except OSError:
                break
        try:
            sock.settimeout(30)
            reply = sock.recv(4096)
        except OSError:
            return "connection reset before an answer"
    match = re.match(rb"HTTP/1\.[01] (\d{3})", reply)
    return int(match.group(1)) if match else "connection closed without an answer"


def _multipart(name: str, data: bytes) -> tuple[bytes, str]:
    boundary = "nimaremnmboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="map"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def _upload_request(host: str, data: bytes) -> tuple[bytes, bytes]:
    body, content_type = _multipart("big.nii", data)
    head = (
        f"POST /decode HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head, body


def _form_request(host: str, fields: dict) -> tuple[bytes, bytes]:
    body = urllib.parse.urlencode(fields).encode()
    head = (
        f"POST / HTTP/1.1\r\nHost: {host}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head, body


def _server_ms(headers: dict) -> float:
    timing = headers.get("server-timing") or headers.get("Server-Timing") or ""
    match = re.search(r"dur=([0-9.]+)", timing)
    return float(match.group(1)) if match else math.nan


def _stats(values: list[float]) -> dict:
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "median": round(statistics.median(ordered), 1),
        "p95": round(ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)], 1),
        "max": round(ordered[-1], 1),
    }


def _close(a, b, tol: float = 1e-3) -> bool:
    """Equal JSON answers, numbers to ``tol``."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], tol) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y, tol) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and abs(a - b) <= tol
    return a == b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get("NIMARE_MNM_DATA"))
    parser.add_argument("--out", default=str(RESULTS / "web.json"))
    args = parser.parse_args()

    from nimare_mnm.experiments.provenance import provenance
    from nimare_mnm.web.app import query_summary
    from nimare_mnm.web.service import MNMService

    started = provenance()
    command = shutil.which("nimare-mnm")
    if command is None:
        raise SystemExit("The nimare-mnm console script is not installed (pip install -e .).")
    argv = [command, "--quiet", "serve", "--port", "0"]
    if args.data_dir:
        argv += ["--data-dir", args.data_dir]
    n_seq = len(QUERIES) - 2 * N_CONCURRENT
    sequential, concurrent_api, concurrent_pages = (
        QUERIES[:n_seq],
        QUERIES[n_seq : n_seq + N_CONCURRENT],
        QUERIES[n_seq + N_CONCURRENT :],
    )

    # The library's own answers, for the correctness check.
    service = MNMService.load(data_dir=args.data_dir, device="cpu")
    expected = {q: query_summary(service.predict(q)) for q in concurrent_api + concurrent_pages}
    del service

    t0 = time.perf_counter()
    server = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        match = re.search(r"(http://\S+/)", line)
        if not match:
            raise SystemExit(f"The server did not start: {line}{server.stderr.read()}")
        url = match.group(1)
        host = urllib.parse.urlsplit(url).netloc
        startup = time.perf_counter() - t0
        _get(url + "?q=warm+up")
        _get(url + "viewer?q=warm+up")
        _get(url + "glass.png?q=warm+up")

        # Sequential, unseen queries.
        timings = {"page": ([], []), "viewer": ([], []), "glass": ([], [])}
        for q in sequential:
            quoted = urllib.parse.quote_plus(q)
            for key, path in (
                ("page", f"?q={quoted}"),
                ("viewer", f"viewer?q={quoted}"),
                ("glass", f"glass.png?q={quoted}"),
            ):
                status, _, headers, seconds = _get(url + path)
                if status != 200:
                    raise SystemExit(f"{path} answered {status}")
                timings[key][0].append(_server_ms(headers))
                timings[key][1].append(1000 * seconds)

        # Concurrent: released together by a barrier.
        def burst(queries, path, check):
            barrier = threading.Barrier(len(queries))

            def one(q):
                barrier.wait()
                status, body, headers, seconds = _get(
                    url + path + urllib.parse.quote_plus(q), timeout=300
                )
                return q, status, body, 1000 * seconds, _server_ms(headers)

            wall = time.perf_counter()
            with ThreadPoolExecutor(len(queries)) as pool:
                answers = list(pool.map(one, queries))
            wall = time.perf_counter() - wall
            failed = sum(status != 200 for _, status, *_ in answers)
            wrong = sum(status == 200 and not check(q, body) for q, status, body, *_ in answers)
            return {
                "requests": len(queries),
                "wall_seconds": round(wall, 2),
                "failed": failed,
                "wrong_answers": failed + wrong,
                "client_ms": _stats([a[3] for a in answers]),
                "server_ms": _stats([a[4] for a in answers]),
            }

        def api_ok(q, body):
            return _close(json.loads(body), json.loads(json.dumps(expected[q])))

        def page_ok(q, body):
            html = body.decode()
            summary = expected[q]
            yeo7 = [r for r in summary["levels"] if r["level"] == "yeo7"]
            top = min(yeo7, key=lambda r: r["rank"])["region"]
            return (
                f"<h1>{q}</h1>" in html
                and f"{summary['generality']:.3f}" in html
                and f"<td>1</td><td>{top}</td>" in html
            )

        api = burst(concurrent_api, "api/query?q=", api_ok)
        pages = burst(concurrent_pages, "?q=", page_ok)

        # Bad requests against the real server.
        big_query = "memory " * (10 * 2**20 // 7)
        bad = {
            "empty query": _get(url + "?q=")[0],
            "10 MB query in the URL": _raw(
                url,
                f"GET /?q={urllib.parse.quote_plus(big_query)} HTTP/1.1\r\n"
                f"Host: {host}\r\n\r\n".encode(),
            ),
            "10 MB query posted": _raw(url, *_form_request(host, {"q": big_query})),
            "non-NIfTI upload": _post(url + "decode", *_multipart("notes.nii", b"not a map")),
            "51 MB upload": _raw(url, *_upload_request(host, b"\0" * (51 * 2**20))),
            "unknown path": _get(url + "no/such/page")[0],
        }
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()

    page_server = _stats(timings["page"][0])
    result = {
        "what": "nimare-mnm serve on 127.0.0.1 (pretrained model"
        + (", NeuroQuery studies" if args.data_dir else ", no studies")
        + "): latency of unseen queries, 20 concurrent queries, bad requests",
        "startup_seconds": round(startup, 1),
        "sequential_queries": len(sequential),
        "sequential_ms": {
            key: {"server": _stats(server_ms), "client": _stats(client_ms)}
            for key, (server_ms, client_ms) in timings.items()
        },
        "concurrent_api_query": api,
        "concurrent_pages": pages,
        "bad_request_status": bad,
        "target_warm_page_server_ms": TARGET_MS,
        "target_met": page_server["p95"] <= TARGET_MS
        and api["wrong_answers"] == 0
        and pages["wrong_answers"] == 0
        and all(isinstance(s, int) and 400 <= s < 500 for s in bad.values()),
        **started,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
