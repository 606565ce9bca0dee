"""The fold ensemble, one fold at a time: train fold K (resumable), score it on its unseen patients, and add it to
an ensemble folder as a compact member with its evaluation, where a later session, on another machine, finds it.

Each member is used twice, as nnU-Net uses its folds: its unseen patients give the cross-validated estimate, and
it is one of the shipped model's members. There is no separate final model.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from braintumor import CLASSES
from braintumor.bundle import (
    ENSEMBLE,
    Calibration,
    ModelCard,
    ModelFolderError,
    is_model_folder,
    pin_member,
    read_card,
    write_card,
)
from braintumor.data import Record, read_manifest, train_val_test_split
from braintumor.data.patient_keys import trained_groups
from braintumor.data.splits import group_of
from braintumor.evaluation import metrics as M
from braintumor.evaluation.evaluate import SliceOutcome, evaluate, summarise
from braintumor.evaluation.report import write_report
from braintumor.experiments.calibration_fit import fit_temperature
from braintumor.experiments.quantization import make_int8
from braintumor.inference.calibration import apply_temperature
from braintumor.training.config import TrainConfig, plan_folds
from braintumor.training.run import train

log = logging.getLogger(__name__)

#: a member's committed evaluation: figures and one row per slice, no images and no patient ids
EVAL = "eval"
SLICES = "per_slice.csv"
#: the same rows from the member's float graph, before it was made int8
FLOAT_SLICES = "per_slice.float.csv"
SLICE_FIELDS = [
    "id",
    "group",
    "label",
    "predicted",
    *[f"p_{c}" for c in CLASSES],
    "dice",
    "iou",
    "hd95_mm",
    "area_true_cm2",
    "area_pred_cm2",
    "pred_pixels",
    "error",
]


def member_name(fold: int) -> str:
    return f"fold{fold}"


def train_fold(base: TrainConfig, fold: int, ensemble: Path, n_boot: int = 1000) -> Path:
    """Fold ``fold`` of ``base``'s recipe as a member of ``ensemble`` (created with its first member); a member
    already there is checked against today's split and kept. Returns the member folder."""
    from braintumor.inference import Analyzer
    from braintumor.inference.export import export_member

    ensemble, name = Path(ensemble), member_name(fold)
    member = ensemble / name
    records = read_manifest(base.data)
    if is_member(ensemble, name):
        check_member_split(records, member, read_card(member))
        log.info("%s: already a member, its split agrees with today's; not trained again", member)
        if read_card(member).quantization is None:  # a member made before members were int8
            if not (member / EVAL / FLOAT_SLICES).is_file():
                (member / EVAL / SLICES).rename(member / EVAL / FLOAT_SLICES)
            make_int8(member, base.data)
            score_member(member, base.data, n_boot, base.progress)
            add_member(ensemble, name)
        if read_card(member).calibration is None:  # made before members had their own, or just made int8
            fit_member_ood(ensemble, name, base.data, base.progress)
        return member
    shutil.rmtree(member, ignore_errors=True)  # a member left half-made by a stopped run: made again
    cfg = replace(plan_folds(base, base.out, [fold])[name], init=None)
    if not is_model_folder(cfg.out):
        train(replace(cfg, resume=(cfg.out / "checkpoints" / "last.ckpt").is_file()))
    export_member(cfg.out, member, {"member": f"{name} of a {base.folds}-fold ensemble: {cfg.command}"})
    float_rows, _ = evaluate(base.data, Analyzer(member), split="unseen", progress=base.progress)
    (member / EVAL).mkdir(exist_ok=True)
    write_slices(float_rows, member / EVAL / FLOAT_SLICES)  # what quantization is measured against
    make_int8(member, base.data)
    score_member(member, base.data, n_boot, base.progress, cfg.out / EVAL)
    add_member(ensemble, name)  # a member from here on: a stop below leaves only its out-of-distribution model to fit
    fit_member_ood(ensemble, name, base.data, base.progress)
    return member


