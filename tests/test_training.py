"""Training on a tiny synthetic set: a loadable, checksummed model folder with a card; resume; failures."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from braintumor.bundle import SCHEMA_VERSION
from braintumor.cli import main
from braintumor.training.run import TrainConfig, train
from conftest import csv_rows


def test_run_folder_is_complete(tiny_model):
    card = json.loads((tiny_model / "card.json").read_text())
    assert card["architecture"] == "multitask_unet" and card["classes"] == [
        "glioma",
        "meningioma",
        "pituitary",
        "notumor",
    ]
    assert card["input"]["size"] == 32 and "intended_use" in card and "torch" in card["software"]
    assert card["training"]["split_recipe"] == {"folds": 4, "seed": 0, "val_fold": 0, "all_patients": False}
    assert card["schema_version"] == SCHEMA_VERSION and card["postprocessing"] == {
        "threshold": 0.5,
        "min_component_fraction": 0.0,
        "fill_holes": False,
    }
    assert {"val_acc", "val_dice_mean", "val_tumor_type_acc"} <= set(card["validation"])
    assert set(card["files"]) == {"model.safetensors", "model.onnx"}
    weights = load_file(str(tiny_model / "model.safetensors"))
    assert any(k.startswith("class_head") for k in weights) and all(np.isfinite(v).all() for v in weights.values())
    rows = csv_rows(tiny_model / "logs" / "metrics.csv")
    assert {r["epoch"] for r in rows} == {"0", "1"}
    assert sorted(r["epoch"] for r in rows if r.get("epoch_seconds")) == ["0", "1"]  # each epoch's wall time
    assert all(float(r["epoch_seconds"]) > 0 for r in rows if r.get("epoch_seconds"))
    assert (tiny_model / "curves.png").stat().st_size > 1000
    assert not list(tiny_model.glob("*.pt")) and not list(tiny_model.glob("*.pth"))
    last = torch.load(tiny_model / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["epoch"] == 1  # the final epoch, whether or not it was the best: what --resume continues from


def test_training_patients_never_validate(tiny_model):
    rows = csv_rows(tiny_model / "split.csv")
    sides = {}
    for r in rows:
        if r["patient_id"]:
            sides.setdefault(r["patient_id"], set()).add(r["split"])
    assert all(len(s) == 1 for s in sides.values()) and {"train", "val"} == {r["split"] for r in rows}


@pytest.mark.slow
def test_same_seed_same_weights_and_resume(tiny_data, tmp_path):
    a = train(TrainConfig(data=tiny_data, out=tmp_path / "a", size=32, epochs=1, batch_size=4, folds=4, progress=False))
    b = train(TrainConfig(data=tiny_data, out=tmp_path / "b", size=32, epochs=1, batch_size=4, folds=4, progress=False))
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert all(np.array_equal(wa[k], wb[k]) for k in wa)
    ka, kb = (json.loads((m / "card.json").read_text())["training"]["patient_keys"] for m in (a, b))
    assert ka["salt"] != kb["salt"] and not set(ka["keys"]) & set(kb["keys"])  # same patients, unlinkable keys
    train(
        TrainConfig(
            data=tiny_data, out=tmp_path / "a", size=32, epochs=2, batch_size=4, folds=4, progress=False, resume=True
        )
    )
    epochs = {r["epoch"] for r in csv_rows(tmp_path / "a" / "logs" / "metrics.csv")}
    assert epochs == {"0", "1"}  # the epoch before the resume is kept in the log


def test_init_fine_tunes_at_another_size_and_guards_validation(tiny_model, tiny_data, tmp_path):
    out = train(
        TrainConfig(
            data=tiny_data,
            out=tmp_path / "ft",
            size=48,
            epochs=1,
            batch_size=4,
            folds=4,
            lr=0.0,
            progress=False,
            init=tiny_model,
        )
    )
    start, card = json.loads((tiny_model / "card.json").read_text()), json.loads((out / "card.json").read_text())
    assert card["input"]["size"] == 48 and "--init" in card["training"]["command"]
    assert card["training"]["initialised_from"]["weights_sha256"] == start["files"]["model.safetensors"]["sha256"]
    # the start weights' salted key block travels as it is (salted keys cannot be re-keyed), with its own salt
    assert card["training"]["start_patient_keys"] == [start["training"]["patient_keys"]]
    assert card["training"]["patient_keys"]["salt"] != start["training"]["patient_keys"]["salt"]
    assert "train_groups_sha256" not in card["training"]
    before, after = load_file(str(tiny_model / "model.safetensors")), load_file(str(out / "model.safetensors"))
    learned = [k for k in before if "running" not in k and "num_batches" not in k]  # BatchNorm statistics still move
    assert all(np.allclose(before[k], after[k]) for k in learned)  # lr 0: the weights are the start weights
    with pytest.raises(ValueError, match=r"trained on .* of this run's validation fold"):
        train(
            TrainConfig(
                data=tiny_data,
                out=tmp_path / "leak",
                size=32,
                epochs=1,
                batch_size=4,
                folds=4,
                val_fold=1,
                progress=False,
                init=tiny_model,
            )
        )


@pytest.mark.slow
def test_init_default_is_the_single_shipped_network(tiny_data, tmp_path):
    from braintumor.bundle import SINGLE_MODEL_DIR

    out = train(
        TrainConfig(
            data=tiny_data, out=tmp_path / "d", size=32, epochs=1, batch_size=4, folds=4, progress=False, init="default"
        )
    )
    shipped = json.loads((SINGLE_MODEL_DIR / "card.json").read_text())["files"]["model.safetensors"]["sha256"]
    assert json.loads((out / "card.json").read_text())["training"]["initialised_from"]["weights_sha256"] == shipped


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["seed_unet", "inception_v3"])
def test_reference_architectures_train(tiny_data, tmp_path, arch):
    out = train(
        TrainConfig(
            data=tiny_data,
            out=tmp_path / arch,
            arch=arch,
            size=32 if arch == "seed_unet" else 75,
            epochs=1,
            batch_size=4,
            folds=4,
            progress=False,
        )
    )
    card = json.loads((out / "card.json").read_text())
    assert card["architecture"] == arch and "model.safetensors" in card["files"]


def test_failures_are_clear(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    assert "dataset folder does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["train", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "no images found" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--arch", "resnet9000"]) == 2
    assert "unknown architecture 'resnet9000'" in capsys.readouterr().err


def test_augmentation_gives_plain_tensors_with_the_same_values():
    """The training data path runs MONAI without meta tracking (faster): same values as with it, plain tensors,
    and the global setting put back."""
    from monai.data import get_track_meta

    from braintumor.training.dataset import SliceDataset, train_transforms

    gen = torch.Generator().manual_seed(0)
    cache = {
        "image": torch.rand(6, 1, 32, 32, generator=gen),
        "mask": (torch.rand(6, 1, 32, 32, generator=gen) > 0.8).float(),
        "label": torch.tensor([0, 1, 2, 3, 0, 1]),
    }
    fast = SliceDataset(cache, np.arange(6), train_transforms().set_random_state(seed=5))
    reference = train_transforms().set_random_state(seed=5)
    assert get_track_meta()
    for i in range(6):
        item = fast[i]
        expected = reference({k: cache[k][i] for k in ("image", "mask", "label")})
        assert type(item["image"]) is torch.Tensor and type(item["mask"]) is torch.Tensor
        assert torch.equal(item["image"], expected["image"].as_subclass(torch.Tensor))
        assert torch.equal(item["mask"], expected["mask"].as_subclass(torch.Tensor))
    assert get_track_meta()


def test_loader_processes_augment_differently():
    """Eight copies of one slice, one per batch, batches alternating between two loader processes: without a
    reseed per process both would apply the same augmentations (batch 0 = batch 1, batch 2 = batch 3)."""
    from braintumor.training.dataset import augmented_loader

    gen = torch.Generator().manual_seed(0)
    image, mask = torch.rand(1, 1, 32, 32, generator=gen), (torch.rand(1, 1, 32, 32, generator=gen) > 0.8).float()
    cache = {"image": image.repeat(8, 1, 1, 1), "mask": mask.repeat(8, 1, 1, 1), "label": torch.zeros(8, dtype=int)}
    batches = [b["image"] for b in augmented_loader(cache, np.arange(8), batch_size=1, num_workers=2, seed=0)]
    assert not (torch.equal(batches[0], batches[1]) and torch.equal(batches[2], batches[3]))


def test_gpu_runs_warn_where_torch_has_no_deterministic_kernel(tmp_path):
    """A strict deterministic run on a GPU stops at the first operation with no deterministic CUDA kernel; the
    CPU keeps strict determinism (same seed, same weights)."""
    cpu = TrainConfig(data=tmp_path, out=tmp_path, accelerator="cpu")
    gpu = TrainConfig(data=tmp_path, out=tmp_path, accelerator="gpu")
    assert (cpu.deterministic, gpu.deterministic) == (True, "warn")
    assert gpu.training_precision == "bf16-mixed"


@pytest.mark.parametrize(("amx", "expected"), [(True, "bf16-mixed"), (False, "32")])
def test_cpu_precision_follows_amx(tmp_path, monkeypatch, amx, expected):
    """bf16 autocast pays on a CPU only with AMX tiles (1.6x faster an epoch there, slower without); --precision
    overrides either way."""
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    assert TrainConfig(data=tmp_path, out=tmp_path, accelerator="cpu").training_precision == expected
    assert TrainConfig(data=tmp_path, out=tmp_path, accelerator="cpu", precision="32").training_precision == "32"


@pytest.mark.slow
def test_ddp_with_two_cpu_processes(tiny_data, tmp_path):
    out = tmp_path / "ddp"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "braintumor.cli",
            "train",
            "--data",
            str(tiny_data),
            "--out",
            str(out),
            "--size",
            "32",
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--folds",
            "4",
            "--accelerator",
            "cpu",
            "--devices",
            "2",
            "--strategy",
            "ddp",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "world_size=2" in done.stderr or "distributed_backend=gloo" in done.stderr
    assert json.loads((out / "card.json").read_text())["files"]["model.safetensors"]["sha256"]


def test_a_resume_killed_before_it_ends_keeps_the_earlier_epochs(tmp_path):
    """CSVLogger deletes logs/metrics.csv when a resumed run starts; the earlier rows wait beside it."""
    from braintumor.training.run import _keep_earlier_rows, _prepend_rows

    log = tmp_path / "metrics.csv"
    log.write_text("epoch,val_score\n0,1.0\n1,1.1\n")
    assert len(_keep_earlier_rows(log)) == 2
    log.write_text("epoch,val_score\n2,1.2\n")  # the resumed run logged epoch 2, then was killed
    earlier = _keep_earlier_rows(log)  # the next resume
    assert [r["epoch"] for r in earlier] == ["0", "1", "2"]
    log.write_text("epoch,val_score\n3,1.3\n")
    _prepend_rows(log, earlier)
    assert [r["epoch"] for r in csv_rows(log)] == ["0", "1", "2", "3"]
    assert not (tmp_path / "metrics.before-resume.csv").exists()


def test_train_config_is_the_one_source_of_the_options(tmp_path):
    """Parsing ``to_argv`` gives the configuration back; cv offers every option but those it sets per fold."""
    import argparse

    from braintumor.training.config import TrainConfig, plan_folds

    cfg = TrainConfig(data=tmp_path / "d", out=tmp_path / "o", epochs=3, lr=1e-3, keep="last", init=tmp_path / "m")
    parser = argparse.ArgumentParser()
    TrainConfig.add_options(parser)
    assert TrainConfig.from_args(parser.parse_args(cfg.to_argv())) == replace(cfg, size=cfg.input_size)
    cv = argparse.ArgumentParser()
    TrainConfig.add_options(cv, scope="cv")
    flags = {a.option_strings[0] for a in cv._actions if a.option_strings}
    assert {"--data", "--epochs", "--workers"} <= flags and not {"--val-fold", "--keep", "--resume"} & flags
    plan = plan_folds(cfg, tmp_path / "runs", range(2), final=True)
    assert [(c.out.name, c.val_fold, c.keep, c.all_patients) for c in plan.values()] == [
        ("fold0", 0, "last", False),
        ("fold1", 1, "last", False),
        ("final", 0, "last", True),
    ]


def test_tversky_mask_loss_makes_a_missed_pixel_dearer_than_a_false_one():
    """--seg-loss tversky: with the same number of wrong pixels, under-segmenting a tumor costs more than
    over-segmenting it; Dice + BCE weighs the two alike (within its BCE part)."""
    from braintumor.training.module import mask_loss

    target = torch.zeros(1, 1, 32, 32)
    target[..., 8:24, 8:24] = 1  # 256 tumor pixels
    under, over = target.clone(), target.clone()
    under[..., 8:12, 8:24] = 0  # 64 tumor pixels missed
    over[..., 4:8, 8:24] = 1  # 64 healthy pixels outlined
    logits = {name: (m * 2 - 1) * 8 for name, m in (("under", under), ("over", over))}  # confident predictions
    gap = {
        name: float(mask_loss(name)(logits["under"], target) - mask_loss(name)(logits["over"], target))
        for name in ("tversky", "dice_ce")
    }
    assert gap["tversky"] > 0.1  # Tversky part: 1 - 192/(192 + 0.7·64) against 1 - 256/(256 + 0.3·64)
    assert abs(gap["dice_ce"]) < gap["tversky"] / 3
    with pytest.raises(ValueError, match="choose dice_ce or tversky"):
        mask_loss("focal")
