"""``braintumor cv``: see ``braintumor.experiments.crossval``."""

import argparse
import logging

from braintumor.errors import OptionError
from braintumor.evaluation.report import classification_summary, segmentation_summary
from braintumor.experiments.crossval import cross_validate
from braintumor.training.config import TrainConfig


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.ensemble:
        return _ensemble(args)
    if args.fold:
        raise OptionError("--fold", "needs --ensemble: the folder where the fold is kept as a member")
    report = cross_validate(TrainConfig.from_args(args), n_boot=args.bootstrap, final=args.final)
    print(
        f"{args.folds}-fold CV, pooled out of fold: {classification_summary(report)}, "
        f"{segmentation_summary(report)} → {args.out / 'cv.md'}"
        + (f"; final model (all patients): {args.out / 'final'}" if args.final else "")
    )
    return 0


def _ensemble(args: argparse.Namespace) -> int:
    from braintumor.experiments.ensemble import train_fold

    if args.final or args.init:
        raise OptionError("--ensemble", "trains fold members from scratch; it takes neither --final nor --init")
    folds = args.fold if args.fold else range(args.folds)
    bad = [k for k in folds if not 0 <= k < args.folds]
    if bad:
        raise OptionError(f"--fold {bad[0]}", f"choose a fold from 0 to {args.folds - 1}")
    for fold in folds:
        member = train_fold(TrainConfig.from_args(args), fold, args.ensemble, n_boot=args.bootstrap)
        print(f"fold {fold}: member {member}")
    print((args.ensemble / "cv.md").read_text(), end="")
    return 0