def score_member(
    member: Path, data: str | Path, n_boot: int, progress: bool, report_dir: Path | None = None
) -> list[SliceOutcome]:
    """Score the member as it ships (its int8 graph) on its unseen patients: ``eval/report.json`` and the rows
    ``eval/per_slice.csv`` the CV table is made of (and the full report with plots in ``report_dir``, if given)."""
    from braintumor.inference import Analyzer

    analyzer = Analyzer(member)
    outcomes, described = evaluate(data, analyzer, split="unseen", progress=progress)
    report = summarise(outcomes, n_boot=n_boot)
    if report_dir is not None:
        write_report(report, outcomes, report_dir, described, *analyzer.described)  # with plots, not committed
    (member / EVAL).mkdir(exist_ok=True)
    (member / EVAL / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    write_slices(outcomes, member / EVAL / SLICES)
    return outcomes


def fit_member_ood(ensemble: Path, name: str, data: str | Path, progress: bool = True) -> None:
    """The member's out-of-distribution model: a feature model of its own training images and its threshold and
    false-alarm rate from its own unseen patients (``calibration_fit.calibrate``, temperature kept at 1), stored in
    the member and pinned again in the ensemble."""
    from braintumor.experiments.calibration_fit import calibrate, store
    from braintumor.inference import Analyzer

    block, features = calibrate(data, Analyzer(ensemble / name), progress=progress, temperature_scaling=False)
    store(ensemble / name, block, features)
    add_member(ensemble, name)


def is_member(ensemble: Path, name: str) -> bool:
    """``ensemble/name`` is complete (its evaluation written) and pinned in the ensemble's card."""
    if not (is_model_folder(ensemble) and (ensemble / name / EVAL / SLICES).is_file()):
        return False
    return name in {m.name for m in read_card(ensemble).members}


def add_member(ensemble: Path, name: str) -> ModelCard:
    """Pin ``ensemble/name`` in the ensemble's card (made from the member's card when it has none yet)."""
    member = read_card(ensemble / name)
    if is_model_folder(ensemble):
        card = read_card(ensemble)
        if (member.task, member.classes, member.input) != (card.task, card.classes, card.input):
            raise ModelFolderError(
                str(ensemble / name), "differs from the ensemble's members in task, classes or input"
            )
        kept = [m for m in card.members if m.name != name]
    else:
        card = ModelCard(
            name="braintumor-ensemble",
            architecture=ENSEMBLE,
            task=member.task,
            classes=member.classes,
            input=member.input,
            description="the mean of patient-level cross-validation fold models of one recipe: class and mask "
            "probabilities averaged, the mask thresholded after averaging",
            postprocessing=member.postprocessing,
            members=(pin_member(ensemble, name),),
            software=member.software,
            intended_use=member.intended_use,
        )
        kept = []
    members = tuple(sorted([*kept, pin_member(ensemble, name)], key=lambda m: m.name))
    card = write_card(ensemble, replace(card, members=members))
    figures = cv_figures(ensemble)
    (ensemble / "cv.md").write_text(cv_markdown(figures))
    calibration = out_of_fold_calibration(member_outcomes(ensemble))
    return write_card(ensemble, replace(card, cross_validation=figures, calibration=calibration))


def out_of_fold_calibration(by_member: dict[str, list[SliceOutcome]]) -> Calibration:
    """The ensemble's temperature, fitted on the members' pooled out-of-fold class probabilities; its expected
    calibration error is reported cross-fitted (each member's rows under a temperature fitted on the others'), or,
    with one member, on the rows it was fitted on (then said so). No out-of-distribution model: the members' feature
    spaces differ, and none is fitted for their mean yet."""
    rows = {name: [o for o in outcomes if o.probs is not None] for name, outcomes in by_member.items()}
    probs = np.concatenate([np.stack([o.scored_probs for o in r]) for r in rows.values()])
    labels = np.concatenate([np.array([o.true for o in r]) for r in rows.values()])
    member = np.concatenate([np.full(len(r), i) for i, r in enumerate(rows.values())])
    temperature = fit_temperature(probs, labels)
    crossed = len(rows) > 1
    calibrated = apply_temperature(probs, temperature)
    if crossed:
        for i in range(len(rows)):
            own = member == i
            calibrated[own] = apply_temperature(probs[own], fit_temperature(probs[~own], labels[~own]))
    return Calibration(
        temperature=round(temperature, 4),
        fitted_on=f"the pooled out-of-fold class probabilities of {len(rows)} member(s) ({len(labels)} rows); "
        "applied to the members' mean, which is less confident than one member, so it may over-sharpen until the "
        "ensemble's own outputs are measured on unseen patients",
        heldout={
            "images": len(labels),
            "protocol": "each member's rows under the temperature fitted on the other members' rows"
            if crossed
            else "one member: the rows the temperature was fitted on (not held out)",
            "ece_before": round(M.expected_calibration_error(probs, labels), 4),
            "ece_after": round(M.expected_calibration_error(calibrated, labels), 4),
            "nll_before": round(M.nll(probs, labels), 4),
            "nll_after": round(M.nll(calibrated, labels), 4),
        },
    )


def check_member_split(records: list[Record], folder: Path, card: ModelCard) -> None:
    """Refuse a member whose training patients are not exactly the training side of today's split of ``records``
    under its recipe (another manifest, another split rule): its fold would not be unseen."""
    training = card.training
    recipe = training.split_recipe if training else None
    if recipe is None or recipe.folds is None or recipe.val_fold is None or recipe.seed is None:
        raise ModelFolderError(str(folder), "ensemble member without a fold recipe in its card")
    split = train_val_test_split(records, val_fold=recipe.val_fold, k=recipe.folds, seed=recipe.seed)
    expected = {group_of(r) for r in records if split[r.id] == "train"}
    trained = trained_groups(records, [training])
    if trained != expected:
        raise ModelFolderError(
            str(folder),
            f"its training patients differ from today's split of this dataset (fold {recipe.val_fold} of "
            f"{recipe.folds}, seed {recipe.seed}): {len(trained - expected)} trained groups now on the unseen side, "
            f"{len(expected - trained)} training groups it never saw; retrain it on this manifest",
        )


def write_slices(outcomes: list[SliceOutcome], path: Path) -> None:
    """One row per scored slice with what pooled figures are recomputed from; patients as anonymous groups."""
    groups: dict[str, str] = {}
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=SLICE_FIELDS)
        writer.writeheader()
        for o in outcomes:
            # a patient becomes g0, g1, …; an image without a patient stays its own group (no group written)
            group = groups.setdefault(group_of(o.record), f"g{len(groups)}") if o.record.patient_id else ""
            probs = (
                {} if o.probs is None else {f"p_{c}": round(float(p), 5) for c, p in zip(CLASSES, o.probs, strict=True)}
            )
            writer.writerow(
                {
                    "id": o.record.id,
                    "group": group,
                    "label": o.record.label,
                    "predicted": "" if o.pred is None else CLASSES[o.pred],
                    **probs,
                    **{
                        k: "" if getattr(o, k) is None else round(float(getattr(o, k)), 5)
                        for k in ("dice", "iou", "hd95_mm", "area_true_cm2", "area_pred_cm2")
                    },
                    "pred_pixels": o.pred_pixels,
                    "error": o.error or "",
                }
            )


