"""Patient-level k-fold cross-validation: one model per fold, each scored by ``evaluate`` on its unseen fold.

One fold's figures overstated accuracy by 5 points on new patients (the same fold chose the epoch, the step
and the post-processing); the mean ± sd over folds and the pooled out-of-fold report are what a recipe is
chosen by.  Resumable fold by fold: a fold with a model card is not trained again, a fold with checkpoints
continues from its last epoch.  ``--init`` with another CV folder continues that recipe: each fold starts from
the same fold's model (which never saw its patients) and the final model from that CV's final model.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from braintumor.bundle import is_model_folder
from braintumor.data import read_manifest
from braintumor.data.splits import check_sides, group_key
from braintumor.errors import OptionError
from braintumor.evaluation.evaluate import SliceOutcome, evaluate, summarise
from braintumor.evaluation.report import write_report
from braintumor.models import ARCHITECTURES
from braintumor.training.config import TrainConfig, plan_folds
from braintumor.training.run import train

if TYPE_CHECKING:  # annotations only: the functions below import inference where they run it
    from braintumor.inference import Analyzer

#: report.json keys tabulated per fold (None where a fold has no value)
METRICS = (
    "tumor_type_accuracy",
    "accuracy",
    "macro_f1",
    "dice_mean",
    "dice_glioma",
    "area_error_median",
    "notumor_outlined",
    "ece",
    "missed_tumors",
)


def fold_dir(out: Path, fold: int) -> Path:
    return Path(out) / f"fold{fold}"


def is_cv_folder(path: Path | None) -> bool:
    return path is not None and is_model_folder(Path(path) / "fold0")


def fold_start(base: TrainConfig, fold: int | None) -> Path | None:
    """The weights fold ``fold`` (None: the final model) starts from: ``base.init``, or for a CV folder its own
    fold's model (its final model for the final)."""
    if not is_cv_folder(base.init):
        return base.init
    assert base.init is not None, "is_cv_folder is False for None"
    start = fold_dir(base.init, fold) if fold is not None else Path(base.init) / "final"
    if not is_model_folder(start):
        raise OptionError(
            f"--init {base.init}",
            f"it has no {start.name}/ model to continue; train it with that CV's recipe "
            f"({'braintumor cv ... --final' if fold is None else 'braintumor cv'} --out {base.init}), "
            f"or for the final model 'braintumor train ... --all-patients --out {start}'",
        )
    return start


