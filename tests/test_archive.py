"""Zipped DICOM series (``imageio.archive``): read like the same files given one by one, and every hostile zip
refused in one line naming the file and the limit, cheaply (the zips are built in memory; bombs are declared, or
deflated in 1 MB steps, never held inflated)."""

from __future__ import annotations

import io
import struct
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from braintumor.errors import ScanError
from braintumor.imageio import limits, series
from braintumor.imageio.archive import read_uploads, zip_members
from braintumor.imageio.series import read_series
from conftest import png_bytes
from test_volume import dicom_series, ellipsoid, one_line

MB = 2**20


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> list[Path]:
    """An oblique series of 24 slices, in shuffled order, slice order reversed against the instance numbers."""
    return dicom_series(tmp_path_factory.mktemp("series"), ellipsoid())


def zipped(entries: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as zf:
        for path, data in entries.items():
            zf.writestr(path, data)
    return buffer.getvalue()


def declared(data: bytes, **sizes: int) -> bytes:
    """The zip with the central directory's uncompressed size of some members (by name) replaced."""
    out = bytearray(data)
    end = data.rfind(b"PK\x05\x06")
    count, _, offset = struct.unpack_from("<HLL", data, end + 10)
    for _ in range(count):
        n, m, k = struct.unpack_from("<3H", data, offset + 28)
        path = data[offset + 46 : offset + 46 + n].decode()
        if path in sizes:
            struct.pack_into("<L", out, offset + 24, sizes[path])
        offset += 46 + n + m + k
    return bytes(out)


def refused(name: str, data: bytes) -> str:
    with pytest.raises(ScanError) as err:
        list(zip_members(name, data))
    return one_line(err)


def assert_same_volume(got: series.Volume, want: series.Volume) -> None:
    assert got.instance_uids == want.instance_uids  # the same slices in the same order
    assert got.spacing_mm == want.spacing_mm and got.slice_spacing_mm == pytest.approx(want.slice_spacing_mm)
    assert np.allclose(got.affine, want.affine) and got.gaps == want.gaps
    assert got.slice_positions_mm == pytest.approx(want.slice_positions_mm)
    assert np.array_equal(got.array(), want.array())


@pytest.mark.parametrize("folder", ["", "MR/T1 axial/"], ids=["top", "nested"])
def test_a_zipped_series_reads_as_its_files(files, folder):
    [direct] = read_series(files)
    entries = {f"{folder}{p.name}": p.read_bytes() for p in files}
    entries.update({"__MACOSX/._x.dcm": b"\0\5\26\7", f"{folder}._im.dcm": b"\0", f"{folder}.DS_Store": b"x"})
    entries.update({"DICOMDIR": b"x", "Thumbs.db": b"x"})
    data = zipped(entries)
    [volume] = read_uploads([("exam.zip", data)])
    assert_same_volume(volume, direct)
    assert volume.name == f"exam.zip/{folder}".rstrip("/")
    assert {s.name for s in volume.slices} == {f"exam.zip/{folder}{p.name}" for p in files}
    assert [name for name, _ in zip_members("exam.zip", data)] == [f"exam.zip/{folder}{p.name}" for p in files]


def test_uploads_mix_zips_and_files_and_a_stored_zip_reads_too(files):
    [direct] = read_series(files)
    half = len(files) // 2
    stored = zipped({p.name: p.read_bytes() for p in files[:half]}, zipfile.ZIP_STORED)
    [volume] = read_uploads([("a.ZIP", stored), *((p.name, p.read_bytes()) for p in files[half:])])
    assert_same_volume(volume, direct)


def test_members_are_inflated_one_at_a_time(files):
    """The policy is checked at once; each member is inflated whole only when it is asked for."""
    data = bytearray(zipped({p.name: p.read_bytes() for p in files[:3]}, zipfile.ZIP_STORED))
    data[data.rfind(b"DICM") + 100] ^= 0xFF  # the last member is corrupt past its first bytes
    members = zip_members("s.zip", bytes(data))
    assert [next(members)[0], next(members)[0]] == [f"s.zip/{p.name}" for p in files[:2]]
    with pytest.raises(ScanError, match=f"s.zip/{files[2].name}: cannot be inflated"):
        next(members)


def traced(work):
    """``work()`` and the peak of the memory Python allocated while it ran."""
    tracemalloc.start()
    try:
        return work(), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_declared_bomb_is_refused_from_the_central_directory():
    data = declared(zipped({"a/bomb.dcm": bytes(1000)}), **{"a/bomb.dcm": 2**30})
    text, peak = traced(lambda: refused("bomb.zip", data))
    assert text.startswith("bomb.zip/a/bomb.dcm: declares 1024 MB") and "512 MB file size limit" in text, text
    assert peak < 200 * MB


def test_a_deflate_bomb_is_refused_by_its_ratio():
    """300 MB of zeros deflate to about 300 kB: a real bomb, built and refused without ever holding it."""

    def build_and_read() -> str:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf, zf.open("z.dcm", "w") as f:
            for _ in range(300):
                f.write(bytes(MB))
        return refused("bomb.zip", buffer.getvalue())

    text, peak = traced(build_and_read)
    assert text.startswith("bomb.zip/z.dcm: inflates") and f"over {limits.MAX_COMPRESSION_RATIO}:1" in text, text
    assert peak < 200 * MB


def test_a_member_larger_than_it_declares_is_cut_at_its_size(files):
    """A DICOM head then 100 MB of zeros, declared 1 MB: the read stops at 1 MB and the CRC refuses it."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf, zf.open("liar.dcm", "w") as f:
        f.write(files[0].read_bytes())
        for _ in range(100):
            f.write(bytes(MB))
    data = declared(buffer.getvalue(), **{"liar.dcm": MB})
    text, peak = traced(lambda: refused("liar.zip", data))
    assert text.startswith("liar.zip/liar.dcm: cannot be inflated") and "CRC" in text, text
    assert peak < 20 * MB


def test_too_much_declared_in_all_is_refused():
    sizes = {f"s{k}.dcm": 400 * MB for k in range(6)}  # each under the file limit, 2.3 GiB together
    text = refused("big.zip", declared(zipped(dict.fromkeys(sizes, b"x")), **sizes))
    assert text.startswith("big.zip: zip declares 2400 MB") and "2048 MB limit" in text, text


@pytest.mark.parametrize("path", ["../evil.dcm", "/abs.dcm", "a/../../evil.dcm", "..\\evil.dcm", "C:/x.dcm"])
def test_a_path_leaving_the_archive_is_refused(files, path):
    text = refused("up.zip", zipped({"ok.dcm": files[0].read_bytes(), path: files[1].read_bytes()}))
    assert (
        text == f"up.zip/{path.replace(chr(92), '/')}: path leads out of the archive (absolute, drive letter or '..')"
    )


def test_ten_thousand_tiny_files_are_refused_quickly():
    data = zipped({f"f{k}.dcm": b"x" for k in range(10_000)}, zipfile.ZIP_STORED)
    text = refused("many.zip", data)  # from the entry count alone, before zipfile parses 10 000 entries
    assert text == "many.zip: zip holds 10000 entries; the zip of a series may hold at most 2100", text


def test_the_entry_limit_leaves_room_for_a_finder_zip_of_the_largest_series():
    """A macOS Finder zip has a ``._`` twin for every file: the largest series read must still fit."""
    assert limits.MAX_ARCHIVE_MEMBERS >= 2 * series.MAX_SLICES


@pytest.mark.parametrize(
    ("member", "content"),
    [("scan.png", png_bytes(np.zeros((32, 32), np.uint8))), ("notes.txt", b"patient notes"), ("noext", b"")],
)
def test_a_member_that_is_not_dicom_is_refused(files, member, content):
    text = refused("s.zip", zipped({"a.dcm": files[0].read_bytes(), member: content}))
    assert text == f"s.zip/{member}: is not a DICOM file: a zip holds one DICOM series"


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"not a zip at all", "s.zip: not a readable zip file (BadZipFile"),
        (zipped({}), "s.zip: zip holds no DICOM file"),
        (zipped({"folder/": b"", "__MACOSX/._a.dcm": b"x"}), "s.zip: zip holds no DICOM file"),
    ],
    ids=["not-a-zip", "empty", "only-junk"],
)
def test_not_a_zip_and_an_empty_zip_are_refused(data, words):
    assert refused("s.zip", data).startswith(words)


def test_encrypted_and_unusual_compression_are_refused(files):
    data = bytearray(zipped({"a.dcm": files[0].read_bytes()}))
    central = data.rfind(b"PK\x01\x02")
    data[central + 8] |= 1  # the encryption flag
    assert refused("e.zip", bytes(data)) == "e.zip/a.dcm: is encrypted: upload the files unencrypted"
    text = refused("b.zip", zipped({"a.dcm": files[0].read_bytes()}, zipfile.ZIP_BZIP2))
    assert text == "b.zip/a.dcm: uses compression method 12; only stored or deflated are read"


def test_a_corrupt_member_is_refused_in_one_line(files):
    data = bytearray(zipped({"a.dcm": files[0].read_bytes()}, zipfile.ZIP_STORED))
    data[data.find(b"DICM") + 100] ^= 0xFF  # a stored byte changed: the CRC no longer matches
    text = refused("c.zip", bytes(data))
    assert text.startswith("c.zip/a.dcm: cannot be inflated (BadZipFile: Bad CRC-32"), text


def test_read_series_takes_files_one_at_a_time(files, monkeypatch):
    """Past ``MAX_SLICES`` files the next one is refused before it is taken, let alone read."""
    monkeypatch.setattr(series, "MAX_SLICES", 2)
    taken = []

    def items():
        for p in files:
            taken.append(p)
            yield p.name, p.read_bytes()

    with pytest.raises(ScanError) as err:
        read_series(items())
    assert (
        one_line(err)
        == f"{files[2].name}: 3 slices: one read assembles at most 2 (braintumor.imageio.series.MAX_SLICES)"
    )
    assert taken == files[:3]