def read_slices(path: Path, member: str) -> list[SliceOutcome]:
    """A member's committed rows as outcomes again (groups prefixed by the member: folds share no patient)."""
    outcomes = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            patient = f"{member}-{row['group']}" if row["group"] else None
            record = Record(row["id"], Path(row["id"]), None, row["label"], patient, None)
            number = {k: float(row[k]) if row[k] else None for k in ("dice", "iou", "hd95_mm", "area_true_cm2")}
            area_pred = float(row["area_pred_cm2"]) if row["area_pred_cm2"] else None
            probs = np.array([float(row[f"p_{c}"]) for c in CLASSES]) if row["predicted"] else None
            outcomes.append(
                SliceOutcome(
                    record,
                    CLASSES.index(row["label"]),
                    CLASSES.index(row["predicted"]) if row["predicted"] else None,
                    probs,
                    dice=number["dice"],
                    iou=number["iou"],
                    hd95_mm=number["hd95_mm"],
                    area_true_cm2=number["area_true_cm2"],
                    area_pred_cm2=area_pred,
                    pred_pixels=int(row["pred_pixels"]),
                    ood_warned=None,
                    error=row["error"] or None,
                )
            )
    return outcomes


def member_outcomes(ensemble: Path) -> dict[str, list[SliceOutcome]]:
    """Each member's committed out-of-fold rows, by member name."""
    card = read_card(ensemble)
    return {m.name: read_slices(Path(ensemble) / m.name / EVAL / SLICES, m.name) for m in card.members}


