"""``braintumor bench``: the default pipeline against the original project's, rebuilt in PyTorch.

Both run on the same 512×512 slices in this process, one image at a time, from file to area: the
default = ONNX Runtime multi-task U-Net at its input size; the reference = eager PyTorch InceptionV3
(299×299) + the small U-Net (256×256) with random weights (timing only).  Peak RSS of the default
pipeline is read before torch is imported; cold start is a fresh ``braintumor analyze`` process.  End to end:
whole ``braintumor analyze`` processes over a folder's worth of slices, with ``--out`` (everything written)
and with ``--json`` only, as a user runs them.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from braintumor.bundle import DEFAULT_MODEL_DIR, read_card
from braintumor.imageio import load_scan
from braintumor.inference import Analyzer, Segmentation

#: targets of the fold ensemble, end to end (``analyze --out``, 512×512 slices)
ENSEMBLE_MS, ENSEMBLE_RSS_MB, ONE_MEMBER_MS = 70.0, 400.0, 25.0
#: a whole scan, end to end (``analyze volume.nii.gz --out``): its shape (slices, rows, cols; a BraTS-sized
#: 1 mm volume) and the targets in seconds with one network and with the ensemble
VOLUME_SHAPE, VOLUME_S_ONE, VOLUME_S_ENSEMBLE = (155, 240, 240), 5.0, 12.0
DEV512 = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "dev-512" / "images"


def _images(n: int, folder: Path, source: Path | None) -> list[Path]:
    source = source or DEV512
    real = sorted(p for p in source.rglob("*") if p.suffix.lower() in (".png", ".jpg"))[:n] if source.is_dir() else []
    if real:
        return real
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:512, :512]
    paths = []
    for i in range(n):  # a bright ellipse "head" with a brighter blob, so the pipeline has work to do
        head = ((yy - 256) / 220) ** 2 + ((xx - 256) / 180) ** 2 < 1
        img = head * 90 + rng.normal(0, 8, (512, 512)) + (((yy - 200 - i) ** 2 + (xx - 300) ** 2) < 900) * 120
        paths.append(folder / f"synthetic_{i}.png")
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(paths[-1])
    return paths


def _volume(folder: Path) -> Path:
    """A synthetic ``VOLUME_SHAPE`` NIfTI (1 mm voxels): a bright ellipsoid head with a brighter ball inside."""
    import nibabel as nib

    slices, rows, cols = VOLUME_SHAPE
    k, r, c = np.ogrid[:slices, :rows, :cols]
    head = (
        ((k - slices / 2) / (slices / 2.2)) ** 2
        + ((r - rows / 2) / (rows / 2.3)) ** 2
        + ((c - cols / 2) / (cols / 2.8)) ** 2
    )
    ball = (k - slices / 2) ** 2 + (r - rows / 2.5) ** 2 + (c - cols / 1.8) ** 2 < 20**2
    noise = np.random.default_rng(0).normal(0, 8, (slices, rows, cols))
    data = (head < 1) * 300 + ball * 400 + noise
    path = folder / "volume.nii.gz"
    nib.save(nib.Nifti1Image(np.moveaxis(data, 0, -1).astype(np.int16), np.eye(4)), str(path))
    return path


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _time_each(fn: Callable[[Path], None], items: list[Path], repeats: int = 3) -> float:
    fn(items[0])  # warm-up
    times = []
    for _ in range(repeats):
        for item in items:
            t = time.perf_counter()
            fn(item)
            times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def _default(analyzer: Analyzer, path: Path) -> None:
    result = analyzer.analyze(path, spacing_mm=0.49)
    assert isinstance(result, Segmentation), "bench times a model that outlines"
    _ = result.area_cm2, result.contours


def _reference_pipeline() -> Callable[[Path], None]:
    import torch
    from PIL import Image

    from braintumor.models.inception import InceptionV3
    from braintumor.models.seed_unet import SeedUNet

    torch.set_num_threads(2)
    classifier, segmenter = InceptionV3().eval(), SeedUNet().eval()

    def run(path: Path) -> None:
        scan = load_scan(path)
        pixels = scan.pixels / max(float(scan.pixels.max()), 1.0)
        image = Image.fromarray(pixels.astype(np.float32), mode="F")
        with torch.inference_mode():
            x299 = torch.from_numpy(np.array(image.resize((299, 299), Image.Resampling.BILINEAR)))[None, None]
            classifier(x299)[1].softmax(1)
            x256 = torch.from_numpy(np.array(image.resize((256, 256), Image.Resampling.BILINEAR)))[None, None]
            prob = torch.sigmoid(segmenter(x256)[0])[0, 0].numpy()
        mask = np.asarray(Image.fromarray(prob, mode="F").resize(scan.shape[::-1], Image.Resampling.BILINEAR)) > 0.5
        _ = int(mask.sum()) * 0.49 * 0.49 / 100

    return run


def _cold_start(image: Path, model: Path | None) -> float:
    times = []
    for _ in range(3):
        cmd = [sys.executable, "-m", "braintumor.cli", "analyze", str(image), "--json", "--spacing-mm", "0.49"]
        cmd += ["--model", str(model)] if model else []
        t = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True, timeout=120)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _end_to_end(
    images: list[Path], model: Path | None, out: Path, json_only: bool, runs: int = 3, members: int | None = None
) -> tuple[float, float]:
    """Median ms per image of a whole ``braintumor analyze`` process over ``images`` (start-up included) and its
    peak RSS (MB): with ``--out`` (masks, overlays, CSV written) or with ``--json`` only."""
    # VmHWM, the child's own peak: ru_maxrss would keep this (parent) process's peak across fork + exec
    code = (
        "import sys\nfrom braintumor.cli import main\nrc = main(sys.argv[1:])\n"
        "print([int(s.split()[1]) for s in open('/proc/self/status') if s.startswith('VmHWM')][0] / 1024, "
        "file=sys.stderr)\nsys.exit(rc)"
    )
    args = [str(p) for p in images] + ["--spacing-mm", "0.49"] + (["--model", str(model)] if model else [])
    args += ["--json"] if json_only else ["--out", str(out)]
    args += ["--members", str(members)] if members else []
    times, peaks = [], []
    for _ in range(runs):
        t = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", code, "analyze", *args], capture_output=True, text=True, timeout=600, check=True
        )
        times.append(time.perf_counter() - t)
        peaks.append(float(done.stderr.strip().splitlines()[-1]))
    return 1000 * statistics.median(times) / len(images), max(peaks)


def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        images = _images(args.images, Path(tmp), args.images_dir)
        e2e_images = _images(args.end_to_end_images, Path(tmp), args.images_dir)
        ms_e2e, rss_e2e = _end_to_end(e2e_images, args.model, Path(tmp) / "out", json_only=False)
        members = len(read_card(args.model or DEFAULT_MODEL_DIR).members)  # 0: not an ensemble
        ensemble = members > 0
        # an ensemble's fast mode: one member, the same whole command
        one = _end_to_end(e2e_images, args.model, Path(tmp) / "one", json_only=False, members=1) if ensemble else None
        ms_json, rss_json = _end_to_end(e2e_images, args.model, Path(tmp) / "out", json_only=True)
        volume = [_volume(Path(tmp))]  # one input: "ms per image" is the whole scan's
        volume_ms, volume_rss = _end_to_end(volume, args.model, Path(tmp) / "volume", json_only=False)
        volume_one = (
            _end_to_end(volume, args.model, Path(tmp) / "volume-one", json_only=False, members=1) if ensemble else None
        )
        cold = _cold_start(images[0], args.model)
        analyzer = Analyzer.load(args.model)
        ms = _time_each(lambda p: _default(analyzer, p), images)
        scans = [load_scan(p) for p in images]
        t = time.perf_counter()
        for i in range(0, len(scans), 8):
            analyzer.analyze_scans(scans[i : i + 8], spacing_mm=0.49)
        batch_ips = len(scans) / (time.perf_counter() - t)
        rss = _rss_mb()  # before torch is imported: the default pipeline's own peak
        reference = _reference_pipeline()
        ms_ref = _time_each(reference, images)
        rss_ref = _rss_mb()
    out = {
        "images": len(images),
        "image_source": "synthetic 512×512" if images[0].name.startswith("synthetic") else str(images[0].parent),
        "input_size": analyzer.size,
        "ms_per_image": round(ms, 2),
        "ms_per_image_reference": round(ms_ref, 2),
        "speedup": round(ms_ref / ms, 2),
        "images_per_s_batch": round(batch_ips, 1),
        "peak_rss_mb": round(rss, 1),
        "peak_rss_mb_with_reference": round(rss_ref, 1),
        "cold_start_s": round(cold, 3),
        "end_to_end_images": len(e2e_images),
        "ms_per_image_end_to_end": round(ms_e2e, 2),
        "ms_per_image_json_only": round(ms_json, 2),
        "end_to_end_over_json": round(ms_e2e / ms_json, 2),
        "peak_rss_mb_end_to_end": round(rss_e2e, 1),
        "peak_rss_mb_json_only": round(rss_json, 1),
        "volume_shape": list(VOLUME_SHAPE),
        "volume_s_end_to_end": round(volume_ms / 1000, 2),
        "volume_peak_rss_mb": round(volume_rss, 1),
        "volume_meets_target": volume_ms / 1000 <= (VOLUME_S_ENSEMBLE if ensemble else VOLUME_S_ONE),
    }
    if one is not None:
        out |= {
            "members": members,
            "ms_per_image_end_to_end_one_member": round(one[0], 2),
            "volume_s_end_to_end_one_member": None if volume_one is None else round(volume_one[0] / 1000, 2),
            "peak_rss_mb_end_to_end_one_member": round(one[1], 1),
            # the fold ensemble's targets (its issue): whole ensemble ≤ 70 ms and ≤ 400 MB, one member ≤ 25 ms
            "meets_targets": {
                "ensemble_ms": ms_e2e <= ENSEMBLE_MS,
                "ensemble_rss": rss_e2e <= ENSEMBLE_RSS_MB,
                "one_member_ms": one[0] <= ONE_MEMBER_MS,
                "one_member_volume_s": volume_one is not None and volume_one[0] / 1000 <= VOLUME_S_ONE,
            },
        }
    if args.json:
        print(json.dumps(out))
    else:
        print(
            f"{out['images']} {out['image_source']}, one at a time (read → both tasks → mask at full size → "
            f"area → contour)\n"
            f"  default   (ONNX Runtime, multi-task U-Net {analyzer.size}px): {ms:7.1f} ms/image, "
            f"{batch_ips:.0f} img/s in batches of 8, peak RSS {rss:.0f} MB, cold start {cold:.2f} s\n"
            f"  reference (PyTorch InceptionV3 299px + small U-Net 256px): {ms_ref:7.1f} ms/image "
            f"(process RSS with both {rss_ref:.0f} MB)\n"
            f"  speedup {ms_ref / ms:.1f}×\n"
            f"  end to end, whole 'braintumor analyze' process over {len(e2e_images)} images (start-up included): "
            f"--out (masks, overlays, CSV) {ms_e2e:.1f} ms/image, --json only {ms_json:.1f} ms/image "
            f"(ratio {ms_e2e / ms_json:.2f}), peak RSS {rss_e2e:.0f} MB\n"
            f"  whole scan, 'braintumor analyze volume.nii.gz --out' ({'×'.join(map(str, VOLUME_SHAPE))} synthetic "
            f"NIfTI): {volume_ms / 1000:.2f} s (target ≤ {VOLUME_S_ENSEMBLE if ensemble else VOLUME_S_ONE:g} s), "
            f"peak RSS {volume_rss:.0f} MB"
        )
        if one is not None:
            print(
                f"  ensemble of {out['members']} members, --out: {ms_e2e:.1f} ms/image (target ≤ {ENSEMBLE_MS:g}), "
                f"peak RSS {rss_e2e:.0f} MB (target ≤ {ENSEMBLE_RSS_MB:g}); --members 1: {one[0]:.1f} ms/image "
                f"(target ≤ {ONE_MEMBER_MS:g}), peak RSS {one[1]:.0f} MB"
                + (
                    ""
                    if volume_one is None
                    else f"; whole scan {volume_one[0] / 1000:.2f} s (target ≤ {VOLUME_S_ONE:g} s)"
                )
            )
    return 0
