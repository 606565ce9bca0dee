"""The original Figshare brain tumor ``.mat`` files (Cheng 2017): MATLAB v7.3 (HDF5) or v5.

Only the file's own bytes are read: HDF5 links to other files or objects and datasets stored externally or
virtually are refused before they are touched (they could expose server files), and every size is checked
before a dataset or a compressed MATLAB v5 element is inflated."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from braintumor.errors import ScanError
from braintumor.imageio.limits import check_declared_bytes, check_size, inflate
from braintumor.imageio.scan import Scan

#: cjdata.label → class name, as published with the dataset
FIGSHARE_LABELS = {1: "meningioma", 2: "glioma", 3: "pituitary"}
#: Published acquisition: 512×512 pixels of 0.49 mm
FIGSHARE_SPACING_MM = 0.49
FIGSHARE_SIDE = 512


def read_figshare_mat(data: bytes, name: str, slice_index: int | None = None) -> Scan:
    fields = _read_v73(data, name) if b"\x89HDF\r\n\x1a\n" in data[:1024] else _read_v5(data, name)
    image = np.asarray(fields["image"], dtype=np.float32)
    mask = fields.get("tumorMask")
    label = FIGSHARE_LABELS.get(int(fields["label"])) if fields.get("label") is not None else None
    spacing, source = None, "unknown"
    if image.shape == (FIGSHARE_SIDE, FIGSHARE_SIDE):
        spacing = (FIGSHARE_SPACING_MM, FIGSHARE_SPACING_MM)
        source = "Figshare published acquisition (0.49 mm at 512×512)"
    return Scan(
        pixels=image,
        name=name,
        spacing_mm=spacing,
        spacing_source=source,
        mask=None if mask is None else (np.asarray(mask) > 0).astype(np.uint8),
        meta={"label": label, "patient_id": fields.get("PID")},
    )


def _read_v73(data: bytes, name: str) -> dict[str, Any]:
    import h5py

    with h5py.File(io.BytesIO(data), "r") as f:
        group = _own(f, "cjdata", name, h5py.Group)
        if group is None:
            raise ScanError(name, "MATLAB file has no 'cjdata' group (not a Figshare brain tumor file)")
        image = _own(group, "image", name, h5py.Dataset)
        if image is None:
            raise ScanError(name, "'cjdata' has no 'image'")
        # MATLAB is column-major: transpose
        fields: dict[str, Any] = {"image": _array(image, name, "cjdata/image", 2).T}
        for key, ndim in (("tumorMask", 2), ("label", 2), ("PID", 2)):
            dataset = _own(group, key, name, h5py.Dataset)
            if dataset is not None:
                fields[key] = _array(dataset, name, f"cjdata/{key}", ndim, small=key != "tumorMask")
        if "tumorMask" in fields:
            fields["tumorMask"] = fields["tumorMask"].T
        if "label" in fields:
            fields["label"] = float(fields["label"].ravel()[0]) if fields["label"].size else None
        if "PID" in fields:
            fields["PID"] = "".join(chr(int(c)) for c in fields["PID"].ravel() if 0 < int(c) < 0x110000)
    return fields


def _own(group: Any, key: str, name: str, kind: type) -> Any:  # h5py has no type information
    """``group[key]`` only when it is a plain object of this file: an external or soft link could point at any
    file or object on the server, so it is refused before it is followed."""
    import h5py

    link = group.get(key, getlink=True)
    if link is None:
        return None
    if not isinstance(link, h5py.HardLink):
        raise ScanError(
            name,
            f"'{group.name.strip('/')}/{key}' is a {type(link).__name__}; links to other files or objects are refused",
        )
    item = group[key]
    if not isinstance(item, kind):
        raise ScanError(name, f"'{item.name.strip('/')}' is not a {kind.__name__.lower()}")
    return item


def _array(dataset: Any, name: str, path: str, ndim: int, small: bool = False) -> np.ndarray:
    """Read a dataset after checking that its bytes live in this file and that its declared size is sane."""
    if dataset.is_virtual or dataset.external:
        raise ScanError(name, f"'{path}' keeps its data outside the file (external or virtual storage); refused")
    if dataset.dtype.kind not in "biuf":
        raise ScanError(name, f"'{path}' is not numeric (type {dataset.dtype})")
    shape: tuple[int, ...] = dataset.shape or ()
    if len(shape) > ndim:
        raise ScanError(name, f"'{path}' has shape {shape}; expected at most {ndim} dimensions")
    if small:
        if int(np.prod(shape)) > 4096:
            raise ScanError(name, f"'{path}' has shape {shape}; expected a short value")
    else:
        if len(shape) != 2:
            raise ScanError(name, f"'{path}' has shape {shape}; expected a 2-D image")
        check_size(name, shape[1], shape[0])
    check_declared_bytes(name, int(np.prod(shape)) * dataset.dtype.itemsize, f"'{path}'")
    if dataset.chunks is not None:
        check_declared_bytes(name, int(np.prod(dataset.chunks)) * dataset.dtype.itemsize, f"a chunk of '{path}'")
    return np.asarray(dataset[()])


def _read_v5(data: bytes, name: str) -> dict[str, Any]:
    from scipy.io import loadmat

    _check_v5_inflated_size(data, name)
    # scipy-stubs type file_name as a path only; loadmat documents and accepts an open file-like object too
    content = loadmat(io.BytesIO(data), squeeze_me=True, struct_as_record=False)  # type: ignore[arg-type]  # file-like
    if "cjdata" not in content:
        raise ScanError(name, "MATLAB file has no 'cjdata' struct (not a Figshare brain tumor file)")
    cj = content["cjdata"]
    fields: dict[str, Any] = {"image": np.asarray(cj.image)}
    for key in ("tumorMask", "label", "PID"):
        if hasattr(cj, key):
            fields[key] = getattr(cj, key)
    if "PID" in fields:
        fields["PID"] = str(fields["PID"])
    return fields


def _check_v5_inflated_size(data: bytes, name: str) -> None:
    """Walk the top-level elements of a MATLAB v5 file and inflate each compressed one with the size cap
    (SciPy would inflate a zlib bomb whole)."""
    import struct

    order = "<" if data[126:128] == b"IM" else ">"
    position, total = 128, 0
    while position + 8 <= len(data):
        kind, size = struct.unpack(order + "II", data[position : position + 8])
        if kind >> 16:  # small data element: 4 bytes of data in the tag itself
            position += 8
            continue
        start, end = position + 8, position + 8 + size
        if kind == 15:  # miCOMPRESSED: not padded
            total += len(inflate(name, data[start:end], 15, "compressed MATLAB element"))
            check_declared_bytes(name, total, "MATLAB file")
            position = end
        else:
            position = end + (-size) % 8