def cv_figures(ensemble: Path, n_boot: int = 1000) -> dict[str, Any]:
    """The members' cross-validation, from their committed rows: per fold, mean ± sd over folds, and pooled out of
    fold with 95% intervals resampling patients. (The ensemble itself cannot be cross-validated on the same data:
    each patient was seen by every member but one.)"""
    by_member = member_outcomes(ensemble)
    rows = []
    for name, outcomes in by_member.items():
        report = summarise(outcomes, n_boot=0)
        rows.append({"member": name, "patients": report["n_patients"], "images": report["n_images"]} | _pick(report))
    pooled_rows = [o for outcomes in by_member.values() for o in outcomes]
    ids = [o.record.id for o in pooled_rows]
    if len(ids) != len(set(ids)):
        raise ModelFolderError(str(ensemble), "a slice is scored by two members: their unseen folds overlap")
    pooled = summarise(pooled_rows, n_boot=n_boot)
    columns = {k: [r[k] for r in rows if r[k] is not None] for k in FIGURES}
    return {
        "protocol": "each member trained on the other folds of a patient-level class-stratified split (last epoch, "
        "nothing chosen on its own fold) and scored by 'braintumor evaluate' on its unseen patients at native "
        "resolution; pooled = every member's unseen rows together, 95% intervals by resampling patients",
        "per_fold": rows,
        "mean": {k: float(np.mean(v)) for k, v in columns.items() if v},
        "sd": {k: float(np.std(v, ddof=1)) for k, v in columns.items() if len(v) > 1},
        "pooled": _pick(pooled) | {"images": pooled["n_images"], "patients": pooled["n_patients"]},
        "ci95": {k: pooled["ci95"][k] for k in FIGURES if k in pooled.get("ci95", {})},
    }


#: the figures of the CV table: report.json key → column title
FIGURES = {
    "tumor_type_accuracy": "tumor type",
    "accuracy": "4-class",
    "dice_mean": "Dice",
    "dice_glioma": "glioma Dice",
    "area_error_median": "area error",
    "notumor_outlined": "no-tumor outlined",
    "ece": "ECE",
    "missed_tumors": "missed",
}


def _pick(report: dict[str, Any]) -> dict[str, Any]:
    glioma = report["segmentation_per_class"].get("glioma", {}).get("dice_mean")
    return {k: glioma if k == "dice_glioma" else report.get(k) for k in FIGURES}


def cv_markdown(figures: dict[str, Any]) -> str:
    """The CV table as Markdown (README and ``ensemble/cv.md``), every number from ``cv_figures``."""

    head = "| | patients | images | " + " | ".join(FIGURES.values()) + " |"
    lines = [head, "|" + "---|" * (3 + len(FIGURES))]
    for r in figures["per_fold"]:
        lines.append(f"| {r['member']} | {r['patients']} | {r['images']} | " + " | ".join(cell(r[k]) for k in FIGURES))
    if len(figures["per_fold"]) > 1:
        spread = [
            f"{figures['mean'][k]:.3f} ± {figures['sd'][k]:.3f}" if k in figures["sd"] else cell(figures["mean"].get(k))
            for k in FIGURES
        ]
        lines.append("| mean ± sd | | | " + " | ".join(spread) + " |")
    pooled, ci = figures["pooled"], figures["ci95"]
    cells = [cell(pooled[k]) + (f" ({ci[k][0]:.3f}–{ci[k][1]:.3f})" if k in ci else "") for k in FIGURES]
    lines.append(f"| **pooled** | {pooled['patients']} | {pooled['images']} | " + " | ".join(cells) + " |")
    return "\n".join(line if line.endswith("|") else line + " |" for line in lines) + "\n"


