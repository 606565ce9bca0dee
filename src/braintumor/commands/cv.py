"""``braintumor cv``: see ``braintumor.evaluation.crossval``."""

import argparse
import logging

from braintumor.commands.train import config
from braintumor.evaluation.crossval import cross_validate
from braintumor.evaluation.report import classification_summary, segmentation_summary


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    report = cross_validate(config(args), n_boot=args.bootstrap, final=args.final)
    print(
        f"{args.folds}-fold CV, pooled out of fold: {classification_summary(report)}, "
        f"{segmentation_summary(report)} → {args.out / 'cv.md'}"
        + (f"; final model (all patients): {args.out / 'final'}" if args.final else "")
    )
    return 0
