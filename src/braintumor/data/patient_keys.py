"""One-way keys of training patients, stored in model cards.

A card lists a key of every group (patient, or image without a patient) its weights were trained on, so
``evaluate`` can refuse to score them and ``train --init`` can refuse a start model that saw this run's validation
patients.  Patient ids are short and guessable (8-digit record numbers: 10^8 candidates), so a plain hash is
reversible by hashing every candidate.  Keys are therefore scrypt (memory-hard) with a random salt per model:
no precomputed table serves two cards, and every guess costs one scrypt.

Parameters, measured on the project's 2-core machine, Python 3.11 / OpenSSL: n=2^13, r=8, p=1 (8 MiB):
  about 15 ms per key idle (17 ms under load) → 10^8 candidate ids (every 8-digit record number) ≈ 1.5e6
  CPU-s ≈ 2.5 CPU-weeks (target ≥ 604 800 s, i.e. ≥ 6.1 ms per key: a 2.5× margin, so a faster CI machine or
  laptop still passes); the 476 groups of ../shared/data/dev (171 patients + 305 no-tumor images) ≈ 7 s of CPU,
  spread over the cores by :func:`group_keys` (about 4 s on 2 cores). n=2^12 (7.7 ms) left only a 1.25× margin.
Both bounds hold for image groups too, so they get the same keys (their ids are public file names anyway).
``tests/test_patient_keys.py`` re-measures both on the machine that runs it.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from braintumor.data.manifest import Record
from braintumor.data.splits import group_of
from braintumor.errors import ModelFolderError

if TYPE_CHECKING:  # the card sits further down the pipeline; only its type is needed here
    from braintumor.bundle import Training

KDF = "scrypt"
SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_DKLEN = 2**13, 8, 1, 16
_MIN_COST = SCRYPT_N * SCRYPT_R * SCRYPT_P  # cheaper keys than ours are as good as reversible: refused
_MAX_MEMORY = 256 * 2**20
OLD_STYLE = (
    "its training patients are listed as unsalted SHA-256 keys (train_groups_sha256), which are reversible "
    "by hashing candidate patient ids; re-create the card (retrain the model, or migrate its keys to salted "
    "scrypt 'patient_keys') before evaluating it or starting a run from it"
)


@dataclass(frozen=True)
class KeyParams:
    """How one card's keys are derived: scrypt(group, salt, n, r, p, dklen)."""

    salt: bytes
    n: int = SCRYPT_N
    r: int = SCRYPT_R
    p: int = SCRYPT_P
    dklen: int = SCRYPT_DKLEN

    def as_card(self) -> dict[str, Any]:
        return {"kdf": KDF, "n": self.n, "r": self.r, "p": self.p, "dklen": self.dklen, "salt": self.salt.hex()}


@dataclass(frozen=True)
class KeyBlock:
    """The keys of one training run, all derived with the same parameters and salt."""

    params: KeyParams
    keys: frozenset[str]

    def as_card(self) -> dict[str, Any]:
        return {**self.params.as_card(), "keys": sorted(self.keys)}


def new_key_params() -> KeyParams:
    """Fresh parameters for a new model card: the default cost and a random 16-byte salt."""
    return KeyParams(salt=secrets.token_bytes(16))


def group_key(group: str, params: KeyParams) -> str:
    """The one-way key (hex) of one group string such as ``patient:100360``."""
    return hashlib.scrypt(
        group.encode(),
        salt=params.salt,
        n=params.n,
        r=params.r,
        p=params.p,
        dklen=params.dklen,
        maxmem=_MAX_MEMORY + (1 << 20),
    ).hex()


def group_keys(records: list[Record], params: KeyParams) -> dict[str, str]:
    """``{group: key}`` of the records' distinct groups (see :func:`group_of`), each group derived once, on every
    core (hashlib.scrypt releases the GIL): the cost per key, what a brute force pays, stays the same."""
    groups = sorted({group_of(r) for r in records})
    workers = min(len(groups), os.cpu_count() or 1, 8)
    if workers <= 1:
        return {g: group_key(g, params) for g in groups}
    with ThreadPoolExecutor(workers) as pool:
        return dict(zip(groups, pool.map(lambda g: group_key(g, params), groups), strict=True))


def key_block(records: list[Record], params: KeyParams | None = None) -> dict[str, Any]:
    """The card entry for the groups of ``records``: parameters, salt and sorted keys; never a raw id."""
    params = params or new_key_params()
    return KeyBlock(params, frozenset(group_keys(records, params).values())).as_card()


def _parse_block(block: Any) -> KeyBlock:
    kdf = block.get("kdf") if isinstance(block, dict) else None
    if kdf != KDF:
        raise ModelFolderError("model card", f"unsupported patient key block (kdf {kdf!r}); expected {KDF!r}")
    try:
        params = KeyParams(
            salt=bytes.fromhex(block["salt"]),
            n=int(block["n"]),
            r=int(block["r"]),
            p=int(block["p"]),
            dklen=int(block["dklen"]),
        )
        keys = frozenset(str(k) for k in block["keys"])
    except (KeyError, TypeError, ValueError) as err:
        raise ModelFolderError("model card", f"malformed patient key block ({err})") from None
    if (
        params.n < 2
        or params.n & (params.n - 1)
        or min(params.r, params.p) < 1
        or len(params.salt) < 16
        or not 16 <= params.dklen <= 64
        or 128 * params.n * params.r * params.p > _MAX_MEMORY
    ):
        raise ModelFolderError(
            "model card",
            f"unusable scrypt parameters n={params.n} r={params.r} p={params.p} "
            f"dklen={params.dklen}, salt of {len(params.salt)} bytes",
        )
    if params.n * params.r * params.p < _MIN_COST:
        raise ModelFolderError(
            "model card",
            f"the patient keys (scrypt n={params.n} r={params.r} p={params.p}) are too cheap "
            "to resist brute force over patient ids; re-create the card",
        )
    return KeyBlock(params, keys)


def trained_keys(training: Training | None) -> list[KeyBlock]:
    """Every key block of a model's training block: its own training patients and those of the weights it started
    from.

    Raises :class:`ModelFolderError` for a model without keys, or with the old unsalted SHA-256 keys."""
    if training is not None and training.unsalted_keys:
        raise ModelFolderError("model card", OLD_STYLE)
    if training is None or training.patient_keys is None:
        raise ModelFolderError(
            "model card",
            "it does not list its training patients, so it cannot be guaranteed that no "
            "training patient is scored or validated on",
        )
    return [_parse_block(b) for b in [training.patient_keys, *training.start_patient_keys]]


def trained_groups(records: list[Record], trainings: Iterable[Training | None]) -> set[str]:
    """The groups of ``records`` that any of the models (an ensemble's members, or one model) was trained on,
    consulting every key block."""
    seen: set[str] = set()
    for training in trainings:
        for block in trained_keys(training):
            seen |= {g for g, k in group_keys(records, block.params).items() if k in block.keys}
    return seen