#: the ship rule: the ensemble replaces the shipped model when every fold is a member and its pooled out-of-fold
#: figures reach the shipped model's on the maintainers' 38 unseen patients
SHIP_FOLDS, SHIP_TUMOR_TYPE, SHIP_DICE = 5, 0.936, 0.713


def ship_rule(figures: dict[str, Any]) -> tuple[bool, str]:
    """Whether the ensemble may become the default, and the sentence that says why or which figure failed."""
    members, pooled = len(figures["per_fold"]), figures["pooled"]
    failed = []
    if members < SHIP_FOLDS:
        failed.append(f"{members} of {SHIP_FOLDS} folds are members")
    if pooled["tumor_type_accuracy"] is None or pooled["tumor_type_accuracy"] < SHIP_TUMOR_TYPE:
        failed.append(f"pooled tumor-type accuracy {cell(pooled['tumor_type_accuracy'])} < {SHIP_TUMOR_TYPE}")
    if pooled["dice_mean"] is None or pooled["dice_mean"] < SHIP_DICE:
        failed.append(f"pooled mean Dice {cell(pooled['dice_mean'])} < {SHIP_DICE}")
    rule = (
        f"Ship rule: all {SHIP_FOLDS} folds, pooled tumor-type accuracy ≥ {SHIP_TUMOR_TYPE} and mean Dice ≥ "
        f"{SHIP_DICE} (the single network's figures on unseen patients)"
    )
    if failed:
        return False, f"{rule}: not met ({'; '.join(failed)}), so the single network stays the default."
    return True, f"{rule}: met, so the ensemble is the default (`--members 1` runs its first member alone)."


#: the most the int8 graphs may lose against the float ones, pooled out of fold (the ensemble issue's limit)
INT8_DICE_LIMIT = 0.005


def quantization_figures(ensemble: Path) -> dict[str, dict[str, Any]] | None:
    """Pooled out-of-fold figures of the members' float graphs and of their int8 graphs (what runs), on the same
    slices; None unless every member has both rows."""
    folders = [(m.name, Path(ensemble) / m.name / EVAL) for m in read_card(ensemble).members]
    if not folders or not all((f / FLOAT_SLICES).is_file() for _, f in folders):
        return None
    return {
        kind: _pick(summarise([o for name, f in folders for o in read_slices(f / rows, name)], n_boot=0))
        for kind, rows in (("float", FLOAT_SLICES), ("int8", SLICES))
    }


def quantization_sentence(figures: dict[str, dict[str, Any]]) -> str:
    f, q = figures["float"], figures["int8"]
    return (
        f"The members run as int8 graphs (uint8 activations, 7-bit per-channel weights); the rows above are theirs. "
        f"Their float graphs on the same slices: tumor type {cell(f['tumor_type_accuracy'])}, Dice "
        f"{cell(f['dice_mean'])}, glioma Dice {cell(f['dice_glioma'])} (int8 − float Dice "
        f"{q['dice_mean'] - f['dice_mean']:+.4f}; limit −{INT8_DICE_LIMIT})."
    )


def readme_block(ensemble: Path) -> str:
    """What the README shows between its ensemble-cv markers: the table, how int8 compares with float, and the ship
    rule's verdict."""
    figures = cv_figures(ensemble)
    quantized = quantization_figures(ensemble)
    int8 = "" if quantized is None else "\n" + quantization_sentence(quantized) + "\n"
    return cv_markdown(figures) + int8 + "\n" + ship_rule(figures)[1] + "\n"


def cell(value: Any) -> str:
    return "" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)
