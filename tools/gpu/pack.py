"""Pack a dataset for the lent GPU machine: ``.gpu/data`` and ``.gpu/whl`` (git-ignored, never committed).

The machine receives only the working tree, 64 MiB in all, and ``../shared/data/dev`` is 90 MB. Training reads
every slice padded to a square and resized to the network side before anything else, so this writes exactly
that as 8-bit PNG (about a third of the bytes) in the manifest layout, same ids, patients, labels and row order,
so that the GPU's folds are this machine's folds (``unpack.py`` checks it). The intensity scaling that follows
is invariant to the linear stretch used here; what is lost is rounding to 8 bits, and ``pack.json`` records the
largest difference this makes to a network input over all slices.

    python tools/gpu/pack.py --data ../shared/data/dev --wheels ../shared/wheels
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from braintumor.data import read_manifest
from braintumor.data.manifest import load_record
from braintumor.errors import ScanError
from braintumor.preprocessing import mask_to_input, square_resize, to_model_input

FIELDS = ["id", "image", "mask", "label", "patient_id", "spacing_mm"]


def to_uint8(small: np.ndarray) -> np.ndarray:
    """The slice's own range stretched onto 0–255 and rounded: the network input is invariant to the stretch, and
    a faint slice keeps 256 levels instead of the few it spans."""
    lo, hi = float(small.min()), float(small.max())
    return np.rint((small - lo) * (255.0 / max(hi - lo, 1e-6))).astype(np.uint8)


def pack(data: Path, out: Path, size: int) -> dict[str, Any]:
    """Write the packed manifest; returns its summary (also written to ``out``/pack.json)."""
    records = read_manifest(data)
    if out.exists():
        shutil.rmtree(out)
    (out / "images").mkdir(parents=True)
    (out / "masks").mkdir()
    rows: list[dict[str, str]] = []
    worst = 0.0
    for r in records:
        try:
            scan, mask = load_record(r)
        except ScanError as err:  # a skipped row would shift the patient-level split on the other machine
            raise SystemExit(f"pack: {err}; fix or remove that row first") from None
        small, geometry = square_resize(scan.pixels, size)
        packed = to_uint8(small)
        there, _ = to_model_input(packed, size)  # what training on the GPU machine will read
        worst = max(worst, float(np.abs(there - to_model_input(scan.pixels, size)[0]).max()))
        name = f"{len(rows):05d}.png"
        Image.fromarray(packed).save(out / "images" / name, optimize=True)
        if r.mask is not None or mask.any():
            Image.fromarray(mask_to_input(mask, size) * 255).save(out / "masks" / name, optimize=True)
        spacing = r.spacing_mm * geometry.side / size if r.spacing_mm else None
        rows.append(
            {
                "id": r.id,
                "image": f"images/{name}",
                "mask": f"masks/{name}" if (out / "masks" / name).is_file() else "",
                "label": r.label,
                "patient_id": r.patient_id or "",
                "spacing_mm": f"{spacing:.6g}" if spacing else "",
            }
        )
    with open(out / "index.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    summary = {
        "source": str(data),
        "size": size,
        "rows": len(rows),
        "bytes": sum(p.stat().st_size for p in out.rglob("*") if p.is_file()),
        "max_input_difference": worst,
    }
    (out / "pack.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="a dataset folder (any layout braintumor reads)")
    p.add_argument("--out", type=Path, default=Path(".gpu/data"))
    p.add_argument("--size", type=int, default=160, help="the network side the runs will use")
    p.add_argument("--wheels", type=Path, help="a folder of wheels the GPU machine lacks (MONAI), copied to .gpu/whl")
    args = p.parse_args(argv)
    summary = pack(args.data, args.out, args.size)
    if args.wheels:
        whl = args.out.parent / "whl"
        if whl.exists():  # two versions of one package would stop the install there
            shutil.rmtree(whl)
        whl.mkdir(parents=True)
        for wheel in sorted(args.wheels.glob("*.whl")):
            shutil.copy2(wheel, whl / wheel.name)
    print(
        f"packed {summary['rows']} rows at {summary['size']} px: {summary['bytes'] / 2**20:.1f} MiB in {args.out}; "
        f"largest network-input difference {summary['max_input_difference']:.4f}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
