"""The Streamlit page: upload scans (or try a shipped example), see type, confidence, outline, area, Grad-CAM and,
given an expert mask, the Dice and area difference; a whole scan (a zipped series, a NIfTI volume, …) is measured in
3-D and browsed slice by slice.  Run with ``braintumor app``."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import streamlit as st
from streamlit import config

from braintumor.app.views import (
    INTENDED_USE,
    MAX_UPLOAD_MB,
    MEMBERS_ENV,
    MODEL_ENV,
    OUTLINES_CAPTION,
    PAGE_NEEDS,
    SPACING_HINT,
    STREAMLIT_OPTIONS,
    WEIGHTING_CAPTION,
    Download,
    Uploads,
    View,
    VolumeView,
    analyze_example,
    analyze_upload,
    analyze_uploads,
    examples,
    file_key,
    gradcam_image,
    probabilities_table,
    results_csv,
    with_expert,
)
from braintumor.bundle import Task, require_task
from braintumor.inference import Analyzer

if TYPE_CHECKING:  # torch is optional: Grad-CAM needs the 'train' extra
    from streamlit.delta_generator import DeltaGenerator

    from braintumor.inference.explain import Explainer


def enforce_options() -> None:
    """Put STREAMLIT_OPTIONS in force however the page was started: a plain ``streamlit run page.py`` has
    Streamlit's defaults (200 MB uploads, usage statistics, tracebacks in the browser, developer menu).

    Streamlit 1.67 reads these four at use, not only at server start: showErrorDetails when an error is shown,
    toolbarMode and gatherUsageStats in each run's new_session message, maxUploadSize in the upload handler on
    every request (``st.set_option`` takes only ``client.*``, hence ``config.set_option``).  Out of a script's
    reach: the process's first run sends its new_session message before this runs, and an upload can arrive
    before any run, so the page also refuses larger files itself.  An operator's lower upload limit is kept.
    """
    limit = min(MAX_UPLOAD_MB, config.get_option("server.maxUploadSize"))
    for key, value in {**STREAMLIT_OPTIONS, "server.maxUploadSize": limit}.items():
        config.set_option(key, value)


@st.cache_resource(show_spinner="Loading the model…")
def analyzer() -> Analyzer:
    """One model per process, shared by every session: the shipped one, or ``braintumor app --model``'s."""
    members = os.environ.get(MEMBERS_ENV)
    loaded = Analyzer.load(os.environ.get(MODEL_ENV) or None, members=int(members) if members else None)
    require_task(loaded.model_dir, loaded.card, Task.SEGMENT_AND_CLASSIFY, PAGE_NEEDS)
    return loaded


@st.cache_resource(show_spinner="Loading Grad-CAM…")
def explainer() -> Explainer:
    from braintumor.inference.explain import Explainer

    model = analyzer()
    return Explainer(model.model_dir, members=len(model.member_dirs))  # the networks the analyzer runs


def _torch_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None and importlib.util.find_spec("monai") is not None


