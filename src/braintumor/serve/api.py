"""``POST /analyze``, ``POST /analyze/volume``, ``GET /health``, ``GET /model``: one model per process, shared by
every request.

An upload is analysed from bytes through ``load_scan`` (a whole scan through ``read_uploads``), so strangers' files
meet the same hostile-input policy as the CLI and the page.  Starlette keeps an upload in memory up to 1 MB and in a
temporary file (deleted with the request) beyond that; nothing is logged but uvicorn's access lines (client
address, method, path, status).

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
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from braintumor import __version__
from braintumor.bundle import Task, require_task, to_json
from braintumor.errors import ScanError
from braintumor.imageio import load_scan
from braintumor.imageio.archive import read_uploads
from braintumor.imageio.limits import MAX_UPLOAD_BYTES, MAX_VOLUME_UPLOAD_BYTES
from braintumor.imageio.registry import format_name
from braintumor.imageio.writers import MASK_KINDS, MASK_WRITERS, MaskError, mask_description, volume_masks
from braintumor.inference import Analysis, Analyzer
from braintumor.inference.volume import measure

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy as np

    from braintumor.imageio.series import Volume

#: Seconds a client is told to wait when the server refuses work it cannot take now (503).
RETRY_AFTER_S = 1
#: Requests that may wait for an analysis slot (``--queue``), and for how long each (``--queue-timeout``).
DEFAULT_QUEUE, DEFAULT_QUEUE_TIMEOUT_S = 64, 30.0
#: Bytes of request bodies held at once, waiting or being analysed (``--upload-memory-mb``).
DEFAULT_UPLOAD_MEMORY = 512 * 2**20
#: Routes a token does not guard: a load balancer's or supervisor's probe needs no secret.
OPEN_PATHS = ("/health",)
#: The whole-scan route: its own, larger body limit (a series is many slices).
VOLUME_PATH = "/analyze/volume"
#: Routes whose requests go through the ``Gate``.
ANALYSIS_PATHS = ("/analyze", VOLUME_PATH)
#: Series named in the refusal of an upload that holds several.
SERIES_SHOWN = 5


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
    """ASGI middleware: 413 for a request body over ``max_bytes``, or over the route's own limit in ``paths``.  A
    declared Content-Length is checked before anything is read, and the bytes are counted as they arrive, so a
    missing or lying one cannot get past it."""

    def __init__(self, app: ASGIApp, max_bytes: int, paths: dict[str, int] | None = None):
        self.app, self.max_bytes, self.paths = app, max_bytes, dict(paths or {})

    @staticmethod
    def too_large(limit: int) -> str:
        return f"request body is larger than the {limit / 2**20:g} MB upload limit"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.paths.get(scope["path"], self.max_bytes)
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            return await JSONResponse({"detail": self.too_large(limit)}, 413)(scope, receive, send)
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:  # FastAPI passes an HTTPException from the body reader on as is
                raise HTTPException(413, self.too_large(limit))
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

    def load(self) -> dict[str, Any]:
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


def b64(data: bytes) -> str:
    """A file in a JSON answer."""
    return base64.b64encode(data).decode("ascii")


def mask_png(mask: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(mask * 255).save(buffer, "PNG")
    return b64(buffer.getvalue())


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
VOLUME_MASK_HELP = (
    "Add the 3-D mask to the answer, base64-encoded: 'nifti' as `mask_nifti`, a gzipped NIfTI (.nii.gz) of uint8 "
    "0/1 (a NIfTI upload's own shape, header and affine; a DICOM series placed by its positions and orientation); "
    "'seg' as `mask_seg`, one multi-frame DICOM Segmentation referencing every instance of the series (DICOM "
    "uploads).  A mask the upload cannot have is a 422."
)
#: The refusals every analysis route shares (OpenAPI ``responses``); each route adds its own 422.
REFUSALS: dict[int | str, dict[str, Any]] = {
    401: {"description": "the server has a token and the request lacks it (`Authorization: Bearer …`)"},
    413: {"description": "upload over the size limit"},
    503: {
        "description": "busy: the wait queue is full, no analysis slot came free in time, or the uploads in "
        "progress fill the server's memory budget; see Retry-After"
    },
}
#: ``spacing_mm``, the form field of both analysis routes.
Spacing = Annotated[
    float | None, Form(gt=0, allow_inf_nan=False, description="pixel size (mm) for files that carry none")
]


def check_mask_kind(kind: str | None, fmt: str | None, name: str) -> None:
    """A ``ScanError`` (→ 422) for a mask the upload's format has no writer for, before any analysis."""
    if kind in MASK_KINDS and MASK_KINDS[kind] != fmt:
        needs = format_name(MASK_KINDS[kind])
        raise ScanError(name, f"mask={kind} needs a {needs} upload; this is a {format_name(fmt)}")


