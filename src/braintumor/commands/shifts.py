"""``braintumor shifts``: see ``braintumor.experiments.acquisition_shifts``."""

import argparse
import csv

from braintumor.bundle import Task, require_task
from braintumor.errors import OptionError
from braintumor.experiments.acquisition_shifts import COLUMNS, markdown, shift_table
from braintumor.inference import Analyzer
from braintumor.preprocessing.shifts import SHIFTS


def run(args: argparse.Namespace) -> int:
    unknown = sorted(set(args.shift or ()) - set(SHIFTS))
    if unknown:
        raise OptionError("--shift", f"unknown shift {', '.join(unknown)}; choose from {', '.join(SHIFTS)}")
    analyzer = Analyzer.load(args.model)
    require_task(
        analyzer.model_dir, analyzer.card, Task.SEGMENT_AND_CLASSIFY, "the shift table scores type and outline"
    )
    rows, described = shift_table(args.data, analyzer, names=args.shift, limit=args.limit)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "shifts.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    table = markdown(rows, described, analyzer.card.name)
    (args.out / "shifts.md").write_text(table)
    print(table)
    return 0
