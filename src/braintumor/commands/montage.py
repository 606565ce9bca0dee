"""``braintumor montage``: a gallery folder from evaluate → one small PNG for a README."""

import argparse

from braintumor.evaluation.gallery import montage


def run(args: argparse.Namespace) -> int:
    path = montage(args.gallery, args.out)
    print(f"{path} ({path.stat().st_size / 1000:.0f} KB)")
    return 0
