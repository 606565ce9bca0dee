"""``braintumor inspect FILE``: what the reader sees (size, value range, spacing and its source)."""

import argparse

from braintumor.imageio import load_scan


def run(args: argparse.Namespace) -> int:
    scan = load_scan(args.input, slice_index=args.slice)
    spacing = "unknown" if scan.spacing_mm is None else f"{scan.spacing_mm[0]:g} × {scan.spacing_mm[1]:g} mm"
    print(
        f"{scan.name}: {scan.meta.get('format', '?')} {scan.shape[1]}×{scan.shape[0]} px, "
        f"values {scan.pixels.min():g}..{scan.pixels.max():g}, slice {scan.slice_index + 1}/{scan.n_slices}, "
        f"spacing {spacing} ({scan.spacing_source})"
    )
    return 0
