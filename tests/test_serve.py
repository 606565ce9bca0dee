"""``braintumor serve``: the HTTP API in-process (TestClient), then the real server under load."""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from fastapi.testclient import TestClient

from braintumor.app.views import MAX_UPLOAD_MB
from braintumor.bundle import (
    CARD,
    DEFAULT_MODEL_DIR,
    SINGLE_MODEL_DIR,
    ModelCard,
    read_card,
    sha256,
    to_json,
)
from braintumor.errors import ScanError
from braintumor.imageio import load_scan
from braintumor.imageio.writers import MASK_KINDS
from braintumor.inference import Analyzer, Result
from braintumor.serve import create_app
from braintumor.serve.api import MASK_KINDS_ACCEPTED, MAX_UPLOAD_BYTES, RETRY_AFTER_S
from conftest import DEV512, accepts_connections, glioma_analysis, png_bytes, write_dicom
from test_app import free_port
from test_outputs import NIFTI_AFFINES, SEG_STORAGE, _full_dicom, _marks, blob_forward


def blob(side: int = 128) -> np.ndarray:
    image = np.zeros((side, side), np.uint8)
    image[side // 4 : side * 3 // 4, side // 4 : side * 3 // 4] = 120
    return image


def multipart(payload: bytes, name: str = "s.png") -> tuple[bytes, dict[str, str]]:
    body = (
        (
            f'--x\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\nContent-Type: '
            "application/octet-stream\r\n\r\n"
        ).encode()
        + payload
        + b"\r\n--x--\r\n"
    )
    return body, {"content-type": "multipart/form-data; boundary=x"}


def test_png_gives_the_cli_json_object(client, analyzer, tmp_path, capsys):
    from braintumor.cli import main

    path = tmp_path / "a.png"
    path.write_bytes(png_bytes(blob()))
    response = client.post(
        "/analyze", files={"file": ("a.png", path.read_bytes(), "image/png")}, data={"spacing_mm": "0.5"}
    )
    assert response.status_code == 200, response.text
    row = response.json()
    assert row == json.loads(json.dumps(analyzer.analyze(path, spacing_mm=0.5, name="a.png").row()))
    assert row["spacing_source"] == "user" and row["area_cm2"] is not None and "mask_png" not in row
    assert main(["analyze", str(path), "--spacing-mm", "0.5", "--json"]) == 0
    cli_row = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert {**cli_row, "file": "a.png"} == row


def test_dicom_with_mask_png(client, tmp_path):
    pixels = (blob(96).astype(np.uint16) * 16)[:, :80]  # not square: the mask must keep the image's shape
    dicom = write_dicom(tmp_path / "scan.dcm", pixels, spacing=(0.5, 0.7))
    response = client.post("/analyze?mask=png", files={"file": ("folder/scan.dcm", dicom.read_bytes())})
    assert response.status_code == 200, response.text
    row = response.json()
    assert row["file"] == "scan.dcm" and row["spacing_mm"] == [0.5, 0.7] and "DICOM" in row["spacing_source"]
    from PIL import Image

    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(row["mask_png"]))))
    assert mask.shape == (96, 80) and set(np.unique(mask)) <= {0, 255}
    assert int((mask == 255).sum()) == row["tumor_pixels"]


def test_dicom_upload_with_mask_seg_gets_a_seg_of_the_upload(client, analyzer, tmp_path, monkeypatch):
    import pydicom

    monkeypatch.setattr(Analyzer, "forward", blob_forward)  # a known, non-empty mask
    dicom = _full_dicom(tmp_path / "scan.dcm", (blob(96).astype(np.uint16) * 16)[:, :80])
    response = client.post("/analyze?mask=seg", files={"file": ("scan.dcm", dicom.read_bytes())})
    assert response.status_code == 200, response.text
    row = response.json()
    assert "mask_png" not in row and "mask_nifti" not in row
    seg, src = pydicom.dcmread(io.BytesIO(base64.b64decode(row["mask_seg"]))), pydicom.dcmread(dicom)
    assert seg.SOPClassUID == SEG_STORAGE and seg.SegmentationType == "BINARY"
    referenced = seg.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == src.SeriesInstanceUID
    assert referenced.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
    derivation = seg.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0]
    assert derivation.SourceImageSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
    assert seg.StudyInstanceUID == src.StudyInstanceUID and seg.PatientID == src.PatientID
    expected = analyzer.analyze(dicom)
    assert row["tumor_pixels"] == expected.tumor_pixels > 0 and np.array_equal(seg.pixel_array, expected.mask)
    assert expected.label in seg.SegmentSequence[0].SegmentDescription


