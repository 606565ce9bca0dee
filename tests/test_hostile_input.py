"""Hostile and unusual files, each built here: nothing read outside the upload, bounded memory, DICOM and
NIfTI edge cases read the way the standards say."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from braintumor.imageio import ScanError, load_scan
from braintumor.imageio.limits import MAX_DECOMPRESSED_BYTES
from conftest import write_dicom, write_figshare_mat

SECRET = b"root:x:0:0:server secret that must never come back as pixels\n" * 200


def _mat_with(tmp_path: Path, build) -> Path:
    """A Figshare-layout v7.3 file whose 'cjdata' group is filled by ``build(h5py_file, group)``."""
    import h5py

    path = tmp_path / "hostile.mat"
    with h5py.File(path, "w", userblock_size=512) as f:
        build(f, f.create_group("cjdata"))
    with open(path, "r+b") as f:
        f.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64")
    return path


@pytest.fixture
def secret_file(tmp_path) -> Path:
    path = tmp_path / "server-secret.txt"
    path.write_bytes(SECRET)
    return path


def test_hdf5_external_storage_is_refused(tmp_path, secret_file):
    def build(f, g):
        g.create_dataset("image", shape=(64, 64), dtype=np.uint8, external=[(str(secret_file), 0, 64 * 64)])

    with pytest.raises(ScanError, match="outside the file"):
        load_scan(_mat_with(tmp_path, build))


def test_hdf5_virtual_dataset_is_refused(tmp_path, secret_file):
    import h5py

    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["data"] = np.arange(64 * 64, dtype=np.uint8).reshape(64, 64)

    def build(f, g):
        layout = h5py.VirtualLayout(shape=(64, 64), dtype=np.uint8)
        layout[:] = h5py.VirtualSource(str(other), "data", shape=(64, 64))
        g.create_virtual_dataset("image", layout)

    with pytest.raises(ScanError, match="outside the file"):
        load_scan(_mat_with(tmp_path, build))


@pytest.mark.parametrize("kind", ["external", "soft"])
def test_hdf5_links_are_refused(tmp_path, kind):
    import h5py

    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["image"] = np.ones((64, 64), np.uint8)

    def build(f, g):
        f["elsewhere"] = np.ones((64, 64), np.uint8)
        g["image"] = h5py.ExternalLink(str(other), "/image") if kind == "external" else h5py.SoftLink("/elsewhere")

    with pytest.raises(ScanError, match="Link"):
        load_scan(_mat_with(tmp_path, build))


def test_figshare_mat_still_reads(tmp_path):
    image = np.arange(64 * 64, dtype=np.int16).reshape(64, 64)
    scan = load_scan(write_figshare_mat(tmp_path / "ok.mat", image, image > 100))
    assert np.array_equal(scan.pixels, image) and scan.meta["patient_id"] == "MR040240B"


def _peak_rss_mb(code: str, timeout: float = 30) -> tuple[float, str]:
    """Run ``code`` in a fresh interpreter; its peak RSS (MB) and its last output line.  The peak is VmHWM, the
    child's own address space: Linux's ru_maxrss keeps the parent's peak across fork + exec (a big pytest
    process would be counted)."""
    peak = "[int(line.split()[1]) for line in open('/proc/self/status') if line.startswith('VmHWM')][0] / 1024"
    wrapper = f"import sys\n{code}\nprint({peak})"
    done = subprocess.run([sys.executable, "-c", wrapper], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    return float(lines[-1]), "\n".join(lines[:-1])


def _refused_within_memory(path: Path, limit_mb: float = 500) -> str:
    """Load ``path`` in a subprocess: it must be refused with one ScanError line, peak RSS under ``limit_mb``."""
    code = (
        "from braintumor.imageio import ScanError, load_scan\n"
        f"try:\n    load_scan({str(path)!r})\n    print('ANALYSED')\n"
        "except ScanError as err:\n    print('REFUSED', err)"
    )
    peak, out = _peak_rss_mb(code)
    assert peak < limit_mb, f"peak RSS {peak:.0f} MB reading {path.name}"
    assert out.startswith("REFUSED"), out
    return out


def _gzip_stream(head: bytes, zeros: int) -> bytes:
    """``head`` followed by ``zeros`` zero bytes, gzip-compressed chunk by chunk (never held inflated)."""
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=9) as gz:
        gz.write(head)
        block = bytes(1 << 24)
        for _ in range(zeros >> 24):
            gz.write(block)
    return buffer.getvalue()


def _nifti_header(shape, dtype=np.float32) -> bytes:
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_qform(np.eye(4), code=1)
    return header.binaryblock + b"\0" * 4  # vox_offset 352


def test_nifti_gz_declaring_gigabytes_is_refused_in_bounded_memory(tmp_path):
    path = tmp_path / "bomb.nii.gz"
    path.write_bytes(_gzip_stream(_nifti_header((1024, 1024, 512)), 1 << 30))  # 2 GiB declared, 1 GiB inflated
    assert path.stat().st_size < 3 << 20
    assert "decompressed-size limit" in _refused_within_memory(path)


def test_nifti_gz_with_gigabytes_beyond_its_data_reads_only_the_slice(tmp_path):
    """A small declared volume followed by a gigabyte of padding: only the requested slice is inflated."""
    path = tmp_path / "padded.nii.gz"
    path.write_bytes(_gzip_stream(_nifti_header((256, 256, 4)) + np.ones((4, 256, 256), np.float32).tobytes(), 1 << 30))
    peak, out = _peak_rss_mb(f"from braintumor.imageio import load_scan\nprint(load_scan({str(path)!r}).shape)")
    assert out == "(256, 256)" and peak < 500, (out, peak)


def test_mat_with_chunked_40000_squared_dataset_is_refused(tmp_path):
    def build(f, g):
        g.create_dataset("image", shape=(40000, 40000), dtype=np.int16, chunks=(1000, 1000), compression="gzip")

    path = _mat_with(tmp_path, build)
    assert path.stat().st_size < 100_000
    assert "Mpx limit" in _refused_within_memory(path)


def test_mat_v5_zlib_bomb_is_refused(tmp_path):
    """A MATLAB v5 file whose compressed element inflates past the limit."""
    import struct

    header = b"MATLAB 5.0 MAT-file, hostile".ljust(116, b" ") + b"\0" * 8 + struct.pack("<H", 0x0100) + b"IM"
    packer = zlib.compressobj(9)
    body = packer.compress(struct.pack("<II", 14, MAX_DECOMPRESSED_BYTES + (1 << 20)))
    block = bytes(1 << 24)
    for _ in range((MAX_DECOMPRESSED_BYTES >> 24) + 2):
        body += packer.compress(block)
    body += packer.flush()
    path = tmp_path / "bomb.mat"
    path.write_bytes(header + struct.pack("<II", 15, len(body)) + body)
    assert "decompressed-size limit" in _refused_within_memory(path)


def _deflated_dicom(tmp_path: Path, frames: int, side: int, fill: int = 0) -> Path:
    """A Deflated Explicit VR Little Endian multi-frame DICOM, built without holding its pixels inflated."""
    import pydicom
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    plain = pydicom.dcmread(
        write_dicom(tmp_path / "plain.dcm", np.zeros((side, side), np.uint16), frames=frames, with_pixels=False)
    )
    plain.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    meta = DicomBytesIO()
    meta.is_little_endian, meta.is_implicit_VR = True, False
    write_file_meta_info(meta, plain.file_meta)
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, plain)
    n_bytes = frames * side * side * 2
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    deflated = packer.compress(body.getvalue() + b"\xe0\x7f\x10\x00OW\0\0" + n_bytes.to_bytes(4, "little"))
    frame = np.full((side, side), fill, np.uint16).tobytes()
    for _ in range(frames):
        deflated += packer.compress(frame)
    deflated += packer.flush()
    path = tmp_path / "deflated.dcm"
    path.write_bytes(b"\0" * 128 + b"DICM" + meta.getvalue() + deflated)
    return path


def test_deflated_multiframe_dicom_bomb_is_refused(tmp_path):
    path = _deflated_dicom(tmp_path, frames=256, side=2048)  # 2 GiB of pixels in a few MB
    assert path.stat().st_size < 4 << 20
    assert "limit" in _refused_within_memory(path)


def test_small_deflated_dicom_reads_one_frame(tmp_path):
    scan = load_scan(_deflated_dicom(tmp_path, frames=3, side=64, fill=7))
    assert scan.shape == (64, 64) and scan.n_slices == 3 and scan.slice_index == 1 and scan.pixels.max() == 7


def test_dicom_with_tiff_preamble_is_dicom(tmp_path):
    """PS3.10 §7.1 lets the preamble hold a TIFF header ("dual-personality" files); DICM at 128 wins."""
    path = write_dicom(tmp_path / "dual.dcm", np.full((32, 32), 5, np.uint16))
    data = bytearray(path.read_bytes())
    data[:8] = b"II*\x00\x08\x00\x00\x00"
    path.write_bytes(bytes(data))
    scan = load_scan(path)
    assert scan.meta["format"] == "DICOM" and scan.pixels.max() == 5


def _axial_dicom(tmp_path: Path, pixels: np.ndarray, spacing=(0.5, 0.7)) -> Path:
    """Axial DICOM in the usual orientation: columns toward the patient's left, rows toward posterior."""
    import pydicom

    path = write_dicom(tmp_path / "axial.dcm", pixels, spacing=spacing)
    ds = pydicom.dcmread(path)
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [0, 0, 0]
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def asymmetric() -> np.ndarray:
    pixels = np.zeros((48, 64), np.uint16)
    pixels[5:12, 3:9] = 900  # a mark near the top-left corner of the displayed image
    pixels[30:40, 50:60] = 400
    return pixels


