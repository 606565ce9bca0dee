"""Older card formats → today's, in one place (as nnU-Net converts old plans): readers see only the newest.

Version 1 (no ``schema_version``): a top-level ``mask_threshold`` beside or instead of ``postprocessing``; prose
copies of the code (``spacing_convention``, the preprocessing sentence, ``optimisation``,
``augmentation``); ``best_epoch``/``history`` in the shipped card where later runs wrote ``kept_epoch``/``kept``;
unsalted ``train_groups_sha256`` keys in the oldest cards.  Version 2: float graphs only, no ``quantization``.
"""

from __future__ import annotations

import copy
from typing import Any

from braintumor.bundle.card import SCHEMA_VERSION
from braintumor.preprocessing import PREPROCESSING

#: v1 keys that repeated the code in prose: the code is their source now
_PROSE = ("spacing_convention",)
_TRAINING_PROSE = ("optimisation", "augmentation")
_TRAINING_NOTES = ("history", "packed_data")


def migrate(raw: dict[str, Any]) -> dict[str, Any]:
    """A card's JSON object in today's format (a copy); raises ``ValueError`` for a version from the future."""
    version = raw.get("schema_version", 1)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise ValueError(f"card format {version!r} is newer than this braintumor reads ({SCHEMA_VERSION}); upgrade it")
    card = copy.deepcopy(raw)
    if version == 1:
        card = _from_v1(card)
    card["schema_version"] = SCHEMA_VERSION  # 2 → 3 added the optional ``quantization`` block: nothing to convert
    return card


def _from_v1(card: dict[str, Any]) -> dict[str, Any]:
    for key in _PROSE:
        card.pop(key, None)
    card["input"]["preprocessing"] = PREPROCESSING  # v1 described this same code in a sentence
    threshold = card.pop("mask_threshold", None)
    if card.get("task") != "classification":
        block = card.get("postprocessing") or {}
        card["postprocessing"] = {"threshold": threshold if threshold is not None else 0.5} | block
    training = card.get("training")
    if training is not None:
        for key in _TRAINING_PROSE:
            training.pop(key, None)
        notes = {key: training.pop(key) for key in _TRAINING_NOTES if key in training}
        if notes:
            training["notes"] = notes
        if "best_epoch" in training:
            training["kept_epoch"] = training.pop("best_epoch")
            training.setdefault("kept", "the best validation epoch")
        if "train_groups_sha256" in training:
            del training["train_groups_sha256"]
            training["unsalted_keys"] = True
            training.setdefault("patient_keys", None)
        if "all_patients" in training:  # v1 kept it twice: here and in split_recipe
            training["split_recipe"].setdefault("all_patients", training.pop("all_patients"))
    card["schema_version"] = SCHEMA_VERSION
    return card