def test_nifti_upload_with_mask_nifti_gets_a_volume_like_the_upload(client, analyzer, tmp_path, monkeypatch):
    import gzip

    import nibabel as nib

    monkeypatch.setattr(Analyzer, "forward", blob_forward)
    source = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(_marks((44, 36, 5)) * 300, NIFTI_AFFINES["las"]), source)
    response = client.post("/analyze?mask=nifti", files={"file": ("vol.nii.gz", source.read_bytes())})
    assert response.status_code == 200, response.text
    row = response.json()
    assert "mask_seg" not in row
    (tmp_path / "mask.nii.gz").write_bytes(base64.b64decode(row["mask_nifti"]))
    written, upload = nib.load(tmp_path / "mask.nii.gz"), nib.load(source)
    data = np.asanyarray(written.dataobj)
    assert data.shape == upload.shape and data.dtype == np.uint8
    assert np.array_equal(written.affine, upload.affine)
    assert int(data.sum()) == row["tumor_pixels"] > 0 and not np.delete(data, 2, axis=2).any()  # the middle slice
    assert np.array_equal(load_scan(tmp_path / "mask.nii.gz").pixels, analyzer.analyze(source).mask)
    assert gzip.decompress(base64.b64decode(row["mask_nifti"]))[344:348] == b"n+1\x00"


class Refusing:
    """An analyzer that must never be reached."""

    card: ClassVar[ModelCard] = replace(read_card(SINGLE_MODEL_DIR), name="refusing", files={})

    def analyze(self, *args, **kwargs) -> Result:
        raise AssertionError("a mask the upload cannot have is refused before the analysis")


@pytest.mark.parametrize(
    "query, name, detail",
    [
        ("seg", "s.png", "s.png: mask=seg needs a DICOM upload; this is a PNG"),
        ("nifti", "scan.dcm", "scan.dcm: mask=nifti needs a NIfTI upload; this is a DICOM"),
        ("seg", "v.nii.gz", "v.nii.gz: mask=seg needs a DICOM upload; this is a NIfTI"),
    ],
)
def test_a_mask_the_upload_format_cannot_have_is_422_before_analysis(tmp_path, query, name, detail):
    import nibabel as nib

    if name.endswith(".png"):
        data = png_bytes(blob(32))
    elif name.endswith(".dcm"):
        data = _full_dicom(tmp_path / name, blob(32).astype(np.uint16)).read_bytes()
    else:
        nib.save(nib.Nifti1Image(np.zeros((32, 32, 3), np.float32), np.eye(4)), tmp_path / name)
        data = (tmp_path / name).read_bytes()
    with TestClient(create_app(Refusing())) as c:
        response = c.post(f"/analyze?mask={query}", files={"file": (name, data)})
    assert response.status_code == 422 and response.json() == {"detail": detail}


def test_mask_seg_of_a_dicom_without_geometry_is_422_with_the_reason(client, tmp_path):
    dicom = write_dicom(tmp_path / "bare.dcm", blob(64).astype(np.uint16))
    response = client.post("/analyze?mask=seg", files={"file": ("bare.dcm", dicom.read_bytes())})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert (
        detail.startswith("bare.dcm: no DICOM SEG written: the source lacks StudyInstanceUID, ") and "\n" not in detail
    )


def test_the_mask_parameter_is_documented(client):
    parameters = client.get("/openapi.json").json()["paths"]["/analyze"]["post"]["parameters"]
    mask = next(p for p in parameters if p["name"] == "mask")
    assert {"png", *MASK_KINDS} == set(MASK_KINDS_ACCEPTED) == set(mask["schema"]["anyOf"][0]["enum"])
    assert all(f"`mask_{kind}`" in mask["description"] for kind in MASK_KINDS_ACCEPTED)
    assert client.post("/analyze?mask=jpeg", files={"file": ("a.png", png_bytes(blob(32)))}).status_code == 422


