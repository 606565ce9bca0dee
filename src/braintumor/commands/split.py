"""``braintumor split``: the patient-level k-fold assignment of a dataset, leakage-checked, as CSV."""

import argparse

from braintumor.data import check_no_leakage, patient_kfold, read_manifest, write_manifest


def run(args: argparse.Namespace) -> int:
    records = read_manifest(args.data)
    folds = patient_kfold(records, k=args.folds, seed=args.seed)
    for f in range(args.folds):
        check_no_leakage(
            records, {r.id: ("val" if fold == f else "train") for r, fold in zip(records, folds, strict=True)}
        )
    write_manifest(records, args.out, {r.id: str(fold) for r, fold in zip(records, folds, strict=True)})
    print(
        f"{len(records)} images, {args.folds} patient-level folds (seed {args.seed}), "
        f"no patient on two sides → {args.out}"
    )
    return 0
