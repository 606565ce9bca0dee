"""``POST /analyze``, ``GET /health``, ``GET /model``: one model per process, shared by every request.

An upload is analysed from bytes through ``load_scan``, so strangers' files meet the same hostile-input policy
as the CLI and the page.  Starlette keeps an upload in memory up to 1 MB and in a temporary file (deleted with the
request) beyond that; nothing is logged but uvicorn's access lines (client address, method, path, status).

Under load a request waits, in arrival order and for a bounded time, for one of a bounded number of analysis slots
(``Gate``); only a full queue, a wait past its limit or a full memory budget for request bodies is refused (503 +
Retry-After).  With a token every route but ``/health`` needs ``Authorization: Bearer <token>`` (``BearerToken``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import io
import os
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Literal

from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from braintumor import __version__
from braintumor.bundle import to_json
from braintumor.errors import ScanError
from braintumor.imageio import load_scan
from braintumor.imageio.limits import MAX_UPLOAD_BYTES
from braintumor.imageio.registry import format_name
from braintumor.imageio.writers import MASK_KINDS, MASK_WRITERS, MaskError, mask_description
from braintumor.inference import Analyzer

if TYPE_CHECKING:
    import numpy as np

#: Seconds a client is told to wait when the server refuses work it cannot take now (503).
RETRY_AFTER_S = 1
#: Requests that may wait for an analysis slot (``--queue``), and for how long each (``--queue-timeout``).
DEFAULT_QUEUE, DEFAULT_QUEUE_TIMEOUT_S = 64, 30.0
#: Bytes of request bodies held at once, waiting or being analysed (``--upload-memory-mb``).
DEFAULT_UPLOAD_MEMORY = 512 * 2**20
#: Routes a token does not guard: a load balancer's or supervisor's probe needs no secret.
OPEN_PATHS = ("/health",)
#: Routes whose requests go through the ``Gate``.
ANALYSIS_PATHS = ("/analyze",)


def default_max_concurrent() -> int:
    """Two per core: the cores stay busy while some requests decode or encode; beyond that, answers only come later."""
    return 2 * (os.cpu_count() or 2)


def busy(reason: str) -> HTTPException:
    """The 503 for work the server cannot take now: one line, and when to try again."""
    return HTTPException(503, f"busy: {reason}; retry shortly", headers={"Retry-After": str(RETRY_AFTER_S)})


async def refuse(exc: HTTPException, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer ``exc`` from a middleware, outside FastAPI's exception handlers, without reading the body."""
    await JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)(scope, receive, send)


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


