"""The model folder's one owner: typed cards, migration of the first format, checksums, and nothing else touching
``card.json``."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from braintumor.bundle import (
    CARD,
    ENSEMBLE,
    ONNX,
    PREPROCESSING,
    SCHEMA_VERSION,
    SINGLE_MODEL_DIR,
    InputSpec,
    ModelCard,
    ModelFolderError,
    Postprocessing,
    Task,
    member_dirs,
    pin_member,
    read_card,
    verified_file,
    write_card,
)

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "braintumor"


@pytest.fixture
def folder(tmp_path) -> Path:
    """A copy of the shipped model folder, card as shipped (the first format)."""
    return Path(shutil.copytree(SINGLE_MODEL_DIR, tmp_path / "model"))


def _raw(folder: Path) -> dict:
    return json.loads((folder / CARD).read_text())


def _put(folder: Path, raw: dict) -> None:
    (folder / CARD).write_text(json.dumps(raw))


def test_the_shipped_card_loads_through_migration_and_verifies():
    raw = _raw(SINGLE_MODEL_DIR)
    assert "schema_version" not in raw and "best_epoch" in raw["training"]  # the first format, as shipped
    card = read_card(SINGLE_MODEL_DIR)
    assert card.schema_version == SCHEMA_VERSION and card.task is Task.SEGMENT_AND_CLASSIFY
    assert card.training is not None and card.training.kept_epoch == raw["training"]["best_epoch"]
    assert card.training.kept == "the best validation epoch" and "history" in card.training.notes
    assert card.postprocessing == Postprocessing(threshold=raw["mask_threshold"])
    assert card.input == InputSpec(size=raw["input"]["size"]) and card.input.preprocessing == PREPROCESSING
    assert card.calibration is not None and card.calibration.temperature == raw["calibration"]["temperature"]
    for name in card.files:
        verified_file(SINGLE_MODEL_DIR, name, card)


def test_an_old_run_folder_with_kept_epoch_and_prose_loads(folder):
    raw = _raw(folder)
    training = raw["training"]
    training["kept_epoch"], training["kept"] = training.pop("best_epoch"), "the last epoch"
    training["all_patients"] = False
    raw["postprocessing"] = {"threshold": 0.4, "min_component_fraction": 0.3, "fill_holes": True}
    raw["description"] = "a U-Net"
    _put(folder, raw)
    card = read_card(folder)
    assert card.training is not None and card.training.kept == "the last epoch" and not card.training.all_patients
    assert card.postprocessing == Postprocessing(0.4, 0.3, True)  # the block wins over mask_threshold
    assert card.description == "a U-Net"


def test_written_cards_read_back_equal_and_pin_their_files(folder):
    card = write_card(folder, read_card(folder))
    assert _raw(folder)["schema_version"] == SCHEMA_VERSION and "mask_threshold" not in _raw(folder)
    assert read_card(folder) == card
    (folder / ONNX).write_bytes(b"not the graph")
    with pytest.raises(ModelFolderError, match="SHA-256 does not match"):
        verified_file(folder, ONNX, card)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda raw: raw.update(colour="red"), r"unknown keys \['colour'\]"),
        (lambda raw: raw["input"].update(size="160"), r"card.input.size: expected int"),
        (lambda raw: raw.update(task="detection"), r"card.task: 'detection' is not one of"),
        (lambda raw: raw.pop("classes"), r"missing keys \['classes'\]"),
        (lambda raw: raw.update(schema_version=99), r"newer than this braintumor reads"),
        (lambda raw: raw["input"].update(preprocessing="z-score"), "unknown preprocessing 'z-score'"),
    ],
)
def test_malformed_cards_are_refused_in_one_line_naming_the_card(folder, change, message):
    write_card(folder, read_card(folder))
    raw = _raw(folder)
    change(raw)
    _put(folder, raw)
    with pytest.raises(ModelFolderError, match=message) as caught:
        read_card(folder)
    assert str(caught.value).startswith(str(folder / CARD)) and "\n" not in str(caught.value)


def test_a_folder_without_a_card_says_how_to_make_one(tmp_path):
    with pytest.raises(ModelFolderError, match=r"not a model folder .*braintumor train"):
        read_card(tmp_path)


def test_cards_hold_what_their_task_needs():
    base = {"name": "m", "architecture": "mlp", "classes": ("a",), "input": InputSpec(size=8)}
    with pytest.raises(ValueError, match="needs postprocessing"):
        ModelCard(task=Task.SEGMENT, **base)
    with pytest.raises(ValueError, match="has no postprocessing"):
        ModelCard(task=Task.CLASSIFY, postprocessing=Postprocessing(), **base)
    with pytest.raises(ValueError, match="ensemble card lists its members"):
        ModelCard(task=Task.CLASSIFY, **(base | {"architecture": ENSEMBLE}))


def test_ensemble_members_are_pinned_by_their_card(folder, tmp_path):
    ensemble = tmp_path / "ensemble"
    shutil.copytree(folder, ensemble / "fold0")
    member = read_card(ensemble / "fold0")
    card = replace(member, name="e", architecture=ENSEMBLE, training=None, members=(pin_member(ensemble, "fold0"),))
    ensemble.mkdir(exist_ok=True)
    write_card(ensemble, card)
    assert member_dirs(ensemble) == [ensemble / "fold0"]
    write_card(ensemble / "fold0", replace(member, name="changed"))
    with pytest.raises(ModelFolderError, match="does not match the ensemble card"):
        member_dirs(ensemble)


def test_only_the_bundle_reads_or_writes_card_json():
    outside = [
        p.relative_to(PACKAGE).as_posix()
        for p in PACKAGE.rglob("*.py")
        if p.parent.name != "bundle" and ('"card.json"' in p.read_text() or "CARD)" in p.read_text())
    ]
    assert outside == []
