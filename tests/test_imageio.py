"""load_scan: values, spacing and its source for every format; resize keeps physical size."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from braintumor.imageio import ScanError, as_spacing, load_scan
from conftest import png_bytes, write_dicom, write_figshare_mat

RAMP = np.tile(np.arange(64, dtype=np.uint8) * 3, (48, 1))  # 48 rows × 64 cols, not symmetric


def test_png_gray_keeps_values_and_orientation_spacing_unknown():
    scan = load_scan(png_bytes(RAMP), name="slice.png")
    assert scan.shape == (48, 64)
    assert scan.pixels.dtype == np.float32
    assert scan.pixels[0, 10] == 30 and scan.pixels[5, 63] == 189
    assert scan.spacing_mm is None and scan.spacing_source == "unknown"


def test_png_16bit_keeps_range():
    array = np.arange(48 * 64, dtype=np.uint16).reshape(48, 64) * 20
    scan = load_scan(png_bytes(array), name="deep.png")
    assert scan.pixels.max() == array.max() > 255


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "LA"])
def test_colour_modes_become_one_gray_channel(mode):
    gray = Image.fromarray(RAMP)
    image = gray.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    scan = load_scan(buffer.getvalue(), name=f"x_{mode}.png")
    assert scan.shape == (48, 64)
    assert np.abs(scan.pixels - RAMP).max() <= 2  # gray encoded as colour stays the same gray
    assert not scan.meta["colorful"]


def test_real_colour_is_flagged():
    rgb = np.zeros((48, 64, 3), np.uint8)
    rgb[..., 0] = 200
    assert load_scan(png_bytes(rgb), name="red.png").meta["colorful"]


@pytest.mark.parametrize("fmt,suffix", [("JPEG", ".jpg"), ("BMP", ".bmp"), ("TIFF", ".tif")])
def test_other_raster_formats(fmt, suffix):
    buffer = io.BytesIO()
    Image.fromarray(RAMP).save(buffer, fmt)
    scan = load_scan(buffer.getvalue(), name=f"x{suffix}")
    assert scan.shape == (48, 64)
    assert np.abs(scan.pixels - RAMP).mean() < 3


def test_path_and_bytes_agree(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(png_bytes(RAMP))
    assert np.array_equal(load_scan(path).pixels, load_scan(path.read_bytes(), name="a.png").pixels)


def test_dicom_spacing_rescale_and_row_col_order(tmp_path):
    pixels = np.arange(32 * 40, dtype=np.uint16).reshape(32, 40)
    path = write_dicom(tmp_path / "a.dcm", pixels, spacing=(0.5, 0.7), slope=2.0, intercept=-100.0)
    scan = load_scan(path)
    assert scan.spacing_mm == (0.5, 0.7)  # PixelSpacing = row spacing \ column spacing
    assert scan.spacing_source == "DICOM PixelSpacing"
    assert scan.pixels[0, 0] == -100 and scan.pixels[1, 0] == 2 * 40 - 100


def test_dicom_monochrome1_is_inverted(tmp_path):
    pixels = np.zeros((32, 32), np.uint16)
    pixels[0, 0] = 1000
    scan = load_scan(write_dicom(tmp_path / "m1.dcm", pixels, photometric="MONOCHROME1"))
    assert scan.pixels[0, 0] == 0 and scan.pixels[5, 5] == 1000


def test_dicom_multiframe_middle_and_chosen_frame(tmp_path):
    frames = np.stack([np.full((32, 32), 10 * i, np.uint16) for i in range(5)])
    path = write_dicom(tmp_path / "mf.dcm", frames, frames=5)
    assert load_scan(path).pixels[0, 0] == 20 and load_scan(path).n_slices == 5
    assert load_scan(path, slice_index=4).pixels[0, 0] == 40
    with pytest.raises(ScanError, match="frame 9 out of range"):
        load_scan(path, slice_index=9)


def test_dicom_without_spacing_is_unknown(tmp_path):
    scan = load_scan(write_dicom(tmp_path / "n.dcm", np.ones((32, 32), np.uint16), spacing=None))
    assert scan.spacing_mm is None and scan.spacing_source == "unknown"


def test_nifti_volume_spacing_from_zooms_and_middle_slice(tmp_path):
    import nibabel as nib

    volume = np.zeros((40, 30, 7), np.int16)  # x, y, z
    for k in range(7):
        volume[:, :, k] = k
    volume[39, 0, 3] = 99  # x = right end, y = posterior end
    image = nib.Nifti1Image(volume, np.diag([0.8, 0.9, 5.0, 1.0]))
    image.header.set_zooms((0.8, 0.9, 5.0))
    nib.save(image, tmp_path / "v.nii.gz")
    scan = load_scan(tmp_path / "v.nii.gz")
    assert scan.shape == (30, 40)  # rows run along y, columns along x
    assert scan.spacing_mm == pytest.approx((0.9, 0.8)) and "NIfTI" in scan.spacing_source
    assert scan.n_slices == 7 and scan.slice_index == 3
    assert scan.pixels[-1, 0] == 99  # posterior at the bottom, patient right on the left (radiological, as DICOM)
    assert load_scan(tmp_path / "v.nii.gz", slice_index=6).pixels[0, 0] == 6


def test_nifti_2d_uncompressed(tmp_path):
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.ones((32, 24), np.float32), np.diag([1.2, 1.1, 1, 1])), tmp_path / "p.nii")
    scan = load_scan(tmp_path / "p.nii")
    assert scan.shape == (24, 32) and scan.spacing_mm == pytest.approx((1.1, 1.2))


def test_figshare_mat_v73_transposed_label_pid_mask_and_spacing(tmp_path):
    image = np.zeros((512, 512), np.int16)
    image[10, 400] = 1234  # asymmetric marker: survives only the right transpose
    mask = np.zeros((512, 512), np.uint8)
    mask[100:120, 300:340] = 1
    scan = load_scan(write_figshare_mat(tmp_path / "1.mat", image, mask, label=1, pid="MR040240B"))
    assert scan.pixels[10, 400] == 1234 and scan.pixels[400, 10] == 0
    assert scan.mask.sum() == 20 * 40 and scan.mask[110, 320] == 1
    assert scan.meta["label"] == "meningioma" and scan.meta["patient_id"] == "MR040240B"
    assert scan.spacing_mm == (0.49, 0.49) and "0.49 mm" in scan.spacing_source


def test_figshare_mat_256_has_unknown_spacing(tmp_path):
    z = np.zeros((256, 256))
    scan = load_scan(write_figshare_mat(tmp_path / "2.mat", z, z, label=3))
    assert scan.spacing_mm is None and scan.meta["label"] == "pituitary"


def test_resize_rescales_spacing():
    scan = load_scan(png_bytes(np.zeros((512, 512), np.uint8)), name="a.png").with_spacing(0.49, "user")
    small = scan.resized(256, 128)
    assert small.shape == (256, 128)
    assert small.spacing_mm == pytest.approx((0.98, 1.96))
    assert small.spacing_source == "user"


def test_as_spacing_refuses_nonsense():
    assert as_spacing(0.5) == (0.5, 0.5)
    for bad in (0, -1, float("nan"), (1, 2, 3)):
        with pytest.raises(ValueError):
            as_spacing(bad)


def test_scans_name_their_format_in_the_registrys_words_and_keep_what_masks_need(tmp_path):
    """One vocabulary: ``Scan.format`` is the registry's name; ``meta["format"]`` only its display name."""
    import nibabel as nib

    from braintumor.imageio.registry import _SUFFIX_FORMAT
    from braintumor.imageio.scan import DicomSource, NiftiSource
    from braintumor.imageio.writers import MASK_WRITERS

    png = load_scan(png_bytes(RAMP), name="a.png")
    assert (png.format, png.meta["format"], png.source) == ("PNG", "PNG", None)
    z = np.zeros((256, 256))
    mat = load_scan(write_figshare_mat(tmp_path / "1.mat", z, z))
    assert (mat.format, mat.meta["format"], mat.source) == ("matlab", "Figshare .mat", None)
    dicom = load_scan(write_dicom(tmp_path / "a.dcm", RAMP.astype(np.uint16)).read_bytes(), name="a.dcm")
    assert (dicom.format, dicom.meta["format"]) == ("dicom", "DICOM") and isinstance(dicom.source, DicomSource)
    assert "PixelData" not in dicom.source.dataset and dicom.source.dataset.Rows == 48  # geometry, not pixels
    image = nib.Nifti1Image(np.zeros((64, 48, 3), np.int16), np.diag([0.9, 0.8, 5.0, 1.0]))
    image.header.extensions.append(nib.nifti1.Nifti1Extension("comment", b"PatientName=Doe^Jane"))
    nib.save(image, tmp_path / "v.nii.gz")
    nifti = load_scan((tmp_path / "v.nii.gz").read_bytes(), name="v.nii.gz")
    assert (nifti.format, nifti.meta["format"]) == ("nifti", "NIfTI") and isinstance(nifti.source, NiftiSource)
    assert nifti.source.image_class is nib.Nifti1Image and nifti.source.header.get_data_shape() == (64, 48, 3)
    assert np.array_equal(nifti.source.header.get_best_affine(), nib.load(tmp_path / "v.nii.gz").affine)
    assert not nifti.source.header.extensions  # the header only: extensions may carry DICOM attributes
    assert set(MASK_WRITERS) <= set(_SUFFIX_FORMAT.values())  # writers are keyed by the readers' names
    assert dicom.with_spacing(0.5, "user").source is dicom.source and dicom.resized(24, 32).source is None
