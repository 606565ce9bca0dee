"""Model cards key their training patients with salted scrypt: not brute-forceable, never raw ids, old cards refused."""

from __future__ import annotations

import json
import shutil
import time
import warnings
from pathlib import Path

import pytest

from braintumor.bundle import SINGLE_MODEL_DIR, SplitRecipe, Training, read_card, verified_file
from braintumor.cli import main
from braintumor.data import Record, read_manifest, train_val_test_split
from braintumor.data.patient_keys import (
    KeyParams,
    group_key,
    group_keys,
    key_block,
    new_key_params,
    trained_groups,
    trained_keys,
)
from braintumor.data.splits import group_of
from braintumor.errors import ModelFolderError
from braintumor.training.run import TrainConfig, train

CANDIDATES = 10**8  # every 8-digit hospital record number
DEV_GROUPS = 171 + 305  # the distinct groups of ../shared/data/dev: patients + no-tumor images without a patient


def _record(i: int, patient: str = "") -> Record:
    return Record(
        id=f"img{i}",
        image=Path(f"images/img{i}.png"),
        mask=None,
        label="glioma" if patient else "notumor",
        patient_id=patient or None,
        spacing_mm=None,
    )


def _dev_like_records() -> list[Record]:
    """476 groups like dev's: 171 patients with 8-digit record numbers (two slices each) and 305 lone images."""
    records = [_record(2 * i + s, patient=str(10_000_000 + 7919 * i)) for i in range(171) for s in range(2)]
    return records + [_record(1000 + i) for i in range(305)]


def test_keys_are_memory_hard_and_dev_is_keyed_once_per_group():
    """The cost is fixed by the parameters, not asserted in seconds (a faster CPU must not fail this test): 8 MiB
    and 2^16 block mixes a key. On the 2-core project machine that measured about 15 ms a key, so the 10^8
    8-digit record numbers cost about 2.5 CPU-weeks; the figures printed here re-measure it."""
    params = new_key_params()
    assert 128 * params.n * params.r * params.p >= 8 * 2**20 and params.n * params.r * params.p >= 2**16
    started = time.perf_counter()
    for i in range(5):
        group_key(f"patient:{12_345_678 + i}", params)
    per_key = (time.perf_counter() - started) / 5
    keys = group_keys(_dev_like_records(), params)
    print(f"\nscrypt n={params.n} r={params.r}: {per_key * 1e3:.1f} ms a key; 10^8 ids ≈ {CANDIDATES * per_key:,.0f} s")
    assert len(keys) == DEV_GROUPS and len(set(keys.values())) == DEV_GROUPS


def test_each_group_is_keyed_once(monkeypatch):
    import braintumor.data.patient_keys as splits

    calls = []
    real = splits.group_key
    monkeypatch.setattr(splits, "group_key", lambda g, p: calls.append(g) or real(g, p))
    keys = group_keys([_record(1, "p1"), _record(2, "p1"), _record(3)], new_key_params())
    assert sorted(calls) == sorted(keys) == ["image:img3", "patient:p1"]


def test_two_models_get_different_salts_and_keys():
    records = [_record(i, f"{10_000_000 + i}") for i in range(5)]
    a, b = key_block(records), key_block(records)
    assert a["salt"] != b["salt"] and len(bytes.fromhex(a["salt"])) == 16
    assert not set(a["keys"]) & set(b["keys"])
    assert {k: a[k] for k in ("kdf", "n", "r", "p", "dklen")} == {
        "kdf": "scrypt",
        "n": 8192,
        "r": 8,
        "p": 1,
        "dklen": 16,
    }


def test_every_key_block_is_consulted():
    own, start = [_record(1, "alice"), _record(2)], [_record(3, "bob")]
    training = _training(key_block(own), (key_block(start),))
    everyone = own + start + [_record(4, "carol")]
    assert trained_groups(everyone, [training]) == {"patient:alice", "image:img2", "patient:bob"}
    assert len(trained_keys(training)) == 2
    # an ensemble: the union over its members
    assert trained_groups(everyone, [_training(key_block(own)), _training(key_block(start))]) == {
        "patient:alice",
        "image:img2",
        "patient:bob",
    }