def show(view: View, key: str, show_cam: bool) -> None:
    """One analysed slice: pictures, type, area, probabilities, the expert comparison, warnings, downloads."""
    r, scan, _ = view.analysed
    source = (
        "" if r.spacing_mm is None else f" · spacing {r.spacing_mm[0]:g} × {r.spacing_mm[1]:g} mm ({r.spacing_source})"
    )
    st.caption(f"{scan.shape[1]}×{scan.shape[0]} px{source}")
    left, right = st.columns(2)
    left.image(view.original, caption="original", width="stretch")
    if show_cam:
        members = len(analyzer().member_dirs)
        cam_caption = f"Grad-CAM for '{r.label}'" + (f" (mean of {members} members)" if members > 1 else "")
        right.image(gradcam_image(explainer(), view), caption=cam_caption, width="stretch")
    elif view.comparison:
        right.image(view.outlines, caption=OUTLINES_CAPTION, width="stretch", output_format="PNG")  # crisp colours
    else:
        right.image(view.overlay, caption="tumor outline", width="stretch")
    c1, c2, c3 = st.columns(3)
    c1.metric("Tumor type", r.label, f"{r.confidence:.1%} confidence", delta_color="off", delta_arrow="off")
    c2.metric("Tumor area", view.area_text(), f"{r.tumor_pixels} px", delta_color="off", delta_arrow="off")
    c3.bar_chart(probabilities_table(r), x="class", y="probability", height=180)
    if view.comparison:
        e1, e2, _ = st.columns(3)
        e1.metric(
            "Dice with the expert mask",
            f"{view.comparison.dice:.3f}",
            "1 = the same outline",
            delta_color="off",
            delta_arrow="off",
        )
        e2.metric(
            "Expert area",
            view.comparison.expert_text(),
            view.comparison.difference_text(),
            delta_color="off",
            delta_arrow="off",
        )
    if view.comparison_error:
        st.error(f"Expert mask: {view.comparison_error}")
    if view.disagreement is not None:
        u1, u2 = st.columns(2)
        u1.image(view.disagreement, caption="where the ensemble's members disagree on the outline", width="stretch")
        u2.metric(
            "Outline uncertainty",
            "n/a" if r.uncertainty is None else f"{r.uncertainty:.3f}",
            "members' mean std inside the outline (0.5 at most)",
            delta_color="off",
            delta_arrow="off",
        )
    for warning in r.warnings:
        st.warning(warning)
    extra = view.source_mask  # the mask in the upload's own format: DICOM SEG, NIfTI
    d1, d2, d3, d4 = st.columns(4)
    stem = view.stem
    d1.download_button("Overlay PNG", view.png(view.overlay), f"{stem}_overlay.png", "image/png", key=f"o-{key}")
    d2.download_button("Mask PNG", view.mask_png, f"{stem}_mask.png", "image/png", key=f"m-{key}")
    d3.download_button("Result JSON", view.json, f"{stem}.json", "application/json", key=f"j-{key}")
    if extra is not None:
        offer(d4, extra, f"s-{key}", f"the mask as a {extra.label} that imaging tools overlay on the scan")


def whole_scans(files: list[tuple[str, bytes] | None], spacing_mm: float | None) -> Uploads:
    """``analyze_uploads``, run again only when the uploads or the spacing change: moving a slice slider reruns
    the page, not the network.  Kept in the session (one entry, for the current uploads), never on disk."""
    key = ([None if f is None else file_key(*f) for f in files], spacing_mm)
    kept = st.session_state.get("whole-scans")
    if kept is None or kept[0] != key:
        with st.spinner("Looking for whole scans and measuring them…"):
            kept = (key, analyze_uploads(analyzer(), files, spacing_mm))
        st.session_state["whole-scans"] = kept
    return kept[1]


def show_volume(view: VolumeView) -> None:
    """One whole scan: type, volume, diameters, extent, warnings, a slice slider with the outline, downloads."""
    if view.error:
        st.error(view.error)
        return
    st.caption(view.geometry_text())
    c1, c2, c3 = st.columns(3)
    label, confidence = view.type_text()
    c1.metric("Tumor type", label, confidence, delta_color="off", delta_arrow="off")
    c2.metric("Tumor volume", view.volume_text(), view.extent_text(), delta_color="off", delta_arrow="off")
    diameters, where = view.diameters_text()
    c3.metric("Diameters", diameters, where or None, delta_color="off", delta_arrow="off")
    st.caption(WEIGHTING_CAPTION)
    for warning in view.warnings():
        st.warning(warning)
    n = view.measured[1].n_slices
    number = st.slider("Slice", 1, n, value=view.first_slice, key=f"vslice-{view.key}") if n > 1 else 1
    left, right = st.columns(2)
    left.image(view.slice_image(number), caption=f"slice {number} of {n}: tumor outline", width="stretch")
    right.metric(
        "Tumor area on this slice",
        view.slice_area_text(number),
        f"{view.slice_result(number).tumor_pixels} px",
        delta_color="off",
        delta_arrow="off",
    )
    for column, download in zip(st.columns(5), view.downloads(), strict=False):
        offer(column, download, f"{download.label}-{view.key}")