def check_fold(cfg: TrainConfig) -> None:
    """No patient of the fold's validation side is in its training side (read back from the run's split.csv)."""
    with open(Path(cfg.out) / "split.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    check_sides(((group_key(r["patient_id"], r["id"]), r["split"]) for r in rows), f"fold {cfg.val_fold}")


def cross_validate(base: TrainConfig, n_boot: int = 1000, final: bool = False) -> dict[str, Any]:
    """Train and evaluate every fold of ``base`` (its ``out`` becomes the CV folder); returns the pooled report.

    ``final``: then choose the post-processing on the out-of-fold predictions, train the recipe on all patients
    (``out/final``) and give that model the chosen post-processing, a calibration cross-fitted from the folds and
    the CV figures as its accuracy estimate."""
    from braintumor.inference import Analyzer

    if final and ARCHITECTURES[base.arch][0] != "segmentation+classification":
        raise OptionError("--final", f"needs a model that outlines and classifies (multitask_unet), not {base.arch}")
    out = Path(base.out)
    out.mkdir(parents=True, exist_ok=True)
    for fold, planned in enumerate(plan_folds(base, out, range(base.folds)).values()):
        cfg = replace(planned, init=fold_start(base, fold))
        if not is_model_folder(cfg.out):
            train(replace(cfg, resume=(cfg.out / "checkpoints" / "last.ckpt").is_file()))
        check_fold(cfg)
    models = [Analyzer(fold_dir(out, k)) for k in range(base.folds)]
    _, report = score_folds(base, models, out, n_boot)
    if final:
        return finish(base, models, out, n_boot)
    return report


def score_folds(
    base: TrainConfig, models: Sequence[Analyzer], out: Path, n_boot: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Each fold model on its unseen fold, then pooled: ``out``/fold*/eval, ``out``/pooled, cv.csv, cv.md."""
    rows, pooled = [], []
    for fold, model in enumerate(models):
        outcomes, described = evaluate(base.data, model, split="unseen", progress=base.progress)
        report = summarise(outcomes, n_boot=n_boot)
        write_report(report, outcomes, out / f"fold{fold}" / "eval", described, *model.described)
        rows.append(
            {
                "fold": fold,
                "patients": report["n_patients"],
                "images": report["n_images"],
                **{k: _metric(report, k) for k in METRICS},
            }
        )
        pooled += outcomes
    _check_out_of_fold(base, pooled)
    report = summarise(pooled, n_boot=n_boot)
    write_report(
        report,
        pooled,
        out / "pooled",
        f"out-of-fold predictions of {base.folds} patient-level folds "
        f"(every row scored once, by the model that did not train on it)",
        f"cv-{base.arch}",
        f"{base.folds}-fold CV, seed {base.seed}",
    )
    _write_table(rows, report, out, base, getattr(models[0], "postprocessing", None))
    return rows, report


def finish(base: TrainConfig, models: list[Analyzer], out: Path, n_boot: int) -> dict[str, Any]:
    """Post-processing chosen by CV (scored again with it: ``out``/chosen), the final all-patients model
    (``out``/final) with that post-processing, a cross-fitted calibration and the CV figures in its card."""
    from braintumor.bundle import read_card, write_card
    from braintumor.experiments.calibration_fit import calibrate_from_folds, store
    from braintumor.experiments.postprocessing_search import search, table
    from braintumor.inference import Analyzer

    chosen, candidates = search(base.data, models, n_boot=min(n_boot, 200))
    (out / "postprocessing.md").write_text(
        "# Post-processing chosen on the pooled out-of-fold predictions\n\n" + table(candidates)
    )
    for model in models:
        model.postprocessing = chosen
    rows, report = score_folds(base, models, out / "chosen", n_boot)
    final = out / "final"
    if not is_model_folder(final):
        resume = (final / "checkpoints" / "last.ckpt").is_file()
        planned = plan_folds(base, out, [], final=True)["final"]
        train(replace(planned, resume=resume, init=fold_start(base, None)))
    block, features = calibrate_from_folds(base.data, models, Analyzer(final), progress=base.progress)
    store(final, block, features)
    card = replace(read_card(final), postprocessing=chosen, cross_validation=cv_block(base, rows, report))
    write_card(final, card)
    return report


def cv_block(base: TrainConfig, rows: list[dict[str, Any]], report: dict[str, Any]) -> dict[str, Any]:
    """The card's estimate of a final model's accuracy on new patients: its recipe's cross-validation."""
    columns = {k: [r[k] for r in rows if r[k] is not None] for k in METRICS}
    return {
        "protocol": f"patient-level class-stratified {base.folds}-fold cross-validation of this recipe (seed "
        f"{base.seed}): each fold model trained on the other folds (last epoch, nothing chosen on the scored fold) "
        "and scored by 'braintumor evaluate' on its unseen patients at native resolution, with the post-processing "
        "chosen on the pooled out-of-fold predictions" + (f"; {_start_note(base)}" if base.init else ""),
        "per_fold": rows,
        "mean": {k: float(np.mean(v)) for k, v in columns.items() if v},
        "sd": {k: float(np.std(v, ddof=1)) for k, v in columns.items() if len(v) > 1},
        "pooled": {k: _metric(report, k) for k in METRICS} | {"ci95": report.get("ci95", {})},
    }


def _start_note(base: TrainConfig) -> str:
    """Where the recipe's weights started, for cv.md and the card."""
    if is_cv_folder(base.init):
        return f"each fold continued from the same fold of `{base.init}` (the final model from its final model)"
    return f"--init {base.init}"


def _metric(report: dict[str, Any], key: str) -> Any:
    if key == "dice_glioma":
        return report["segmentation_per_class"].get("glioma", {}).get("dice_mean")
    return report.get(key)


def _check_out_of_fold(base: TrainConfig, pooled: list[SliceOutcome]) -> None:
    """Every row of the dataset scored exactly once across the folds."""
    records = read_manifest(base.data)
    ids = [o.record.id for o in pooled]
    if len(ids) != len(set(ids)):
        raise AssertionError("a row was scored by two folds")
    if base.limit_per_class is None and set(ids) != {r.id for r in records}:
        missing = len({r.id for r in records} - set(ids))
        raise AssertionError(f"{missing} rows were never scored out of fold")


def _write_table(
    rows: list[dict[str, Any]], pooled: dict[str, Any], out: Path, base: TrainConfig, postprocessing: Any = None
) -> None:
    with open(out / "cv.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        f"# {base.folds}-fold patient-level cross-validation",
        "",
        f"Recipe: `{base.arch}`, {base.input_size} px, {base.epochs} epochs max, batch {base.batch_size}, "
        f"lr {base.lr:g}, seed {base.seed}, precision {base.training_precision}, the last epoch of each fold"
        + (f", {_start_note(base)}" if base.init else "")
        + (f", {base.limit_per_class} images per class (smoke test)" if base.limit_per_class else "")
        + (f"; post-processing {asdict(postprocessing)}" if postprocessing is not None else "")
        + ".",
        "",
        "| fold | patients | images | " + " | ".join(METRICS) + " |",
        "|" + "---|" * (3 + len(METRICS)),
    ]
    for r in rows:
        lines.append(
            f"| {r['fold']} | {r['patients']} | {r['images']} | " + " | ".join(_cell(r[k]) for k in METRICS) + " |"
        )
    for name, fn in (("mean", np.mean), ("sd", lambda v: np.std(v, ddof=1) if len(v) > 1 else 0.0)):
        cells = [
            _cell(fn([r[k] for r in rows if r[k] is not None])) if any(r[k] is not None for r in rows) else "n/a"
            for k in METRICS
        ]
        lines.append(f"| **{name}** | | | " + " | ".join(cells) + " |")
    ci = pooled.get("ci95", {})
    lines += [
        "",
        "Pooled out-of-fold (95% bootstrap CI by patient): "
        f"tumor-type accuracy {_cell(pooled['tumor_type_accuracy'])} {_ci(ci, 'tumor_type_accuracy')}, "
        f"4-class accuracy {_cell(pooled['accuracy'])} {_ci(ci, 'accuracy')}, "
        f"Dice mean {_cell(pooled['dice_mean'])} {_ci(ci, 'dice_mean')}, "
        f"area error median {_cell(pooled['area_error_median'])} {_ci(ci, 'area_error_median')}. "
        "Full report: pooled/report.md.",
        "",
    ]
    (out / "cv.md").write_text("\n".join(lines))


def _cell(value: object) -> str:
    return "n/a" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def _ci(ci: dict[str, list[float]], key: str) -> str:
    return f"({ci[key][0]:.3f}–{ci[key][1]:.3f})" if key in ci else ""
