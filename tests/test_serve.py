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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from fastapi.testclient import TestClient

from braintumor.app.views import MAX_UPLOAD_MB
from braintumor.bundle import DEFAULT_MODEL_DIR, ModelCard, read_card, sha256, to_json
from braintumor.errors import ScanError
from braintumor.imageio import load_scan
from braintumor.imageio.writers import MASK_KINDS
from braintumor.inference import Analyzer, Result
from braintumor.serve import create_app
from braintumor.serve.api import MASK_KINDS_ACCEPTED, MAX_UPLOAD_BYTES, RETRY_AFTER_S
from conftest import DEV512, accepts_connections, png_bytes, write_dicom
from test_app import free_port
from test_outputs import NIFTI_AFFINES, SEG_STORAGE, _full_dicom, _marks, blob_forward


@pytest.fixture(scope="module")
def analyzer() -> Analyzer:
    return Analyzer.default()


@pytest.fixture(scope="module")
def client(analyzer):
    with TestClient(create_app(analyzer)) as c:
        yield c


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

    card: ClassVar[ModelCard] = replace(read_card(DEFAULT_MODEL_DIR), name="refusing", files={})

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

    card: ClassVar[ModelCard] = replace(read_card(DEFAULT_MODEL_DIR), name="blocking", files={})

    def __init__(self):
        self.started, self.release = threading.Event(), threading.Event()

    def analyze(self, data, spacing_mm=None, name=None) -> Result:
        self.started.set()
        assert self.release.wait(30)
        return Result(file=name, label="glioma", probabilities={"glioma": 1.0})


def test_busy_server_answers_503_with_retry_after():
    fake = Blocking()
    upload = {"file": ("a.png", png_bytes(blob(32)), "image/png")}
    with TestClient(create_app(fake, max_concurrent=1)) as c, ThreadPoolExecutor(1) as pool:
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
    assert health["sha256"]["model.onnx"] == sha256(DEFAULT_MODEL_DIR / "model.onnx")
    assert health["sha256"] == {name: f.sha256 for name, f in analyzer.card.files.items()}
    assert client.get("/model").json() == to_json(read_card(DEFAULT_MODEL_DIR))  # the card as read: migrated
    assert client.get("/docs").status_code == 200
    assert "/analyze" in client.get("/openapi.json").json()["paths"]


@pytest.mark.parametrize("host, warned", [("127.0.0.1", False), ("0.0.0.0", True)])
def test_serve_command_warns_off_public_hosts(monkeypatch, capsys, analyzer, host, warned):
    import uvicorn

    from braintumor.commands.serve import run

    served = []
    monkeypatch.setattr(Analyzer, "load", classmethod(lambda cls, model_dir=None, members=None: analyzer))
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port: served.append((host, port)))
    assert run(argparse.Namespace(host=host, port=8123, model=None, max_concurrent=None, members=None)) == 0
    err = capsys.readouterr().err
    assert served == [(host, 8123)]
    assert (
        err.startswith(
            f"braintumor serve: warning: --host {host} is not a loopback address. The API has no authentication"
        )
        if warned
        else err == ""
    )


CLIENTS, REQUESTS = 8, 25


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


@pytest.mark.slow
def test_real_server_under_load(tmp_path):
    import httpx

    slices = load_slices(tmp_path)
    reference = Analyzer.default()
    expected = {p.name: reference.analyze(p).label for p in slices}
    port, log = free_port(), tmp_path / "serve.log"
    with open(log, "wb") as out:  # a file, not a pipe: a full pipe would stall the server
        proc = subprocess.Popen(
            [sys.executable, "-m", "braintumor.cli", "serve", "--port", str(port), "--max-concurrent", str(CLIENTS)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            assert proc.poll() is None and time.time() < deadline, f"no /health: {log.read_text()[-2000:]}"
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)

        def client(worker: int) -> list[tuple[str, int, str | None, float]]:
            answers = []
            with httpx.Client(base_url=url, timeout=60) as http:
                for i in range(REQUESTS):
                    path = slices[(worker * REQUESTS + i) % len(slices)]
                    start = time.perf_counter()
                    response = http.post("/analyze", files={"file": (path.name, path.read_bytes(), "image/png")})
                    elapsed = time.perf_counter() - start
                    label = response.json().get("label") if response.status_code == 200 else None
                    answers.append((path.name, response.status_code, label, elapsed))
            return answers

        start = time.perf_counter()
        with ThreadPoolExecutor(CLIENTS) as pool:
            answers = [a for worker in pool.map(client, range(CLIENTS)) for a in worker]
        wall = time.perf_counter() - start
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    latency_ms = np.array([a[3] for a in answers]) * 1000
    p50, p95, p99 = np.percentile(latency_ms, [50, 95, 99])
    figures = (
        f"{len(answers)} requests from {CLIENTS} clients over {len(slices)} slices: {len(answers) / wall:.1f} "
        f"req/s, latency p50 {p50:.0f} ms, p95 {p95:.0f} ms, p99 {p99:.0f} ms"
    )
    print(figures)
    errors = [a for a in answers if a[1] != 200]
    wrong = [a for a in answers if a[1] == 200 and a[2] != expected[a[0]]]
    assert len(answers) == CLIENTS * REQUESTS and not errors and not wrong, (
        f"{figures}; errors {errors[:5]}, labels unlike the CLI's {wrong[:5]}"
    )
    text = log.read_text()
    # uvicorn finishes the requests in flight, then re-raises SIGTERM so a supervisor sees how the server ended
    assert code in (0, -signal.SIGTERM) and "Finished server process" in text, text[-2000:]
    assert not accepts_connections(port), "the port still accepts connections after SIGTERM"
    with socket.socket() as s:  # nothing listens on it any more
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
    assert f"braintumor serve on http://127.0.0.1:{port}" in text and "warning:" not in text