def offer(column: DeltaGenerator, download: Download, key: str, about: str | None = None) -> None:
    """A download button; a file that could not be made is shown disabled, with the reason as its help."""
    column.download_button(
        download.label,
        download.data or b"",
        download.file_name,
        download.mime,
        key=key,
        disabled=download.data is None,
        help=download.reason or about,
    )


enforce_options()
st.set_page_config(page_title="braintumor — MRI slice analysis", layout="wide")
st.title("Brain tumor MRI slice analysis")
st.info(INTENDED_USE)

with st.sidebar:
    st.header("Pixel spacing")
    spacing = st.number_input(
        "Spacing for files without one (mm per pixel; 0 = unknown)",
        min_value=0.0,
        max_value=10.0,
        value=0.0,
        step=0.01,
        format="%.3f",
        key="spacing",
    )
    st.caption(SPACING_HINT)
    show_cam = st.toggle(
        "Show Grad-CAM explanation",
        value=False,
        disabled=not _torch_available(),
        help="Where the classifier looked (needs the 'train' extra: torch + MONAI)",
    )

shipped = examples()
choice = st.selectbox(
    "Try an example (no upload needed)", list(shipped), index=None, placeholder="pick a tumor type", key="example"
)
st.caption(
    "Examples: T1 contrast-enhanced slices and their expert masks from the "
    + "; ".join(sorted({e.source for e in shipped.values()}))
)
uploads = st.file_uploader(
    "MRI slices: PNG, JPEG, TIFF, DICOM, NIfTI, Figshare .mat; or a whole scan: a .zip of a DICOM series, the "
    f"series' files, a NIfTI volume, a multi-frame DICOM (up to {MAX_UPLOAD_MB} MB each)",
    accept_multiple_files=True,
    max_upload_size=MAX_UPLOAD_MB,
    key="uploads",
)
model = analyzer()
if choice:
    st.divider()
    st.subheader(f"Example: {choice}")
    show(analyze_example(model, shipped[choice]), f"example-{choice}", show_cam)
uploads = uploads or []
# the server's limit may not be ours yet (enforce_options): a larger file is not read
readable = [upload.size <= MAX_UPLOAD_MB * 1024 * 1024 for upload in uploads]
scans = whole_scans(
    [(u.name, u.getvalue()) if ok else None for u, ok in zip(uploads, readable, strict=True)], spacing or None
)
for notice in scans.notices:
    st.warning(notice)
views = []
for upload, ok, shown in zip(uploads, readable, scans.shown_at, strict=True):
    if shown is not None:  # part of a whole scan
        for whole in shown:
            st.divider()
            st.subheader(whole.name)
            show_volume(whole)
        continue
    st.divider()
    st.subheader(upload.name)
    if not ok:
        view = View(name=upload.name, error=f"larger than {MAX_UPLOAD_MB} MB: not read")
    else:
        data = upload.getvalue()
        key = file_key(upload.name, data)
        view = analyze_upload(model, data, upload.name, spacing or None, st.session_state.get(f"slice-{key}"))
    views.append(view)
    if view.error:
        st.error(f"{upload.name}: {view.error}")
        continue
    scan = view.analysed[1]
    if scan.n_slices > 1:
        st.slider("Slice", 0, scan.n_slices - 1, value=scan.slice_index, key=f"slice-{key}")
    truth = st.file_uploader(
        "Expert mask of this slice (optional; same size, nonzero = tumor): shows the Dice and the area difference",
        max_upload_size=MAX_UPLOAD_MB,
        key=f"truth-{key}",
    )
    if truth is not None and truth.size > MAX_UPLOAD_MB * 1024 * 1024:
        view.comparison_error = f"larger than {MAX_UPLOAD_MB} MB: not read"
    elif truth is not None:
        with_expert(view, truth.getvalue(), truth.name)
    show(view, key, show_cam)

if len(views) > 1:
    st.divider()
    st.download_button("All results (CSV)", results_csv(views), "results.csv", "text/csv", key="csv")
