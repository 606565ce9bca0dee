"""One reading policy for untrusted files: sizes are checked against these limits *before* anything big is
allocated or inflated, and decompression is streamed with a cap.  A web server parses strangers' files, so a
small file must never turn into gigabytes of memory (decompression bombs) or into reads outside the file."""

from __future__ import annotations

import zlib

from braintumor.errors import ScanError

#: Minimum side (px) of anything we call an MRI slice; smaller inputs are refused, not upscaled.
MIN_SIDE = 16
#: Longest side (px) we decode; the network pads a slice to a square, so this bounds that square too.
MAX_SIDE = 4096
#: Largest slice we decode (16.7 Mpx; clinical MRI slices are ≤ 1024×1024).
MAX_PIXELS = MAX_SIDE * MAX_SIDE
#: Largest amount of data a file may declare or inflate to (NIfTI volume, DICOM pixel data, HDF5 dataset).
MAX_DECOMPRESSED_BYTES = 256 * 1024 * 1024
#: Largest file read at all.
MAX_FILE_BYTES = 512 * 1024 * 1024
#: the largest upload the web page and the HTTP API accept (one scan, or an expert mask)
MAX_UPLOAD_BYTES = 64 * 2**20
#: Most entries a zip of one series may hold, folders and junk included: room for ``series.MAX_SLICES`` (1000) files
#: each with the ``._`` twin a macOS Finder zip adds, plus folders.  Counting entries is the first, cheapest refusal.
MAX_ARCHIVE_MEMBERS = 2 * 1000 + 100
#: Most a zip may declare in all, uncompressed (each member is also held to ``MAX_FILE_BYTES``).
MAX_ARCHIVE_BYTES = 2 * 2**30
#: Largest uncompressed : compressed ratio of a big zip member.  Deflate reaches about 1030:1 on constant bytes
#: (zip bombs); MR slices compress 2–10:1.  A blank slice compresses like a bomb, so members under
#: ``RATIO_EXEMPT_BYTES`` are not held to it (they are too small to be a bomb).
MAX_COMPRESSION_RATIO = 200
RATIO_EXEMPT_BYTES = 4 * 2**20


def check_size(name: str, height: int, width: int) -> None:
    """Refuse slivers and decompression bombs before decoding the pixels."""
    if height * width > MAX_PIXELS:
        raise ScanError(
            name,
            f"image is {width}×{height} px, over the {MAX_PIXELS / 1e6:.1f} Mpx limit (possible decompression bomb)",
        )
    if max(height, width) > MAX_SIDE:
        raise ScanError(name, f"image is {width}×{height} px; the longest side may be at most {MAX_SIDE} px")
    if min(height, width) < MIN_SIDE:
        raise ScanError(name, f"image is {width}×{height} px; a slice must be at least {MIN_SIDE}×{MIN_SIDE}")


def check_declared_bytes(name: str, n_bytes: int, what: str) -> None:
    """Refuse a file whose header declares more data than we ever inflate."""
    if n_bytes > MAX_DECOMPRESSED_BYTES:
        raise ScanError(
            name,
            f"{what} declares {n_bytes / 2**20:.0f} MB of data, over the "
            f"{MAX_DECOMPRESSED_BYTES >> 20} MB decompressed-size limit (possible decompression bomb)",
        )


def inflate(name: str, data: bytes, wbits: int, what: str) -> bytes:
    """zlib/deflate/gzip data inflated in steps, stopping as soon as it would pass the limit."""
    stream = zlib.decompressobj(wbits)
    out = bytearray()
    step = 1 << 20
    pending = data
    while pending or not stream.eof:
        chunk = stream.decompress(pending, step)
        out += chunk
        if len(out) > MAX_DECOMPRESSED_BYTES:
            raise ScanError(
                name,
                f"{what} inflates to more than {MAX_DECOMPRESSED_BYTES >> 20} MB, the "
                "decompressed-size limit (possible decompression bomb)",
            )
        pending = stream.unconsumed_tail
        if not chunk and not pending:
            break
    return bytes(out)


#: The largest whole-scan upload the HTTP API accepts (``POST /analyze/volume``: a zipped series, a volume, the files
#: of a series); the single-slice routes keep ``MAX_UPLOAD_BYTES``.
MAX_VOLUME_UPLOAD_BYTES = 256 * 2**20