def analyze_bytes(
    analyzer: Analyzer, data: bytes, name: str, spacing_mm: float | None, mask: str | None
) -> dict[str, Any]:
    """One ``analyze --json`` line for an upload, with ``mask_<kind>`` when ``mask`` asks (runs in a worker thread).
    Raises ``ScanError`` for an unreadable upload and for a mask it cannot have."""
    scan = load_scan(data, name=name)
    check_mask_kind(mask, scan.format, name)
    result = analyzer.analyze(scan, spacing_mm=spacing_mm, name=name)
    row = result.row()
    if mask is None:
        return row
    assert isinstance(result, Analysis), "the API serves models that outline and classify (create_app checks)"
    if mask == "png":
        row["mask_png"] = mask_png(result.mask)
        return row
    writer = MASK_WRITERS[MASK_KINDS[mask]]
    try:
        encoded = writer.to_bytes(result.scan, result.mask, mask_description(result.label, result.confidence))
    except MaskError as err:  # e.g. a DICOM without the geometry a SEG lies on
        raise ScanError(name, str(err)) from None
    row[f"mask_{writer.kind}"] = b64(encoded)
    return row


def one_volume(volumes: list[Volume], files: list[tuple[str, bytes]]) -> Volume:
    """The one whole scan of an upload, or a ``ScanError`` naming the series when it holds several."""
    if len(volumes) == 1:
        return volumes[0]
    shown = [f"{v.name} ({v.n_slices} slices{f', series {v.series_uid}' if v.series_uid else ''})" for v in volumes]
    more = f" and {len(shown) - SERIES_SHOWN} more" if len(shown) > SERIES_SHOWN else ""
    name = files[0][0] if len(files) == 1 else f"{len(files)} files"
    reason = f"upload one series at a time: found {len(volumes)} series: {'; '.join(shown[:SERIES_SHOWN])}{more}"
    raise ScanError(name, reason)


def analyze_volume_bytes(
    analyzer: Analyzer, files: list[tuple[str, bytes]], spacing_mm: float | None, mask: str | None
) -> dict[str, Any]:
    """``analyze --json``'s line for one whole scan (its volume row and ``slice_results``), with ``mask_<kind>``
    when ``mask`` asks (runs in a worker thread).  Raises ``ScanError`` for an unreadable upload, several series,
    and a mask it cannot have."""
    volume = one_volume(read_uploads(files), files)
    if mask == "seg" and volume.format != "dicom":  # a NIfTI mask suits both formats
        raise ScanError(volume.name, f"mask=seg needs a DICOM series; this is a {format_name(volume.format)}")
    result = measure(volume, analyzer, spacing_mm=spacing_mm)
    row = {**result.row(), "slice_results": result.slice_rows()}
    if mask is None:
        return row
    made, why_not = volume_masks(volume, result.masks(), mask_description(result.label, result.confidence), [mask])
    if mask not in made:
        raise ScanError(volume.name, "; ".join(why_not) or f"no {mask} mask")
    row[f"mask_{mask}"] = b64(made[mask])
    return row


