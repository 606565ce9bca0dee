"""Patient-level, class-stratified splits: no patient ever sits on two sides."""

from __future__ import annotations

import random
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable

from braintumor.data.manifest import Record
from braintumor.errors import DatasetError


def group_of(record: Record) -> str:
    """A patient id, or the image's own id when the patient is unknown (then it is its own group)."""
    return group_key(record.patient_id, record.id)


def group_key(patient_id: str | None, image_id: str) -> str:
    """``group_of`` from the two ids, for rows read back from a split.csv."""
    return f"patient:{patient_id}" if patient_id else f"image:{image_id}"


def patient_kfold(records: list[Record], k: int = 5, seed: int = 0) -> list[int]:
    """Fold index (0..k-1) of every record; groups = patients, balanced per class, deterministic."""
    unknown = sum(1 for r in records if not r.patient_id)
    if unknown:
        warnings.warn(f"{unknown} images have no patient id; each is treated as its own patient", stacklevel=2)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        groups[group_of(r)].append(i)
    if len(groups) < k:
        raise DatasetError("dataset", f"cannot make {k} patient-level folds from {len(groups)} patients")
    majority = {g: Counter(records[i].label for i in idx).most_common(1)[0][0] for g, idx in groups.items()}
    order = sorted(groups)
    random.Random(seed).shuffle(order)
    order.sort(key=lambda g: -len(groups[g]))  # big patients first, ties in seeded order
    per_fold_class: list[Counter[str]] = [Counter() for _ in range(k)]
    per_fold: list[int] = [0] * k
    fold_of = [0] * len(records)
    for g in order:
        label = majority[g]
        best = min(range(k), key=lambda f: (per_fold_class[f][label], per_fold[f], f))
        per_fold_class[best][label] += len(groups[g])
        per_fold[best] += len(groups[g])
        for i in groups[g]:
            fold_of[i] = best
    return fold_of


def train_val_test_split(
    records: list[Record], val_fold: int = 0, test_fold: int | None = None, k: int = 5, seed: int = 0
) -> dict[str, str]:
    """``{id: "train"|"val"|"test"}`` from the patient-level k-fold assignment."""
    folds = patient_kfold(records, k=k, seed=seed)
    split = {}
    for r, f in zip(records, folds, strict=True):
        split[r.id] = "val" if f == val_fold else "test" if f == test_fold else "train"
    check_no_leakage(records, split)
    return split


def check_no_leakage(records: list[Record], split: dict[str, str]) -> None:
    """Raise if any patient has images on two sides of ``split``."""
    check_sides((group_of(r), split[r.id]) for r in records)


def check_sides(placed: Iterable[tuple[str, str]], what: str = "patient leakage") -> None:
    """Raise if a group (``group_of``) appears on more than one side, from ``(group, side)`` pairs."""
    sides: dict[str, set[str]] = defaultdict(set)
    for group, side in placed:
        sides[group].add(side)
    leaked = sorted(g for g, s in sides.items() if len(s) > 1)
    if leaked:
        raise AssertionError(f"{what}: {len(leaked)} patients on both sides of the split, e.g. {leaked[:3]}")