def test_bad_file_is_422_with_the_readers_one_line(client):
    with pytest.raises(ScanError) as expected:
        load_scan(b"garbage" * 10, name="broken.png")
    response = client.post("/analyze", files={"file": ("broken.png", b"garbage" * 10, "image/png")})
    assert response.status_code == 422
    assert response.json() == {"detail": str(expected.value)} and "\n" not in str(expected.value)
    assert str(expected.value).startswith("broken.png: ")


def test_oversized_uploads_are_413(analyzer):
    with TestClient(create_app(analyzer, max_upload_bytes=4096)) as small:
        response = small.post("/analyze", files={"file": ("big.png", b"\0" * 8192, "image/png")})
        assert response.status_code == 413 and "upload limit" in response.json()["detail"]
        body, headers = multipart(b"\0" * 8192)
        lying = small.post("/analyze", content=body, headers={**headers, "content-length": "100"})
        assert lying.status_code == 413  # counted while reading, whatever the header claims
        fits = small.post("/analyze", files={"file": ("a.png", png_bytes(blob(32)), "image/png")})
        assert fits.status_code == 200, fits.text
    assert MAX_UPLOAD_BYTES == MAX_UPLOAD_MB * 2**20 == 64 * 2**20  # the page's limit


def test_a_stream_without_content_length_is_cut_off_while_reading(analyzer):
    """A client that streams forever is stopped once the limit is passed, not after it has sent everything."""
    head, _ = multipart(b"")
    head = head[: head.index(b"\r\n\r\n") + 4]
    chunk, limit, pulled, sent = b"\0" * 1024, 10 * 1024, [], []

    async def receive() -> dict:  # 1 MB in all, so a limiter that fails lets the request end instead of hanging
        pulled.append(1)
        return {"type": "http.request", "body": head if len(pulled) == 1 else chunk, "more_body": len(pulled) < 1024}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/analyze",
        "raw_path": b"/analyze",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"multipart/form-data; boundary=x"), (b"transfer-encoding", b"chunked")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    asyncio.run(create_app(analyzer, max_upload_bytes=limit)(scope, receive, send))
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 413
    assert len(pulled) <= limit // len(chunk) + 2


class Blocking:
    """An analyzer that holds its slot until released, to fill the server."""

    card: ClassVar[ModelCard] = replace(read_card(SINGLE_MODEL_DIR), name="blocking", files={})

    def __init__(self):
        self.started, self.release = threading.Event(), threading.Event()

    def analyze(self, data, spacing_mm=None, name=None) -> Result:
        self.started.set()
        assert self.release.wait(30)
        return glioma_analysis(data, name)


def test_busy_server_without_a_queue_answers_503_with_retry_after():
    fake = Blocking()
    upload = {"file": ("a.png", png_bytes(blob(32)), "image/png")}
    with TestClient(create_app(fake, max_concurrent=1, queue=0)) as c, ThreadPoolExecutor(1) as pool:
        first = pool.submit(c.post, "/analyze", files=upload)
        assert fake.started.wait(30)
        busy = c.post("/analyze", files=upload)
        health = c.get("/health")  # the event loop still answers while the analysis runs in a worker thread
        fake.release.set()
        assert first.result(timeout=30).status_code == 200
        again = c.post("/analyze", files=upload)
    assert busy.status_code == 503 and busy.headers["retry-after"] == str(RETRY_AFTER_S)
    assert health.status_code == 200 and again.status_code == 200


def test_health_model_and_docs(client, analyzer):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["model"] == analyzer.card.name
    assert health["sha256"] == {name: f.sha256 for name, f in analyzer.card.files.items()}
    # the shipped ensemble: each member's card by checksum, and that card pins the member's files
    assert health["members"] == {f.name: sha256(f / CARD) for f in analyzer.member_dirs} and len(health["members"]) > 1
    assert client.get("/model").json() == to_json(read_card(DEFAULT_MODEL_DIR))  # the card as read: migrated
    assert client.get("/docs").status_code == 200
    assert "/analyze" in client.get("/openapi.json").json()["paths"]


def serve_args(**overrides) -> argparse.Namespace:
    """``braintumor serve``'s options as the parser gives them by default."""
    from braintumor.cli import _parser

    return argparse.Namespace(**{**vars(_parser().parse_args(["serve"])), **overrides})


