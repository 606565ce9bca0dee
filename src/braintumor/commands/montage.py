"""``braintumor montage``: a gallery folder from evaluate → one small PNG for a README."""

from braintumor.evaluation.gallery import montage


def run(args) -> int:
    path = montage(args.gallery, args.out)
    print(f"{path} ({path.stat().st_size / 1000:.0f} KB)")
    return 0