class Gate:
    """Admission to the analyses.  ``limit`` run at once; up to ``queue`` more wait for a slot, first come first
    served, each at most ``timeout`` seconds; beyond that, or past the wait, 503 + Retry-After.  The bytes of the
    request bodies the server holds (arriving, waiting or being analysed) stay within ``memory``: a body that would
    pass it is refused with 503, so a flood of uploads is turned away instead of growing the process.

    Only the event loop's thread touches the counters, so plain integers and a deque are safe."""

    def __init__(
        self,
        limit: int,
        queue: int = DEFAULT_QUEUE,
        timeout: float = DEFAULT_QUEUE_TIMEOUT_S,
        memory: int = DEFAULT_UPLOAD_MEMORY,
    ):
        self.limit, self.queue, self.timeout, self.memory = limit, queue, timeout, memory
        self.busy = 0  # analyses holding a slot
        self.held = 0  # body bytes received by requests that have not ended
        self.waiters: deque[asyncio.Future[None]] = deque()

    def load(self) -> dict:
        """What ``/health`` reports."""
        return {
            "running": self.busy,
            "waiting": len(self.waiters),
            "slots": self.limit,
            "queue": self.queue,
            "upload_mb_held": round(self.held / 2**20, 3),
        }

    def full(self) -> HTTPException | None:
        """The refusal for a request that could only wait behind a full queue, else None."""
        if self.busy >= self.limit and len(self.waiters) >= self.queue:
            return self.queue_full()
        return None

    def queue_full(self) -> HTTPException:
        return busy(f"all {self.limit} analysis slots are taken and {len(self.waiters)} requests are waiting")

    def over_budget(self) -> HTTPException:
        return busy(f"the uploads in progress fill the {self.memory / 2**20:g} MB memory budget")

    def fits(self, size: int) -> bool:
        return self.held + size <= self.memory

    def hold(self, size: int) -> None:
        """Count ``size`` more body bytes, or raise the 503 when they do not fit."""
        if not self.fits(size):
            raise self.over_budget()
        self.held += size

    def free(self, size: int) -> None:
        self.held -= size

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold an analysis slot for the block, after waiting for one if need be (or raise the 503)."""
        await self._acquire()
        try:
            yield
        finally:
            self._release()

    async def _acquire(self) -> None:
        if self.busy < self.limit and not self.waiters:
            self.busy += 1
            return
        if len(self.waiters) >= self.queue:
            raise self.queue_full()
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(turn)
        try:  # shielded: the timeout must not cancel a turn that has just been given the slot
            await asyncio.wait_for(asyncio.shield(turn), self.timeout)
        except asyncio.TimeoutError:
            if not turn.done():
                turn.cancel()
                self.waiters.remove(turn)
                raise busy(f"no analysis slot came free within {self.timeout:g} s") from None
            # the slot came just as the wait ran out: take it
        except BaseException:  # cancelled from outside while waiting
            if turn.done():
                self._release()  # pass on the slot it was given
            else:
                turn.cancel()
                self.waiters.remove(turn)
            raise

    def _release(self) -> None:
        while self.waiters:
            turn = self.waiters.popleft()
            if not turn.done():
                turn.set_result(None)  # the slot passes straight to the longest waiter
                return
        self.busy -= 1


class Admission:
    """ASGI middleware in front of the analysis routes: a request that could only wait behind a full queue, or whose
    declared body does not fit the memory budget now, is refused before its body is read; the bytes of every body
    are counted against the budget as they arrive (a 503 mid-upload when they stop fitting) and freed when the
    request ends.  A body the server has not read yet stays in the socket (uvicorn stops reading at 64 kB)."""

    def __init__(self, app: ASGIApp, gate: Gate, paths: Sequence[str] = ANALYSIS_PATHS):
        self.app, self.gate, self.paths = app, gate, tuple(paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            return await self.app(scope, receive, send)
        declared = Headers(scope=scope).get("content-length", "")
        refusal = self.gate.full()
        if refusal is None and declared.isdigit() and not self.gate.fits(int(declared)):
            refusal = self.gate.over_budget()
        if refusal is not None:
            return await refuse(refusal, scope, receive, send)
        held = 0

        async def counted() -> Message:
            nonlocal held
            message = await receive()
            size = len(message.get("body", b""))
            if size:
                self.gate.hold(size)  # FastAPI passes an HTTPException from the body reader on as is
                held += size
            return message

        try:
            await self.app(scope, counted, send)
        finally:
            self.gate.free(held)


class BearerToken:
    """ASGI middleware: every route but ``open_paths`` needs ``Authorization: Bearer <token>``, else 401 with
    ``WWW-Authenticate: Bearer``.  SHA-256 digests are compared with ``hmac.compare_digest``, so the time taken
    reveals neither the token's bytes nor its length.  The token is never logged or echoed."""

    def __init__(self, app: ASGIApp, token: str, open_paths: Sequence[str] = OPEN_PATHS):
        self.app, self.open_paths = app, tuple(open_paths)
        self.digest = hashlib.sha256(token.encode()).digest()

    def accepts(self, authorization: str | None) -> bool | None:
        """None without Bearer credentials, else whether they are the token."""
        scheme, _, given = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return None
        given_digest = hashlib.sha256(given.strip().encode("latin-1")).digest()  # Starlette decodes headers as latin-1
        return hmac.compare_digest(given_digest, self.digest)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths:  # the API serves no websockets
            return await self.app(scope, receive, send)
        accepted = self.accepts(Headers(scope=scope).get("authorization"))
        if accepted:
            return await self.app(scope, receive, send)
        challenge = "Bearer" if accepted is None else 'Bearer error="invalid_token"'
        detail = "a bearer token is required" if accepted is None else "wrong bearer token"
        await refuse(HTTPException(401, detail, headers={"WWW-Authenticate": challenge}), scope, receive, send)


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


