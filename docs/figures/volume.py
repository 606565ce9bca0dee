"""Regenerate docs/figures/volume.png: ``braintumor analyze`` on a whole scan, its montage of the tumor slices.

    python docs/figures/volume.py       # needs ../shared/data/dev (the Figshare slices)

The Figshare set (Cheng 2017, doi:10.6084/m9.figshare.1512427, CC BY 4.0) has no whole volumes, only slices.
Eight consecutively numbered slices of one patient (fs1929–fs1936, MR024780, glioma), which run from the skull
base up to the ventricles, are written here as one DICOM series with the set's published geometry: 0.98 mm pixels
as stored in ``dev`` (0.49 mm at 512 px), 6 mm slices 7 mm apart.  Whether they are truly adjacent in the original
acquisition is not recorded: the picture shows what the command gives, not a measured volume.  Prints the
command's line for the README.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
DEV = ROOT.parent / "shared" / "data" / "dev"
OUT = Path(__file__).resolve().parent / "volume.png"
IDS = [f"fs{n}" for n in range(1929, 1937)]
SPACING_MM, STEP_MM, THICKNESS_MM = 0.98, 7.0, 6.0


def write_series(folder: Path) -> None:
    import pydicom
    from PIL import Image
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    for k, slice_id in enumerate(IDS):
        pixels = np.asarray(Image.open(DEV / "images" / f"{slice_id}.png").convert("L"), dtype=np.uint16)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality, ds.PatientName, ds.PatientID = "MR", "Figshare^MR024780", "MR024780"
        ds.InstanceNumber = k + 1
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0, 0, k * STEP_MM]
        ds.PixelSpacing, ds.SliceThickness = [SPACING_MM, SPACING_MM], THICKNESS_MM
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = pixels.tobytes()
        ds.save_as(folder / f"{slice_id}.dcm", enforce_file_format=True)


def main() -> int:
    from PIL import Image

    if not DEV.is_dir():
        print(f"{DEV} not found: the figure is made from the Figshare slices there", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        series = Path(tmp) / "MR024780"
        series.mkdir()
        write_series(series)
        done = subprocess.run(
            [sys.executable, "-m", "braintumor.cli", "analyze", str(series), "--out", str(Path(tmp) / "out")],
            capture_output=True,
            text=True,
            check=True,
        )
        print(done.stdout.replace(tmp + "/", ""))
        montage = Image.open(Path(tmp) / "out" / "volumes" / "MR024780" / "montage.png")
        montage.convert("RGB").quantize(128).save(OUT, optimize=True)  # palette: a README figure stays small
    print(f"wrote {OUT.relative_to(ROOT)} ({OUT.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