def _training(keys, start=(), unsalted=False):
    return Training(
        data="d",
        split="s",
        split_recipe=SplitRecipe(),
        patient_keys=keys,
        start_patient_keys=start,
        unsalted_keys=unsalted,
    )


def test_cards_without_salted_keys_are_refused():
    records = [_record(1, "alice")]
    with pytest.raises(ModelFolderError, match=r"unsalted SHA-256 keys .*re-create the card"):
        trained_keys(_training(None, unsalted=True))
    with pytest.raises(ModelFolderError, match="does not list its training patients"):
        trained_keys(_training(None))
    with pytest.raises(ModelFolderError, match="does not list its training patients"):
        trained_keys(None)
    cheap = KeyParams(salt=b"s" * 16, n=16, r=1, p=1)
    with pytest.raises(ModelFolderError, match="too cheap"):
        trained_groups(records, [_training(key_block(records, cheap))])
    with pytest.raises(ModelFolderError, match="unsupported"):
        trained_keys(_training({"kdf": "sha256", "keys": []}))


def _old_style(model_dir, dest):
    """A copy of a model folder whose card is of the first format and still lists unsalted SHA-256 keys."""
    shutil.copytree(model_dir, dest)
    card = json.loads((dest / "card.json").read_text())
    card["training"].pop("patient_keys")
    card["training"].pop("start_patient_keys")
    card["training"]["train_groups_sha256"] = ["0123456789abcdef"]
    del card["schema_version"]  # such keys exist only in the first card format
    (dest / "card.json").write_text(json.dumps(card, indent=2))
    return dest


def test_evaluate_and_init_refuse_an_old_style_card(tiny_data, tiny_model, tmp_path, capsys):
    old = _old_style(tiny_model, tmp_path / "old")
    out = tmp_path / "eval"
    assert main(["evaluate", "--data", str(tiny_data), "--model", str(old), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "unsalted SHA-256 keys" in err and "re-create the card" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    with pytest.raises(ValueError, match="unsalted SHA-256 keys"):
        train(
            TrainConfig(
                data=tiny_data, out=tmp_path / "ft", size=32, epochs=1, batch_size=4, folds=4, progress=False, init=old
            )
        )


def test_a_card_never_holds_raw_ids(tiny_data, tiny_model):
    text = (tiny_model / "card.json").read_text()
    records = read_manifest(tiny_data)
    assert all(f'"{r.id}"' not in text and f"image:{r.id}" not in text for r in records)
    assert all(r.patient_id not in text for r in records if r.patient_id)
    keys = json.loads(text)["training"]["patient_keys"]
    assert keys["keys"] == sorted(keys["keys"]) and all(len(k) == 32 and int(k, 16) >= 0 for k in keys["keys"])


def test_single_models_card_is_migrated_and_still_verifies(dev):
    card = read_card(SINGLE_MODEL_DIR)
    assert card.training is not None and not card.training.unsalted_keys
    for name in card.files:
        verified_file(SINGLE_MODEL_DIR, name, card)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        records = read_manifest(dev)
        recipe = card.training.split_recipe
        if recipe.all_patients:  # the final model of a cross-validated recipe: every patient of dev
            split = dict.fromkeys((r.id for r in records), "train")
        else:
            split = train_val_test_split(records, val_fold=recipe.val_fold, k=recipe.folds, seed=recipe.seed)
    trained = trained_groups(records, [card.training])
    assert trained == {group_of(r) for r in records if split[r.id] == "train"}
    # folds 1-4: 137 patients + 244 no-tumor images; every patient: 171 + 305
    assert len(trained) == len(card.training.patient_keys["keys"]) == (476 if recipe.all_patients else 381)
    text = (SINGLE_MODEL_DIR / "card.json").read_text()
    assert not any(f'"{r.id}"' in text or (r.patient_id and f'"{r.patient_id}"' in text) for r in records)
