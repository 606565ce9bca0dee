"""Zipped DICOM series: one ``.zip`` upload holding the files of a series, read without trusting the zip.

A zip is a stranger's file like any other (``imageio.limits``).  Its central directory is checked whole before a
byte is inflated; then the first bytes of each member say whether it is DICOM; then ``read_series`` asks for the
members one at a time, each inflated alone and capped at the size it declared.  Nothing is ever extracted to disk,
but a member path that would leave the archive is refused all the same: only a hostile or broken zip has one, and
its names travel on into messages and reports."""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from itertools import chain
from pathlib import Path

from braintumor.errors import ScanError
from braintumor.imageio.limits import (
    MAX_ARCHIVE_BYTES,
    MAX_ARCHIVE_MEMBERS,
    MAX_COMPRESSION_RATIO,
    MAX_FILE_BYTES,
    RATIO_EXEMPT_BYTES,
)
from braintumor.imageio.registry import sniff, suffix_of
from braintumor.imageio.series import Item, Volume, file_bytes, read_series

#: Every central-directory entry starts with these bytes: counting them bounds the entries before zipfile builds an
#: object for each (a million tiny entries fit in a 64 MB upload).  Member data can only add to the count.
_ENTRY_SIGNATURE = b"PK\x01\x02"
#: zipfile inflates deflate in bounded steps, but its bzip2 and LZMA readers inflate a whole read at once, however
#: large; archivers zip DICOM series stored or deflated.
_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
#: Files archivers add that are no part of a series (lower case): macOS folder settings, Windows thumbnails, and
#: the DICOM media directory (an index of the files, not an image).
_JUNK = {".ds_store", "thumbs.db", "dicomdir"}
#: Bytes ``sniff`` needs to see DICOM's ``DICM`` after the 128-byte preamble.
_DICOM_HEAD = 132
_DRIVE = re.compile(r"[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def zip_members(name: str, data: bytes) -> Iterator[tuple[str, bytes]]:
    """The DICOM files in the zip ``data`` (the upload ``name``), inflated one at a time as ``read_series`` takes
    them: ``(f"{name}/{path}", bytes)``.

    Refused here, each as one ``ScanError`` line, before any member is inflated: bytes that are not a readable zip;
    more than ``MAX_ARCHIVE_MEMBERS`` entries; more than ``MAX_ARCHIVE_BYTES`` declared in all; a member declaring
    more than ``MAX_FILE_BYTES``, or over ``RATIO_EXEMPT_BYTES`` and compressed more than ``MAX_COMPRESSION_RATIO``
    to one (zip bombs); an encrypted member, or one neither stored nor deflated; a path that is absolute, has a
    drive letter or ``..`` parts (``\\`` counts as a separator, as on Windows), although nothing is extracted.
    Then, from its first bytes, a member that is not DICOM (with the ``DICM`` preamble), or no DICOM member at all.
    Folders, ``__MACOSX/``, ``._*``, ``.DS_Store``, ``Thumbs.db`` and ``DICOMDIR`` are skipped.  While inflating,
    a member's declared size is not trusted: the read stops at it, and zipfile checks the CRC."""
    zf, members = _central_directory(name, data)
    for member, info in members:
        if sniff(_inflate(member, zf, info, _DICOM_HEAD)) != "dicom":
            raise ScanError(member, "is not a DICOM file: a zip holds one DICOM series")
    return _members(zf, members)


def read_uploads(files: Sequence[Item]) -> list[Volume]:
    """The volumes in what a user gave (paths, or ``(name, bytes)`` uploads): each ``.zip`` stands for the DICOM
    files in it (``zip_members``), any other file is itself; all go to ``read_series`` together, which groups DICOM
    files by series.  Every zip is checked before any file is read, so a bad zip is refused before slices are
    decoded."""
    sources: list[Iterable[Item]] = []
    for item in files:
        name = item[0] if isinstance(item, tuple) else str(item)
        if suffix_of(name) != ".zip":
            sources.append([item])
        else:
            data = item[1] if isinstance(item, tuple) else file_bytes(Path(item), name)
            sources.append(zip_members(name, data))
    return read_series(chain.from_iterable(sources))


def _central_directory(name: str, data: bytes) -> tuple[zipfile.ZipFile, list[tuple[str, zipfile.ZipInfo]]]:
    """The zip and its members to read (``(display name, entry)``), once every entry passed the policy."""
    entries = data.count(_ENTRY_SIGNATURE)
    if entries > MAX_ARCHIVE_MEMBERS:
        raise ScanError(
            name, f"zip holds {entries} entries; the zip of a series may hold at most {MAX_ARCHIVE_MEMBERS}"
        )
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except Exception as err:  # zipfile raises many kinds on hostile bytes; the user gets one line
        raise ScanError(name, f"not a readable zip file ({_detail(err)})") from None
    infos = zf.infolist()
    declared = sum(info.file_size for info in infos)
    if declared > MAX_ARCHIVE_BYTES:
        raise ScanError(
            name,
            f"zip declares {declared / 2**20:.0f} MB uncompressed, over the {MAX_ARCHIVE_BYTES >> 20} MB limit "
            "(possible zip bomb)",
        )
    members = []
    for info in infos:
        path = info.filename.replace("\\", "/")
        parts = path.split("/")
        member = f"{name}/{_CONTROL.sub('?', path)}"  # a name with a line break stays one line in messages
        if path.startswith("/") or _DRIVE.match(path) or ".." in parts:
            raise ScanError(member, "path leads out of the archive (absolute, drive letter or '..')")
        if path.endswith("/") or "__MACOSX" in parts or parts[-1].startswith("._") or parts[-1].lower() in _JUNK:
            continue
        if info.flag_bits & 0x1:
            raise ScanError(member, "is encrypted: upload the files unencrypted")
        if info.compress_type not in _METHODS:
            raise ScanError(member, f"uses compression method {info.compress_type}; only stored or deflated are read")
        if info.file_size > MAX_FILE_BYTES:
            raise ScanError(
                member,
                f"declares {info.file_size / 2**20:.0f} MB, over the {MAX_FILE_BYTES >> 20} MB file size limit "
                "(possible zip bomb)",
            )
        if info.file_size > RATIO_EXEMPT_BYTES and info.file_size > MAX_COMPRESSION_RATIO * info.compress_size:
            raise ScanError(
                member,
                f"inflates {info.compress_size} bytes to {info.file_size / 2**20:.0f} MB, over "
                f"{MAX_COMPRESSION_RATIO}:1 (zip bomb)",
            )
        members.append((member, info))
    if not members:
        raise ScanError(name, "zip holds no DICOM file")
    return zf, members


def _members(zf: zipfile.ZipFile, members: list[tuple[str, zipfile.ZipInfo]]) -> Iterator[tuple[str, bytes]]:
    with zf:
        for member, info in members:
            yield member, _inflate(member, zf, info, info.file_size)  # zipfile then checks the CRC


def _inflate(member: str, zf: zipfile.ZipFile, info: zipfile.ZipInfo, size: int) -> bytes:
    """The first ``size`` bytes of a member, or its corruption (bad CRC, truncated data) as one line."""
    try:
        with zf.open(info) as stream:
            return stream.read(size)
    except Exception as err:  # zipfile and zlib raise many kinds on hostile bytes; the user gets one line
        raise ScanError(member, f"cannot be inflated ({_detail(err)})") from None


def _detail(err: Exception) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0][:200] if lines else 'no detail'}"
