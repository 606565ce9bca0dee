"""The original Figshare brain tumor ``.mat`` files (Cheng 2017): MATLAB v7.3 (HDF5) or v5."""

from __future__ import annotations

import io

import numpy as np

from braintumor.errors import ScanError
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
    return Scan(pixels=image, name=name, spacing_mm=spacing, spacing_source=source,
                mask=None if mask is None else (np.asarray(mask) > 0).astype(np.uint8),
                meta={"format": "Figshare .mat", "label": label, "patient_id": fields.get("PID")})


def _read_v73(data: bytes, name: str) -> dict:
    import h5py

    with h5py.File(io.BytesIO(data), "r") as f:
        if "cjdata" not in f:
            raise ScanError(name, "MATLAB file has no 'cjdata' group (not a Figshare brain tumor file)")
        group = f["cjdata"]
        if "image" not in group:
            raise ScanError(name, "'cjdata' has no 'image'")
        fields = {"image": np.array(group["image"]).T}  # MATLAB is column-major: transpose
        if "tumorMask" in group:
            fields["tumorMask"] = np.array(group["tumorMask"]).T
        if "label" in group:
            fields["label"] = float(np.array(group["label"]).ravel()[0])
        if "PID" in group:
            fields["PID"] = "".join(chr(int(c)) for c in np.array(group["PID"]).ravel() if int(c))
    return fields


def _read_v5(data: bytes, name: str) -> dict:
    from scipy.io import loadmat

    content = loadmat(io.BytesIO(data), squeeze_me=True, struct_as_record=False)
    if "cjdata" not in content:
        raise ScanError(name, "MATLAB file has no 'cjdata' struct (not a Figshare brain tumor file)")
    cj = content["cjdata"]
    fields = {"image": np.asarray(cj.image)}
    for key in ("tumorMask", "label", "PID"):
        if hasattr(cj, key):
            fields[key] = getattr(cj, key)
    if "PID" in fields:
        fields["PID"] = str(fields["PID"])
    return fields
