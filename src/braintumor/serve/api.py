"""``POST /analyze``, ``GET /health``, ``GET /model``: one model per process, shared by every request.

An upload is analysed from bytes through ``load_scan``, so strangers' files meet the same hostile-input policy
as the CLI and the page.  Starlette keeps an upload in memory up to 1 MB and in a temporary file (deleted with the
request) beyond that; nothing is logged but uvicorn's access lines (client address, method, path, status).
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Literal

from fastapi import FastAPI, File, Form, HTTPException, Query, UploadFile
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from braintumor import __version__
from braintumor.bundle import to_json
from braintumor.errors import ScanError
from braintumor.imageio import load_scan
from braintumor.imageio.registry import format_name
from braintumor.imageio.writers import MASK_KINDS, MASK_WRITERS, MaskError, mask_description
from braintumor.inference import Analyzer

if TYPE_CHECKING:
    import numpy as np

#: Largest request body, the same 64 MB as the web page's uploads.
MAX_UPLOAD_BYTES = 64 * 2**20
#: Seconds a client is told to wait when every analysis slot is taken.
RETRY_AFTER_S = 1


def default_max_concurrent() -> int:
    """Two per core: the cores stay busy while some requests decode or encode; beyond that, answers only come later."""
    return 2 * (os.cpu_count() or 2)


class BodyLimit:
    """ASGI middleware: 413 for a request body over ``max_bytes``.  A declared Content-Length is checked before
    anything is read, and the bytes are counted as they arrive, so a missing or lying one cannot get past it."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    def too_large(self) -> str:
        return f"request body is larger than the {self.max_bytes / 2**20:g} MB upload limit"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return await JSONResponse({"detail": self.too_large()}, 413)(scope, receive, send)
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:  # FastAPI passes an HTTPException from the body reader on as is
                raise HTTPException(413, self.too_large())
            return message

        await self.app(scope, counted, send)


class Slots:
    """A bound on analyses in flight: beyond it the client is told to retry (503) instead of being queued behind
    work the server cannot finish soon.  Only the event loop's thread takes and returns slots, so a counter is safe."""

    def __init__(self, limit: int):
        self.limit, self.busy = limit, 0

    @contextmanager
    def take(self) -> Iterator[None]:
        if self.busy >= self.limit:
            raise HTTPException(
                503,
                f"busy: {self.limit} analyses are running; retry shortly",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        self.busy += 1
        try:
            yield
        finally:
            self.busy -= 1


def upload_name(filename: str | None) -> str:
    """The client's file name without any folders (it picks the reader by extension and names the result)."""
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    return name or "upload"


def mask_png(mask: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(mask * 255).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


#: ``POST /analyze?mask=…``: the PNG of any upload, or the mask in the upload's own format (``MASK_WRITERS``);
#: the endpoint's ``mask`` parameter spells these out (a Literal, so FastAPI checks and documents them)
MASK_KINDS_ACCEPTED = ("png", *MASK_KINDS)
MASK_HELP = (
    "Add the mask to the answer, base64-encoded: 'png' as `mask_png` (0/255, the image's size, any upload); "
    "'seg' as `mask_seg`, a DICOM Segmentation (binary, one segment) of the analysed frame that references the "
    "upload (DICOM uploads with study/series/frame-of-reference UIDs and plane geometry); 'nifti' as `mask_nifti`, "
    "a gzipped NIfTI (.nii.gz) of uint8 0/1 with the upload's shape and header geometry, zero outside the analysed "
    "slice (NIfTI uploads).  A mask the upload cannot have is a 422."
)


def check_mask_kind(kind: str | None, fmt: str | None, name: str) -> None:
    """A ``ScanError`` (→ 422) for a mask the upload's format has no writer for, before any analysis."""
    if kind in MASK_KINDS and MASK_KINDS[kind] != fmt:
        needs = format_name(MASK_KINDS[kind])
        raise ScanError(name, f"mask={kind} needs a {needs} upload; this is a {format_name(fmt)}")


def analyze_bytes(analyzer: Analyzer, data: bytes, name: str, spacing_mm: float | None, mask: str | None) -> dict:
    """One ``analyze --json`` line for an upload, with ``mask_<kind>`` when ``mask`` asks (runs in a worker thread).
    Raises ``ScanError`` for an unreadable upload and for a mask it cannot have."""
    scan = load_scan(data, name=name)
    check_mask_kind(mask, scan.format, name)
    result = analyzer.analyze(scan, spacing_mm=spacing_mm, name=name)
    row = result.row()
    if mask is None:
        return row
    assert result.mask is not None and result.scan is not None  # analyze raises rather than return an error result
    if mask == "png":
        row["mask_png"] = mask_png(result.mask)
        return row
    writer = MASK_WRITERS[MASK_KINDS[mask]]
    try:
        encoded = writer.to_bytes(result.scan, result.mask, mask_description(result.label, result.confidence))
    except MaskError as err:  # e.g. a DICOM without the geometry a SEG lies on
        raise ScanError(name, str(err)) from None
    row[f"mask_{writer.kind}"] = base64.b64encode(encoded).decode("ascii")
    return row


def create_app(
    analyzer: Analyzer, max_concurrent: int | None = None, max_upload_bytes: int = MAX_UPLOAD_BYTES
) -> FastAPI:
    """The API around one loaded ``analyzer`` (thread-safe, so worker threads share it)."""
    slots = Slots(max_concurrent or default_max_concurrent())
    card = analyzer.card
    app = FastAPI(
        title="braintumor",
        version=__version__,
        description="Brain MRI slice analysis: tumor type, outline and area in cm². Research and education "
        "only; not a medical device.",
    )
    app.add_middleware(BodyLimit, max_bytes=max_upload_bytes)

    @app.post(
        "/analyze",
        responses={
            413: {"description": "upload over the size limit"},
            422: {
                "description": "unreadable scan, or a `mask` the upload cannot have (`mask=seg` on a PNG, a DICOM "
                "without geometry): `detail` is `<file>: <reason>`"
            },
            503: {"description": "every analysis slot is busy; see Retry-After"},
        },
    )
    async def analyze(
        file: UploadFile = File(description="one slice: PNG, JPEG, TIFF, BMP, DICOM, NIfTI, .mat"),
        spacing_mm: float | None = Form(
            None, gt=0, allow_inf_nan=False, description="pixel size (mm) for files that carry none"
        ),
        mask: Literal["png", "seg", "nifti"] | None = Query(None, description=MASK_HELP),
    ) -> dict:
        """The JSON object one line of ``braintumor analyze --json`` prints; with ``mask``, plus the mask as a
        base64 string: ``mask_png`` (PNG, 0/255), ``mask_seg`` (DICOM SEG file of a DICOM upload) or
        ``mask_nifti`` (``.nii.gz`` of a NIfTI upload), the same files ``analyze --out`` writes."""
        with slots.take():
            data = await file.read()
            try:
                return await run_in_threadpool(
                    analyze_bytes, analyzer, data, upload_name(file.filename), spacing_mm, mask
                )
            except ScanError as err:
                raise HTTPException(422, str(err)) from None

    @app.get("/health")
    async def health() -> dict:
        """Up, with the model it answers with: its name and the SHA-256 of each model file its card lists."""
        files = {name: entry.sha256 for name, entry in card.files.items()}
        return {"status": "ok", "model": card.name, "sha256": files}

    @app.get("/model")
    async def model() -> dict:
        """The model card: training data and split, validation scores, calibration, files (no patient ids)."""
        return to_json(card)

    return app
