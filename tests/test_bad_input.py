"""Bad input: one ScanError naming the file and the reason; the CLI prints one line and exits 2."""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest

from braintumor.cli import main
from braintumor.imageio import ScanError, load_scan
from conftest import png_bytes, write_dicom


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width × height (a decompression bomb needs no real pixels)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _jpeg() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def _nifti_4d() -> bytes:
    import nibabel as nib

    return nib.Nifti1Image(np.zeros((8, 8, 4, 3), np.float32), np.eye(4)).to_bytes()


def _dicom_without_pixels(tmp_path) -> bytes:
    return write_dicom(tmp_path / "np.dcm", np.zeros((32, 32)), with_pixels=False).read_bytes()


def _dicom_jpegls(tmp_path) -> bytes:
    """A DICOM declaring JPEG-LS compression, which needs a decoder plugin that is not installed."""
    import pydicom
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGLSLossless

    path = write_dicom(tmp_path / "c.dcm", np.zeros((32, 32)))
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xf7" + b"\0" * 60])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path.read_bytes()


BAD = {
    "empty.png": (lambda t: b"", "empty"),
    "truncated.png": (
        lambda t: png_bytes(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))[:200],
        "cannot read",
    ),
    "corrupt.png": (lambda t: b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "cannot read"),
    "jpeg_named.png": (lambda t: _jpeg(), "extension"),
    "notes.png": (lambda t: b"patient notes, not an image\n" * 10, "not a raster image"),
    "random.jpg": (lambda t: np.random.default_rng(1).bytes(4096), "not a raster image"),
    "tiny.png": (lambda t: png_bytes(np.zeros((1, 1), np.uint8)), "at least"),
    "bomb.png": (lambda t: _png_header_only(30000, 30000), "decompression bomb"),
    "noimage.dcm": (_dicom_without_pixels, "no pixel data"),
    "jpegls.dcm": (_dicom_jpegls, "needs a decoder"),
    "volume4d.nii": (lambda t: _nifti_4d(), "4 dimensions"),
    "notes.txt": (lambda t: b"hello", "unsupported file type"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_input_gives_one_line_scan_error(tmp_path, name):
    make, reason = BAD[name]
    path = tmp_path / name
    path.write_bytes(make(tmp_path))
    with pytest.raises(ScanError) as info:
        load_scan(path)
    message = str(info.value)
    assert message.startswith(str(path)) and reason in message
    assert "\n" not in message


@pytest.mark.parametrize("name", sorted(BAD))
def test_cli_prints_one_line_and_exits_2(tmp_path, name, capsys):
    make, reason = BAD[name]
    path = tmp_path / name
    path.write_bytes(make(tmp_path))
    assert main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and reason in err and "Traceback" not in err


def test_cli_subprocess_has_no_traceback(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(30000, 30000))
    done = subprocess.run(
        [sys.executable, "-m", "braintumor.cli", "inspect", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "decompression bomb" in done.stderr
    assert done.stdout == ""


def test_missing_file():
    with pytest.raises(ScanError, match="no such file"):
        load_scan("/nonexistent/slice.png")
