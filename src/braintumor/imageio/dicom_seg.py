"""The tumor mask as a DICOM Segmentation (highdicom) that PACS viewers overlay on the source image.

highdicom builds the SEG from a *source* dataset and copies the patient and study modules of whatever it is
given, so it is given a reduced copy of the source: its identity (SOP, series, study UIDs), geometry, and only
the patient/study attributes the standard requires (type 1 and 2 of the Patient and General Study modules;
left empty where the source has none).  Nothing else of the source (other patient fields, clinical-trial
attributes, institution or station of the scanner) reaches the SEG, and nothing identifying is invented.

The DICOM reader keeps that reduced copy in ``Scan.source`` (``seg_source``): no pixel data (highdicom takes
the rows, columns and geometry of a source image, not its pixels), so a SEG is made from the ``Scan`` alone,
whether the slice came from a file or from an upload's bytes."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from braintumor.imageio.scan import DicomSource, Scan
from braintumor.imageio.writers import MaskError

if TYPE_CHECKING:
    from pydicom import Dataset

#: Type 1/2 attributes of the Patient and General Study modules: the only ones the SEG takes from the source.
PATIENT_STUDY = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)
_IDENTITY = ("StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID", "SOPInstanceUID", "FrameOfReferenceUID")
_SINGLE_FRAME_GEOMETRY = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")
_KEPT = (
    "SpecificCharacterSet",
    "SOPClassUID",
    "SOPInstanceUID",
    "SeriesInstanceUID",
    "FrameOfReferenceUID",
    "PositionReferenceIndicator",
    "Rows",
    "Columns",
    "NumberOfFrames",
    *_SINGLE_FRAME_GEOMETRY,
    "SpacingBetweenSlices",
    "SharedFunctionalGroupsSequence",
    "PerFrameFunctionalGroupsSequence",
    "LossyImageCompression",
    "LossyImageCompressionRatio",
    "LossyImageCompressionMethod",
)


def seg_source(ds: Dataset) -> DicomSource:
    """What a SEG of ``ds`` needs from it, kept by the reader (see the module's docstring)."""
    return DicomSource(_reduced(ds))


def dicom_seg_bytes(scan: Scan, mask: np.ndarray, description: str) -> bytes:
    """``mask`` (0/1 at the source's rows × columns) as a one-segment binary SEG of the analysed frame of the
    DICOM ``scan``, as the bytes of a DICOM file.  Raises ``MaskError`` with the reason no SEG can be made."""
    return series_seg_bytes([scan], [mask], description)


def series_seg_bytes(scans: Sequence[Scan], masks: Sequence[np.ndarray], description: str) -> bytes:
    """One SEG for the slices of one DICOM series (``scans``: single-frame files, or frames of one multi-frame
    file), one frame per slice in the given order, each referencing its source instance (and frame): a whole
    scan's 3-D mask in one multi-frame SEG.  ``MaskError`` with the reason when no SEG can be made."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    import braintumor

    sources = [s.source for s in scans]
    if not sources or not all(isinstance(s, DicomSource) for s in sources):
        raise MaskError("no DICOM SEG written: the scan was not read from a DICOM file")
    datasets = list({id(s.dataset): s.dataset for s in sources if isinstance(s, DicomSource)}.values())
    for ds in datasets:
        missing = _missing(ds)
        if missing:
            raise MaskError(f"no DICOM SEG written: the source lacks {', '.join(missing)}")
    algorithm = hd.AlgorithmIdentificationSequence(
        name="braintumor", version=braintumor.__version__, family=codes.cid7162.ArtificialIntelligence
    )
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="Tumor",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
    )
    segment.SegmentDescription = description
    positions = None  # single-frame sources: each frame lies on its own source's plane
    if "PerFrameFunctionalGroupsSequence" in datasets[0]:  # the analysed frames, placed where they lie
        if len(datasets) > 1:
            raise MaskError("no DICOM SEG written: the slices come from more than one multi-frame file")
        groups = datasets[0].PerFrameFunctionalGroupsSequence
        positions = [hd.PlanePositionSequence.from_sequence(groups[s.slice_index].PlanePositionSequence) for s in scans]
    try:
        seg = hd.seg.Segmentation(
            source_images=datasets,
            pixel_array=np.stack([np.asarray(m).astype(bool) for m in masks]),
            plane_positions=positions,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[segment],
            omit_empty_frames=False,  # an empty mask is still a frame: "no tumor found here"
            series_instance_uid=hd.UID(),
            series_number=1,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            series_description="braintumor tumor outline",
            content_label="TUMOR",
            content_description=description[:64],  # LO
            manufacturer="braintumor",
            manufacturer_model_name="braintumor",
            software_versions=braintumor.__version__,
            device_serial_number=braintumor.__version__,
        )  # type 1, and software has no serial number
    except (ValueError, TypeError, AttributeError, KeyError) as err:  # a source highdicom cannot derive from
        raise MaskError(f"no DICOM SEG written: {type(err).__name__}: {str(err).splitlines()[0][:200]}") from None
    buffer = io.BytesIO()
    seg.save_as(buffer)
    return buffer.getvalue()


def _missing(ds: Dataset) -> list[str]:
    """What the source lacks for a SEG that lies on it: its identity, frame of reference and plane geometry."""
    missing = [k for k in _IDENTITY if not ds.get(k)]
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if "PerFrameFunctionalGroupsSequence" in ds:
        shared = ds.get("SharedFunctionalGroupsSequence") or [{}]
        missing += [f"shared {k}" for k in ("PlaneOrientationSequence", "PixelMeasuresSequence") if k not in shared[0]]
        per_frame = ds.PerFrameFunctionalGroupsSequence
        if len(per_frame) != frames or not all("PlanePositionSequence" in item for item in per_frame):
            missing.append("a PlanePositionSequence for every frame")
    elif frames > 1:
        missing.append("per-frame positions (PerFrameFunctionalGroupsSequence) for its frames")
    else:
        missing += [k for k in _SINGLE_FRAME_GEOMETRY if not ds.get(k)]
    return missing


def _reduced(ds: Dataset) -> Dataset:
    """The source as highdicom sees it: identity, geometry and the required patient/study attributes only."""
    from pydicom.dataset import Dataset

    reduced = Dataset()
    for keyword in _KEPT:
        if keyword in ds:
            setattr(reduced, keyword, ds[keyword].value)
    for keyword in PATIENT_STUDY:
        setattr(reduced, keyword, ds.get(keyword) or None)  # type 2: present, empty when unknown
    reduced.SliceThickness = ds.get("SliceThickness")  # type 2, and highdicom reads it unconditionally
    return reduced
