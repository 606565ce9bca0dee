"""A model folder on disk: ``card.json`` + ``model.onnx`` + ``model.safetensors`` (+ ``ood.safetensors``; an
ensemble: one sub-folder per member), every file checked by SHA-256.

The only code that reads, migrates, verifies and writes cards. Torch-free, so analysis can verify and load a
model without importing torch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from braintumor.bundle.card import FileEntry, Member, ModelCard, Task
from braintumor.bundle.migrate import migrate
from braintumor.errors import ModelFolderError

CARD, WEIGHTS, ONNX, OOD = "card.json", "model.safetensors", "model.onnx", "ood.safetensors"
#: the files a card pins by checksum
MODEL_FILES = (WEIGHTS, ONNX, OOD)
ASSETS = Path(__file__).resolve().parent.parent / "assets"
#: the 5-fold ensemble: its card, and one sub-folder per member (each fold's model and its out-of-fold evaluation)
ENSEMBLE_DIR = ASSETS / "ensemble"
#: the single network shipped before the ensemble (measured on the maintainers' unseen patients); the fine-tuning
#: start of ``train --init default``
SINGLE_MODEL_DIR = ASSETS / "single_model"
#: what runs when no model is named: the ensemble, because its ship rule holds (tests/test_ensemble.py checks)
DEFAULT_MODEL_DIR = ENSEMBLE_DIR

C = TypeVar("C")


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_model_folder(path: str | Path | None) -> bool:
    return path is not None and (Path(path) / CARD).is_file()


def read_card(model_dir: str | Path) -> ModelCard:
    """The folder's card, converted from older formats and checked field by field."""
    path = Path(model_dir) / CARD
    if not path.is_file():
        raise ModelFolderError(str(model_dir), f"not a model folder (no {CARD}); train one with 'braintumor train'")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict):
            raise ValueError("the card is not a JSON object")
        return from_json(ModelCard, migrate(raw), "card")
    except (ValueError, KeyError, TypeError) as err:  # JSONDecodeError is a ValueError
        raise ModelFolderError(str(path), f"unusable model card: {err}") from None


def require_task(where: str | Path, card: ModelCard, task: Task, why: str) -> None:
    """Refuse, in one line saying ``why``, a model whose card's task is not the one a caller is built for."""
    if card.task is not task:
        raise ModelFolderError(str(where), f"a {card.task.value} model; {why}")


def write_card(model_dir: str | Path, card: ModelCard) -> ModelCard:
    """Record the SHA-256 and size of each model file present in ``model_dir`` and write the card; returns it."""
    model_dir = Path(model_dir)
    files = {
        p.name: FileEntry(sha256(p), p.stat().st_size) for p in sorted(model_dir.iterdir()) if p.name in MODEL_FILES
    }
    card = dataclasses.replace(card, files=files)
    (model_dir / CARD).write_text(json.dumps(to_json(card), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return card


def verified_file(model_dir: str | Path, filename: str, card: ModelCard | None = None) -> Path:
    """The path of ``filename`` after checking its SHA-256 against the card; refuses tampered files."""
    card = card if card is not None else read_card(model_dir)
    path = Path(model_dir) / filename
    if not path.is_file():
        raise ModelFolderError(str(path), "model file is missing")
    entry = card.files.get(filename)
    if entry is None:
        raise ModelFolderError(str(path), "the model card lists no SHA-256 for this file; refusing to load it")
    if sha256(path) != entry.sha256:
        raise ModelFolderError(
            str(path), "SHA-256 does not match the model card (file corrupt or tampered); refusing to load it"
        )
    return path


def member_dirs(model_dir: str | Path, card: ModelCard | None = None) -> list[Path]:
    """An ensemble's member folders, each card checked against the SHA-256 the ensemble pinned."""
    model_dir = Path(model_dir)
    card = card if card is not None else read_card(model_dir)
    out = []
    for member in card.members:
        folder = model_dir / member.name
        if not (folder / CARD).is_file():
            raise ModelFolderError(str(folder), "ensemble member is missing")
        if sha256(folder / CARD) != member.card_sha256:
            raise ModelFolderError(str(folder / CARD), "SHA-256 does not match the ensemble card; refusing to load it")
        out.append(folder)
    return out


def pin_member(model_dir: str | Path, name: str) -> Member:
    """The entry that pins ``model_dir/name`` (a written model folder) in an ensemble card."""
    return Member(name, sha256(Path(model_dir) / name / CARD))


def to_json(value: Any) -> Any:
    """Cards → plain JSON values (enums by value, tuples as lists)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    return value


def from_json(cls: type[C], data: Any, where: str) -> C:
    """A card dataclass from its JSON object: unknown keys, missing keys and wrong types are refused by name."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected an object, got {type(data).__name__}")
    assert dataclasses.is_dataclass(cls), cls
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
    missing = {
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    } - set(data)
    if missing:
        raise ValueError(f"{where}: missing keys {sorted(missing)}")
    return cls(**{k: _value(hints[k], v, f"{where}.{k}") for k, v in data.items()})


def _value(hint: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _value(inner, value, where)
    if dataclasses.is_dataclass(hint):
        return from_json(hint, value, where)  # type: ignore[arg-type]  # a dataclass type, checked above
    if isinstance(hint, type) and issubclass(hint, Enum):
        try:
            return hint(value)
        except ValueError:
            raise ValueError(f"{where}: {value!r} is not one of {[e.value for e in hint]}") from None
    if origin is tuple:
        _expect(value, list, where)
        return tuple(_value(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        _expect(value, dict, where)
        return {k: _value(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint in (int, str, bool) and (not isinstance(value, hint) or (hint is int and isinstance(value, bool))):
        raise ValueError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value


def _expect(value: Any, kind: type, where: str) -> None:
    if not isinstance(value, kind):
        raise ValueError(f"{where}: expected {'a list' if kind is list else 'an object'}, got {value!r}")