@pytest.mark.parametrize(
    "host, insecure, warned", [("127.0.0.1", False, False), ("0.0.0.0", True, True), ("::", True, True)]
)
def test_serve_command_warns_off_public_hosts_with_insecure(monkeypatch, capsys, analyzer, host, insecure, warned):
    import uvicorn

    from braintumor.commands.serve import run

    served = []
    monkeypatch.delenv("BRAINTUMOR_TOKEN", raising=False)
    monkeypatch.setattr(Analyzer, "load", classmethod(lambda cls, model_dir=None, members=None: analyzer))
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port: served.append((host, port)))
    assert run(serve_args(host=host, port=8123, insecure=insecure)) == 0
    err = capsys.readouterr().err
    assert served == [(host, 8123)]
    assert (
        err.startswith(
            f"braintumor serve: warning: --host {host} is not a loopback address. The API has no authentication"
        )
        and err.count("\n") == 1
        if warned
        else err == ""
    )


CLIENTS, REQUESTS = 16, 15
#: The load test's bound on /health's answer while the analyses run (from the issue that asked for the queue).
HEALTH_WITHIN_S = 0.5

#: Polls /health every 0.1 s from its own process (the load's client threads share this one's GIL, which would
#: slow a poller here, not the server) until the stop file appears; writes [seconds, status, waiting] samples.
HEALTH_WATCH = """
import json, pathlib, sys, time
import httpx
url, stop, out = sys.argv[1], pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
samples = []
with httpx.Client(timeout=10) as http:
    while not stop.exists():
        start = time.perf_counter()
        try:
            response = http.get(url + "/health")
            status, waiting = response.status_code, response.json()["load"]["waiting"]
        except httpx.HTTPError:
            status, waiting = None, None
        samples.append([time.perf_counter() - start, status, waiting])
        if len(samples) == 1:
            out.with_suffix(".ready").touch()
        time.sleep(0.1)
out.write_text(json.dumps(samples))
"""


def load_slices(tmp_path: Path) -> list[Path]:
    """Real 512×512 slices of all three tumor types when the data is here, else synthetic ones."""
    if (DEV512 / "images").is_dir():
        slices = sorted((DEV512 / "images").glob("*.png"))[::8]
        if slices:
            return slices
    rng = np.random.default_rng(0)
    paths = []
    for i in range(8):
        path = tmp_path / f"synthetic{i}.png"
        path.write_bytes(png_bytes(np.clip(blob(256) + rng.normal(40, 10, (256, 256)), 0, 255).astype(np.uint8)))
        paths.append(path)
    return paths


def expected_rows(slices: list[Path]) -> dict[str, dict]:
    """What ``analyze --json`` prints for each slice, from the in-process ``Analyzer``, as the API's JSON gives it."""
    reference = Analyzer.default()
    return {p.name: json.loads(json.dumps(reference.analyze(p, name=p.name).row())) for p in slices}


