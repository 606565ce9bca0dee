"""``braintumor evaluate``: a model folder on a dataset → OUT/report.json, report.md, CSVs, plots, gallery/."""

import argparse

from braintumor.evaluation.evaluate import check_requirements, evaluate, summarise
from braintumor.evaluation.gallery import write_gallery
from braintumor.evaluation.report import classification_summary, segmentation_summary, write_report
from braintumor.inference import Analyzer


def run(args: argparse.Namespace) -> int:
    check_requirements()  # before any prediction: a missing plotting library must not cost a whole run
    analyzer = Analyzer.load(args.model, members=args.members)  # scores what the card's task produces
    outcomes, described = evaluate(args.data, analyzer, split=args.split)
    report = summarise(outcomes, n_boot=args.bootstrap)
    write_report(report, outcomes, args.out, described, *analyzer.described)
    write_gallery(outcomes, analyzer, args.out / "gallery")  # after report.json: a drawing failure loses no figure
    print(
        f"{described}\n{report['n_images']} images: {classification_summary(report)}, "
        f"{segmentation_summary(report)} → {args.out / 'report.md'}"
    )
    return 0