async def analysed(work: Callable[..., dict[str, Any]], *args: object) -> dict[str, Any]:
    """``work(*args)`` in a worker thread; a ``ScanError`` becomes the 422, one line."""
    try:
        return await run_in_threadpool(work, *args)
    except ScanError as err:
        raise HTTPException(422, str(err)) from None


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
    max_volume_upload_bytes: int = MAX_VOLUME_UPLOAD_BYTES,
    queue: int = DEFAULT_QUEUE,
    queue_timeout: float = DEFAULT_QUEUE_TIMEOUT_S,
    upload_memory: int = DEFAULT_UPLOAD_MEMORY,
    token: str | None = None,
) -> FastAPI:
    """The API around one loaded ``analyzer`` (thread-safe, so worker threads share it): ``max_concurrent``
    analyses at once, ``queue`` more waiting up to ``queue_timeout`` s, request bodies within ``upload_memory``
    bytes (one upload within it and ``max_upload_bytes``, a whole scan's ``max_volume_upload_bytes``), and with a
    ``token`` every route but /health guarded."""
    require_task(
        analyzer.card.name,
        analyzer.card,
        Task.SEGMENT_AND_CLASSIFY,
        "the API serves a model that outlines and classifies",
    )
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
    volume_limit = min(max_volume_upload_bytes, upload_memory)  # no upload that could never fit the budget
    app.add_middleware(BodyLimit, max_bytes=min(max_upload_bytes, upload_memory), paths={VOLUME_PATH: volume_limit})
    if token is not None:
        app.add_middleware(BearerToken, token=token)

    @app.exception_handler(RequestValidationError)
    async def bad_field(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": one_line(exc)}, 422)

    @app.post(
        "/analyze",
        responses={
            **REFUSALS,
            422: {
                "description": "unreadable scan, a bad field, or a `mask` the upload cannot have (`mask=seg` on a "
                "PNG, a DICOM without geometry): `detail` is one line, `<file>: <reason>` for a scan"
            },
        },
    )
    async def analyze(
        file: UploadFile = File(description="one slice: PNG, JPEG, TIFF, BMP, DICOM, NIfTI, .mat"),
        spacing_mm: Spacing = None,
        mask: Literal["png", "seg", "nifti"] | None = Query(None, description=MASK_HELP),
    ) -> dict[str, Any]:
        """The JSON object one line of ``braintumor analyze --json`` prints; with ``mask``, plus the mask as a
        base64 string: ``mask_png`` (PNG, 0/255), ``mask_seg`` (DICOM SEG file of a DICOM upload) or
        ``mask_nifti`` (``.nii.gz`` of a NIfTI upload), the same files ``analyze --out`` writes.  Waits for an
        analysis slot when all are busy (up to the server's queue length and timeout)."""
        async with gate.slot():
            data = await file.read()
            return await analysed(analyze_bytes, analyzer, data, upload_name(file.filename), spacing_mm, mask)

    @app.post(
        VOLUME_PATH,
        summary="Measure a whole scan: tumor volume, diameters, tumor slices",
        responses={
            **REFUSALS,
            422: {
                "description": "an unreadable file or zip (a hostile one included), files that are not one volume, "
                "several series in one upload, a bad field, or a `mask` the upload cannot have: `detail` is one "
                "line, `<file>: <reason>`"
            },
        },
    )
    async def analyze_volume(
        files: list[UploadFile] = File(
            description="one whole scan: a .zip of a DICOM series, a NIfTI volume, a multi-frame DICOM, or the "
            f"DICOM files of one series (up to {volume_limit / 2**20:g} MB in all)"
        ),
        spacing_mm: Spacing = None,
        mask: Literal["seg", "nifti"] | None = Query(None, description=VOLUME_MASK_HELP),
    ) -> dict[str, Any]:
        """The JSON object ``braintumor analyze --json`` prints for a whole scan: type and confidence (the tumor
        slices' probabilities weighted by their tumor area), `volume_cm3`, the two diameters on the largest slice,
        `tumor_slices` (numbered from 1), warnings, and `slice_results`, each slice's `/analyze` object with its
        `slice` number.  With ``mask``, plus the 3-D mask as a base64 string (`mask_nifti`, `mask_seg`), the files
        ``analyze --out`` writes under volumes/.  One series per request; waits for an analysis slot like
        `/analyze`."""
        async with gate.slot():
            uploads = [(upload_name(f.filename), await f.read()) for f in files]
            return await analysed(analyze_volume_bytes, analyzer, uploads, spacing_mm, mask)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Up, with the model it answers with (its name, the SHA-256 of each model file its card lists and, for an
        ensemble, of each member's card, which pins that member's files) and the load: analyses running and
        waiting, slots, queue length, upload memory held.  Never needs the token."""
        files = {name: entry.sha256 for name, entry in card.files.items()}
        members = {m.name: m.card_sha256 for m in card.members}
        return {"status": "ok", "model": card.name, "sha256": files, "members": members, "load": gate.load()}

    @app.get("/model")
    async def model() -> dict[str, Any]:
        """The model card: training data and split, validation scores, calibration, files (no patient ids)."""
        body: dict[str, Any] = to_json(card)  # a card is a dataclass: a JSON object
        return body

    return app