class RealServer:
    """``braintumor serve`` as a user starts it (``python -m braintumor.cli``), on a free port, its output in a log
    file (a full pipe would stall the server), stopped with SIGTERM when the block ends."""

    def __init__(self, tmp_path: Path, *options: str, env: dict[str, str] | None = None):
        self.port, self.log = free_port(), tmp_path / "serve.log"
        self.url = f"http://127.0.0.1:{self.port}"
        self.argv = [sys.executable, "-m", "braintumor.cli", "serve", "--port", str(self.port), *options]
        self.env, self.code = env, None
        self.tmp_path = tmp_path

    def __enter__(self) -> RealServer:
        import httpx

        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.time() + 90
        while True:
            assert self.proc.poll() is None and time.time() < deadline, f"no /health: {self.text()[-2000:]}"
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.3)

    def __exit__(self, *exc_info) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.code = self.proc.wait(timeout=30)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def rss_mb(self, field: str = "VmRSS") -> float:
        """The server's resident memory now (VmRSS) or at its peak so far (VmHWM), from /proc (Linux)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
        raise AssertionError(f"no {field} in /proc/{self.proc.pid}/status")

    def watch_health(self) -> HealthWatch:
        return HealthWatch(self.url, self.tmp_path)


class HealthWatch:
    """/health polled from another process while the block runs (``HEALTH_WATCH``)."""

    def __init__(self, url: str, folder: Path):
        self.url, self.stop, self.out = url, folder / "health.stop", folder / "health.json"
        self.samples: list[tuple[float, int | None, int | None]] = []

    def __enter__(self) -> HealthWatch:
        self.proc = subprocess.Popen([sys.executable, "-c", HEALTH_WATCH, self.url, str(self.stop), str(self.out)])
        deadline = time.time() + 60
        while not self.out.with_suffix(".ready").exists():  # polling before the load begins
            assert self.proc.poll() is None and time.time() < deadline, "the /health poller did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop.touch()
        assert self.proc.wait(timeout=30) == 0
        self.samples = [tuple(s) for s in json.loads(self.out.read_text())]

    def worst(self) -> float:
        return max(s[0] for s in self.samples)

    def summary(self) -> str:
        seconds = np.array([s[0] for s in self.samples]) * 1000
        waiting = max((s[2] or 0) for s in self.samples)
        return (
            f"/health: {len(seconds)} polls, p50 {np.percentile(seconds, 50):.0f} ms, max {seconds.max():.0f} ms, "
            f"queue up to {waiting} waiting"
        )


def post_slices(url: str, slices: list[Path], start: int, count: int, ready: threading.Barrier | None = None) -> list:
    """``count`` uploads in turn from one client: (file, status, JSON body, seconds, Retry-After) each.  The client
    is made and its files read before ``ready`` lets all clients go at once, so the times are the server's."""
    import httpx

    answers = []
    paths = [slices[(start + i) % len(slices)] for i in range(count)]
    uploads = [{"file": (path.name, path.read_bytes(), "image/png")} for path in paths]
    with httpx.Client(base_url=url, timeout=120) as http:
        if ready is not None:
            ready.wait(60)
        for path, upload in zip(paths, uploads, strict=True):
            began = time.perf_counter()
            response = http.post("/analyze", files=upload)
            elapsed = time.perf_counter() - began
            retry_after = response.headers.get("retry-after")
            answers.append((path.name, response.status_code, response.json(), elapsed, retry_after))
    return answers


needs_proc = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux only)")


@pytest.mark.slow
@needs_proc
def test_real_server_under_load_queues_instead_of_refusing(tmp_path):
    """16 clients × 15 requests against the default limits (2 slots per core, a queue of 64): every one is
    answered 200 with the in-process Analyzer's row, and /health keeps answering at once."""
    slices = load_slices(tmp_path)
    expected = expected_rows(slices)
    with RealServer(tmp_path) as server:
        ready = threading.Barrier(CLIENTS)

        def client(worker: int) -> list[tuple]:
            return post_slices(server.url, slices, worker * REQUESTS, REQUESTS, ready)

        with server.watch_health() as health, ThreadPoolExecutor(CLIENTS) as pool:
            start = time.perf_counter()
            answers = [a for one in pool.map(client, range(CLIENTS)) for a in one]
            wall = time.perf_counter() - start
        peak_mb = server.rss_mb("VmHWM")
    latency_ms = np.array([a[3] for a in answers]) * 1000
    p50, p95, p99 = np.percentile(latency_ms, [50, 95, 99])
    figures = (
        f"{len(answers)} requests from {CLIENTS} clients over {len(slices)} slices: {len(answers) / wall:.1f} "
        f"req/s, latency p50 {p50:.0f} ms, p95 {p95:.0f} ms, p99 {p99:.0f} ms; peak RSS {peak_mb:.0f} MB; "
        f"{health.summary()}"
    )
    print(figures)
    errors = [(*a[:2], a[2].get("detail")) for a in answers if a[1] != 200]
    wrong = [a[0] for a in answers if a[1] == 200 and a[2] != expected[a[0]]]
    assert len(answers) == CLIENTS * REQUESTS and not errors and not wrong, (
        f"{figures}; errors {errors[:5]}, rows unlike the CLI's {wrong[:5]}"
    )
    assert all(s[1] == 200 for s in health.samples) and health.worst() < HEALTH_WITHIN_S, figures
    text = server.text()
    # uvicorn finishes the requests in flight, then re-raises SIGTERM so a supervisor sees how the server ended
    assert server.code in (0, -signal.SIGTERM) and "Finished server process" in text, text[-2000:]
    assert not accepts_connections(server.port), "the port still accepts connections after SIGTERM"
    with socket.socket() as s:  # nothing listens on it any more
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", server.port))
    assert f"braintumor serve on http://127.0.0.1:{server.port}" in text and "warning:" not in text


