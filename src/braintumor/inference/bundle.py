"""A model folder: ``card.json`` + ``model.safetensors`` (+ ``model.onnx``, ``ood.safetensors``), every file
checked by SHA-256.

Torch-free, so the analysis path can verify and load a model without importing torch.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from braintumor.errors import ScanError

CARD, WEIGHTS, ONNX, OOD = "card.json", "model.safetensors", "model.onnx", "ood.safetensors"
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "default_model"


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_card(model_dir: str | Path) -> dict:
    path = Path(model_dir) / CARD
    if not path.is_file():
        raise ScanError(str(model_dir), f"not a model folder (no {CARD}); train one with 'braintumor train'")
    return json.loads(path.read_text())


def verified_file(model_dir: str | Path, filename: str, card: dict | None = None) -> Path:
    """The path of ``filename`` after checking its SHA-256 against the card; refuses tampered files."""
    card = card if card is not None else read_card(model_dir)
    path = Path(model_dir) / filename
    expected = card.get("files", {}).get(filename, {}).get("sha256")
    if not path.is_file():
        raise ScanError(str(path), "model file is missing")
    if expected is None:
        raise ScanError(str(path), "the model card lists no SHA-256 for this file; refusing to load it")
    if sha256(path) != expected:
        raise ScanError(
            str(path), "SHA-256 does not match the model card (file corrupt or tampered); refusing to load it"
        )
    return path


def record_files(model_dir: str | Path, card: dict) -> dict:
    """Write each model file's SHA-256 and size into ``card`` and save it."""
    model_dir = Path(model_dir)
    card["files"] = {
        p.name: {"sha256": sha256(p), "bytes": p.stat().st_size}
        for p in sorted(model_dir.iterdir())
        if p.name in (WEIGHTS, ONNX, OOD)
    }
    (model_dir / CARD).write_text(json.dumps(card, indent=2) + "\n")
    return card