def test_nifti_ras_las_and_sagittal_show_as_dicom_does(tmp_path, asymmetric):
    import nibabel as nib

    dicom = load_scan(_axial_dicom(tmp_path, asymmetric))
    # DICOM column c lies toward the patient's left (RAS x falls), row r toward posterior (RAS y falls)
    ras = asymmetric[::-1, ::-1].T.astype(np.float32)  # array (x, y) in RAS order
    volumes = {
        "ras": (ras[:, :, None], np.diag([0.7, 0.5, 5.0, 1.0])),
        "las": (ras[::-1, :, None], np.diag([-0.7, 0.5, 5.0, 1.0])),
    }
    # the same plane stored sagittally-ordered: array axes (y, x, z)... as a volume whose slices are axial
    yxz = np.transpose(ras[:, :, None], (1, 0, 2))
    volumes["transposed"] = (yxz, np.array([[0, 0.7, 0, 0], [0.5, 0, 0, 0], [0, 0, 5.0, 0], [0, 0, 0, 1]]))
    for name, (data, affine) in volumes.items():
        path = tmp_path / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(data, affine), path)
        scan = load_scan(path)
        assert np.array_equal(scan.pixels, dicom.pixels), name
        assert scan.spacing_mm == pytest.approx(dicom.spacing_mm), name


