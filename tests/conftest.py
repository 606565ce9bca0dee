"""Shared fixtures: the real data folders (skipped with a reason where absent) and small scan builders."""

from __future__ import annotations

import csv
import io
import socket
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
DEV, DEV512 = DATA / "dev", DATA / "dev-512"

#: fixtures that train a model (a Lightning fit): every test using one is slow, whatever its own marks say
TRAINING_FIXTURES = {"tiny_model", "cv_out", "seed_unet", "trained", "gpu_train", "round_trip", "ensemble"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The quick lane (``-m "not slow"``) fits nothing: tests that need a trained fixture are marked slow."""
    for item in items:
        if TRAINING_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _quick_tests_fit_nothing(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A quick test that starts a Lightning fit fails at once, naming the fix (mark it slow)."""
    if request.node.get_closest_marker("slow"):
        return
    import lightning.pytorch as pl

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a quick test started a Lightning fit: mark it @pytest.mark.slow")

    monkeypatch.setattr(pl.Trainer, "fit", refuse)


def _require(folder: Path) -> Path:
    if not (folder / "index.csv").is_file():
        pytest.skip(f"real data not present at {folder} (it is only on the project's machines)")
    return folder


@pytest.fixture(scope="session")
def dev() -> Path:
    return _require(DEV)


@pytest.fixture(scope="session")
def dev512() -> Path:
    return _require(DEV512)


@pytest.fixture(scope="module")
def analyzer():
    """The shipped model, loaded once per test module (a module may change its post-processing)."""
    from braintumor.inference import Analyzer

    return Analyzer.default()


@pytest.fixture(scope="module")
def client(analyzer):
    """The HTTP API around the module's analyzer."""
    from fastapi.testclient import TestClient

    from braintumor.serve.api import create_app

    with TestClient(create_app(analyzer)) as c:
        yield c


def csv_rows(path: Path) -> list[dict[str, str]]:
    """Every row of a CSV file with a header, as dicts (the file is closed before returning)."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def glioma_analysis(scan, name: str):
    """A fixed answer (glioma, empty outline) for stand-in analyzers that only occupy the server."""
    from braintumor.inference import Analysis

    return Analysis(
        file=name,
        scan=scan,
        spacing_mm=None,
        spacing_source="unknown",
        label="glioma",
        probabilities={"glioma": 1.0},
        mask=np.zeros(scan.shape, np.uint8),
        tumor_pixels=0,
        area_cm2=None,
    )


def png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG") if mode else Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    spacing=(0.5, 0.7),
    slope=1.0,
    intercept=0.0,
    photometric="MONOCHROME2",
    frames: int | None = None,
    with_pixels: bool = True,
) -> Path:
    """A minimal, valid MR image DICOM written with pydicom."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientName, ds.PatientID = "MR", "Doe^Jane", "SECRET-ID"
    rows, cols = pixels.shape[-2:]
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    if spacing is not None:
        ds.PixelSpacing = [str(spacing[0]), str(spacing[1])]
    ds.RescaleSlope, ds.RescaleIntercept = str(slope), str(intercept)
    if frames:
        ds.NumberOfFrames = frames
    if with_pixels:
        ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return path


def write_figshare_mat(path: Path, image: np.ndarray, mask: np.ndarray, label: int = 2, pid: str = "MR040240B") -> Path:
    """A MATLAB v7.3 file in the Figshare layout: HDF5 with a 512-byte header, column-major arrays."""
    import h5py

    with h5py.File(path, "w", userblock_size=512) as f:
        g = f.create_group("cjdata")
        g["image"] = image.T.astype(np.int16)  # MATLAB writes column-major: rows and columns swap in HDF5
        g["tumorMask"] = mask.T.astype(np.uint8)
        g["label"] = np.array([[label]], dtype=np.float64)
        g["PID"] = np.array([[ord(c)] for c in pid], dtype=np.uint16)
        g["tumorBorder"] = np.zeros((1, 4))
    with open(path, "r+b") as f:
        f.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan 1 00:00:00 2015 HDF5 schema 1.00 .")
    return path


def make_manifest(root: Path, patients_per_class: int = 4, per_patient: int = 2, side: int = 64) -> Path:
    """A tiny dataset in the manifest layout: bright blobs whose position depends on the class."""
    import csv

    from PIL import Image

    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rows = []
    centres = {"glioma": (20, 20), "meningioma": (20, 44), "pituitary": (44, 32)}
    yy, xx = np.mgrid[:side, :side]
    n = 0
    for label in ["glioma", "meningioma", "pituitary", "notumor"]:
        for p in range(patients_per_class):
            for _ in range(per_patient):
                n += 1
                image = rng.normal(40, 10, (side, side))
                mask = np.zeros((side, side), np.uint8)
                if label != "notumor":
                    cy, cx = centres[label]
                    mask = (((yy - cy - rng.integers(-3, 4)) ** 2 + (xx - cx) ** 2) < 49).astype(np.uint8)
                    image += mask * 150
                Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(root / "images" / f"s{n}.png")
                if label != "notumor":
                    Image.fromarray(mask * 255).save(root / "masks" / f"s{n}.png")
                rows.append(
                    {
                        "id": f"s{n}",
                        "image": f"images/s{n}.png",
                        "mask": f"masks/s{n}.png" if label != "notumor" else "",
                        "label": label,
                        "patient_id": f"{label}{p}" if label != "notumor" else "",
                        "spacing_mm": "0.5",
                    }
                )
    with open(root / "index.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    return make_manifest(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny_model(tiny_data, tmp_path_factory) -> Path:
    """A multi-task model folder trained for two epochs on the tiny set (seconds)."""
    from braintumor.training.run import TrainConfig, train

    out = tmp_path_factory.mktemp("model")
    return train(TrainConfig(data=tiny_data, out=out, size=32, epochs=2, batch_size=4, folds=4, progress=False))


def accepts_connections(port: int) -> bool:
    """Whether something listens on this loopback port (a stopped server must free it)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False