def one_line(exc: RequestValidationError) -> str:
    """A bad request field as ``<field>: <reason>``, like every other error here (FastAPI's own answer is a list
    that echoes the input)."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ())[1:]) or "request"
        parts.append(f"{where}: {' '.join(str(error.get('msg', 'invalid')).split())}")
    return "; ".join(parts) or "invalid request"


def create_app(
    analyzer: Analyzer,
    max_concurrent: int | None = None,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    *,
    queue: int = DEFAULT_QUEUE,
    queue_timeout: float = DEFAULT_QUEUE_TIMEOUT_S,
    upload_memory: int = DEFAULT_UPLOAD_MEMORY,
    token: str | None = None,
) -> FastAPI:
    """The API around one loaded ``analyzer`` (thread-safe, so worker threads share it): ``max_concurrent``
    analyses at once, ``queue`` more waiting up to ``queue_timeout`` s, request bodies within ``upload_memory``
    bytes (one upload within it and ``max_upload_bytes``), and with a ``token`` every route but /health guarded."""
    gate = Gate(max_concurrent or default_max_concurrent(), queue, queue_timeout, upload_memory)
    card = analyzer.card
    app = FastAPI(
        title="braintumor",
        version=__version__,
        description="Brain MRI slice analysis: tumor type, outline and area in cm². Research and education "
        "only; not a medical device.",
    )
    # the last added runs first: the token, then the size limit, then admission to the analyses
    app.add_middleware(Admission, gate=gate)
    app.add_middleware(BodyLimit, max_bytes=min(max_upload_bytes, upload_memory))  # an upload that could never fit
    if token is not None:
        app.add_middleware(BearerToken, token=token)

    @app.exception_handler(RequestValidationError)
    async def bad_field(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": one_line(exc)}, 422)

    @app.post(
        "/analyze",
        responses={
            401: {"description": "the server has a token and the request lacks it (`Authorization: Bearer …`)"},
            413: {"description": "upload over the size limit"},
            422: {
                "description": "unreadable scan, a bad field, or a `mask` the upload cannot have (`mask=seg` on a "
                "PNG, a DICOM without geometry): `detail` is one line, `<file>: <reason>` for a scan"
            },
            503: {
                "description": "busy: the wait queue is full, no analysis slot came free in time, or the uploads "
                "in progress fill the server's memory budget; see Retry-After"
            },
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
        ``mask_nifti`` (``.nii.gz`` of a NIfTI upload), the same files ``analyze --out`` writes.  Waits for an
        analysis slot when all are busy (up to the server's queue length and timeout)."""
        async with gate.slot():
            data = await file.read()
            try:
                return await run_in_threadpool(
                    analyze_bytes, analyzer, data, upload_name(file.filename), spacing_mm, mask
                )
            except ScanError as err:
                raise HTTPException(422, str(err)) from None

    @app.get("/health")
    async def health() -> dict:
        """Up, with the model it answers with (its name and the SHA-256 of each model file its card lists) and the
        load: analyses running and waiting, slots, queue length, upload memory held.  Never needs the token."""
        files = {name: entry.sha256 for name, entry in card.files.items()}
        return {"status": "ok", "model": card.name, "sha256": files, "load": gate.load()}

    @app.get("/model")
    async def model() -> dict:
        """The model card: training data and split, validation scores, calibration, files (no patient ids)."""
        return to_json(card)

    return app