def test_sagittal_nifti_shows_as_a_sagittal_dicom(tmp_path, asymmetric):
    """Sagittal DICOM: columns toward posterior, rows toward inferior; the NIfTI slices along x."""
    import nibabel as nib
    import pydicom

    path = write_dicom(tmp_path / "sag.dcm", asymmetric, spacing=(0.6, 0.8))
    ds = pydicom.dcmread(path)
    ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    ds.save_as(path, enforce_file_format=True)
    dicom = load_scan(path)
    # array axes (y, z, x): column c → posterior (RAS y falls), row r → inferior (RAS z falls)
    yz = asymmetric[::-1, ::-1].T.astype(np.float32)
    affine = np.array([[0, 0, 2.0, 0], [0.8, 0, 0, 0], [0, 0.6, 0, 0], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(np.repeat(yz[:, :, None], 3, axis=2), affine), tmp_path / "sag.nii.gz")
    scan = load_scan(tmp_path / "sag.nii.gz")
    assert scan.meta["orientation"][2] in "LR"
    assert np.array_equal(scan.pixels, dicom.pixels) and scan.spacing_mm == pytest.approx(dicom.spacing_mm)


@pytest.mark.parametrize("unit, factor", [("micron", 0.001), ("meter", 1000.0), ("mm", 1.0)])
def test_nifti_units_become_mm(tmp_path, unit, factor):
    import nibabel as nib

    image = nib.Nifti1Image(np.ones((40, 40, 3), np.float32), np.diag([500.0, 500.0, 5000.0, 1.0]))
    image.header.set_xyzt_units(xyz=unit)
    nib.save(image, tmp_path / "u.nii")
    scan = load_scan(tmp_path / "u.nii")
    assert scan.spacing_mm == pytest.approx((500 * factor, 500 * factor)) and unit in scan.spacing_source


def test_nifti_without_units_says_it_assumed_mm(tmp_path):
    import nibabel as nib

    image = nib.Nifti1Image(np.ones((40, 40), np.float32), np.diag([0.5, 0.5, 1.0, 1.0]))
    image.header.set_xyzt_units(xyz="unknown")
    nib.save(image, tmp_path / "n.nii")
    scan = load_scan(tmp_path / "n.nii")
    assert scan.spacing_mm == pytest.approx((0.5, 0.5)) and "not set" in scan.spacing_source


def test_analyze_refuses_a_bomb_in_one_line_and_goes_on(tmp_path):
    """The whole command on a hostile file and a good one: one line for the bomb, a row for the good file."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "bomb.nii.gz").write_bytes(_gzip_stream(_nifti_header((2048, 2048, 256)), 1 << 28))
    write_dicom(folder / "good.dcm", np.full((64, 64), 3, np.uint16))
    done = subprocess.run(
        [sys.executable, "-m", "braintumor.cli", "analyze", str(folder), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    by_file = {Path(r["file"]).name: r for r in rows}
    assert "decompressed-size limit" in by_file["bomb.nii.gz"]["error"]
    assert by_file["good.dcm"]["error"] is None and "Traceback" not in done.stderr


def test_a_sliver_too_long_to_pad_is_refused(tmp_path):
    """A 40×65539 image (found by fuzzing a TIFF) would be padded to a 17 GB square before resizing."""
    from PIL import Image

    Image.fromarray(np.zeros((5000, 20), np.uint8)).save(tmp_path / "sliver.png")
    with pytest.raises(ScanError, match="longest side"):
        load_scan(tmp_path / "sliver.png")