#: The overflow test: many more clients than slots and queue places, a short wait, a small upload budget.
CROWD, CROWD_QUEUE, CROWD_TIMEOUT_S, CROWD_MEMORY_MB = 200, 8, 10, 64
#: The three refusals' details, by a phrase each contains.
REFUSAL_KINDS = {
    "are waiting": "queue full",
    "came free within": "timed out",
    "memory budget": "over the upload budget",
}
#: A client refused for a full queue is told so within this (measured: well under 0.5 s on 2 busy cores).
REFUSED_WITHIN_S = 2.0
#: What the server may add to its resident memory after warming up, beyond the upload budget: the running analyses'
#: working memory (decoded slices, network activations, masks) and allocator slack.
ANALYSIS_ALLOWANCE_MB = 256


@pytest.mark.slow
@needs_proc
def test_real_server_overflow_is_refused_quickly_within_memory(tmp_path):
    """200 clients at once against a queue of 8: the overflow is told 503 + Retry-After at once instead of
    hanging, what is accepted is answered correctly, no request outlives the queue timeout by more than an
    analysis, /health keeps answering and the server's memory stays within its bound."""
    import httpx

    slices = load_slices(tmp_path)
    expected = expected_rows(slices)
    options = ("--queue", str(CROWD_QUEUE), "--queue-timeout", str(CROWD_TIMEOUT_S))
    with RealServer(tmp_path, *options, "--upload-memory-mb", str(CROWD_MEMORY_MB)) as server:
        warm = httpx.post(f"{server.url}/analyze", files={"file": (slices[0].name, slices[0].read_bytes())}, timeout=60)
        assert warm.status_code == 200, warm.text
        baseline_mb = server.rss_mb()
        ready = threading.Barrier(CROWD)

        def client(i: int) -> list[tuple]:
            return post_slices(server.url, slices, i, 1, ready)  # all at once

        with server.watch_health() as health, ThreadPoolExecutor(CROWD) as pool:
            start = time.perf_counter()
            answers = [a for one in pool.map(client, range(CROWD)) for a in one]
            wall = time.perf_counter() - start
        peak_mb = server.rss_mb("VmHWM")
    ok = [a for a in answers if a[1] == 200]
    refused = [a for a in answers if a[1] == 503]
    refused_s = np.array([a[3] for a in refused] or [0.0])
    reasons = Counter(REFUSAL_KINDS[next(k for k in REFUSAL_KINDS if k in a[2]["detail"])] for a in refused)
    figures = (
        f"{CROWD} clients at once, --queue {CROWD_QUEUE}: {len(ok)} answered 200, {len(refused)} refused 503 "
        f"({', '.join(f'{n} {why}' for why, n in reasons.items())}; answered in p50 "
        f"{np.percentile(refused_s, 50) * 1000:.0f} ms, max {refused_s.max() * 1000:.0f} ms) in {wall:.1f} s; "
        f"slowest answer {max(a[3] for a in answers):.1f} s; RSS {baseline_mb:.0f} MB warm, peak {peak_mb:.0f} MB; "
        f"{health.summary()}"
    )
    print(figures)
    assert len(ok) + len(refused) == CROWD and refused and ok, figures
    assert all(a[2] == expected[a[0]] for a in ok), figures
    assert all(a[4] == str(RETRY_AFTER_S) and a[2]["detail"].startswith("busy: ") for a in refused), refused[:3]
    assert all(a[3] < REFUSED_WITHIN_S for a in refused if "are waiting" in a[2]["detail"]), figures  # at once
    assert max(a[3] for a in answers) < CROWD_TIMEOUT_S + 10, figures  # nothing waits past its timeout
    assert peak_mb < baseline_mb + CROWD_MEMORY_MB + ANALYSIS_ALLOWANCE_MB, figures
    assert all(s[1] == 200 for s in health.samples) and health.worst() < HEALTH_WITHIN_S, figures
