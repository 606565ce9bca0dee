"""``braintumor train``: manifest → patient-level split → Lightning fit → model folder (safetensors + card)."""

from __future__ import annotations

import csv
import logging
import platform
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from braintumor import CLASSES
from braintumor.data import Record, read_manifest, train_val_test_split, write_manifest
from braintumor.errors import DatasetError, ModelFolderError, OptionError
from braintumor.models import ARCHITECTURES, DESCRIPTIONS
from braintumor.training.config import LOGS, TrainConfig

if TYPE_CHECKING:  # torch is imported where training starts
    from torch import nn

    from braintumor.bundle import Training

log = logging.getLogger(__name__)


def train(cfg: TrainConfig) -> Path:
    """Train, then write the model folder ``cfg.out``; returns it."""
    if cfg.arch not in ARCHITECTURES:
        raise OptionError("--arch", f"unknown architecture {cfg.arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from braintumor.training.dataset import SliceDataset, augmented_loader, cache_slices
    from braintumor.training.module import SliceModule

    size = cfg.input_size
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.seed, workers=True)
    records, split = _records_and_split(cfg)
    write_manifest(records, out / "split.csv", split)
    cache = cache_slices(records, size, progress=cfg.progress)
    kept = cache["records"]
    train_idx = np.array([i for i, r in enumerate(kept) if split[r.id] == "train"])
    val_idx = np.array([i for i, r in enumerate(kept) if split[r.id] == "val"])
    if len(train_idx) == 0 or (len(val_idx) == 0 and not cfg.all_patients):
        raise DatasetError(
            str(cfg.data), "the split left no training or no validation images; use more data or fewer folds"
        )
    counts = np.bincount(cache["label"][train_idx].numpy(), minlength=len(CLASSES)).astype(float)
    class_weights = np.sqrt(counts.sum() / (len(CLASSES) * np.maximum(counts, 1)))  # tempered inverse frequency
    train_loader = augmented_loader(cache, train_idx, cfg.batch_size, cfg.num_workers, cfg.seed)
    val_loader = None if cfg.all_patients else torch.utils.data.DataLoader(SliceDataset(cache, val_idx), batch_size=64)

    module = SliceModule(
        cfg.arch,
        lr=cfg.lr,
        class_weights=class_weights.tolist(),
        pretrained=cfg.pretrained,
        size=size,
        seg_loss=cfg.seg_loss,
    )
    if cfg.init:
        initialise(module.net, cfg, [r for r in kept if split[r.id] == "val"])
    checkpoint = ModelCheckpoint(dirpath=out / "checkpoints", filename="best", monitor="val_score", mode="max")
    # every epoch, improved or not (Lightning's save_last only follows saves of the best), so --resume loses little
    latest = ModelCheckpoint(dirpath=out / "checkpoints", filename="last", enable_version_counter=False)
    stopping = EarlyStopping("val_score", mode="max", patience=cfg.patience)
    trainer = L.Trainer(
        max_epochs=cfg.epochs,
        accelerator=cfg.accelerator,
        devices=cfg.lightning_devices,
        strategy=cfg.strategy,
        precision=cfg.training_precision,  # type: ignore[arg-type]  # a str from --precision; Lightning checks it
        max_time=timedelta(minutes=cfg.max_minutes) if cfg.max_minutes else None,
        # with --keep last the validation fold chooses nothing, not even when to stop
        callbacks=[latest] if cfg.all_patients or cfg.keep == "last" else [checkpoint, latest, stopping],
        logger=CSVLogger(out, name="", version=LOGS),
        log_every_n_steps=10,
        deterministic=cfg.deterministic,
        enable_progress_bar=cfg.progress,
        num_sanity_val_steps=0,
    )
    last = out / "checkpoints" / "last.ckpt"
    resuming = cfg.resume and last.is_file()
    earlier = _keep_earlier_rows(cfg.metrics_csv) if resuming else []  # CSVLogger deletes the file on start
    started = time.time()
    trainer.fit(module, train_loader, val_loader, ckpt_path=str(last) if resuming else None)
    if trainer.global_rank == 0:
        _prepend_rows(cfg.metrics_csv, earlier)
        chosen = last if cfg.keep == "last" or cfg.all_patients else Path(checkpoint.best_model_path or last)
        finalize(cfg, chosen, time.time() - started, (records, split))
    return out


def _init_dir(init: Path) -> Path:
    from braintumor.bundle import SINGLE_MODEL_DIR

    return SINGLE_MODEL_DIR if str(init) == "default" else init


def initialise(net: nn.Module, cfg: TrainConfig, val_records: list[Record]) -> None:
    """Load ``cfg.init``'s verified weights into ``net``; refuse when that model trained on this run's validation
    patients (its figures would be optimistic). Fully convolutional nets accept any ``--size``; the mlp only its
    own."""
    from braintumor.data.patient_keys import trained_groups
    from braintumor.inference.export import load_torch_model

    assert cfg.init is not None, "initialise is called for --init only"
    source, card = load_torch_model(_init_dir(cfg.init))
    if card.architecture != cfg.arch:
        raise OptionError(f"--init {cfg.init}", f"a {card.architecture} model cannot start a {cfg.arch} run")
    try:  # every key block: the start model's own patients and those of the weights it started from
        seen = trained_groups(val_records, [card.training])
    except ModelFolderError as err:
        raise OptionError(f"--init {cfg.init}", str(err)) from None
    if seen:
        recipe = card.training.split_recipe if card.training else None
        raise OptionError(
            f"--init {cfg.init}",
            f"that model was trained on {len(seen)} patients/images of this run's "
            f"validation fold; use its split ({recipe}) or another starting point",
        )
    try:
        net.load_state_dict(source.state_dict())
    except RuntimeError as err:  # weights whose shape depends on the input side (the mlp's first layer)
        raise OptionError(
            f"--init {cfg.init}",
            f"its weights do not fit this run's network (trained at --size "
            f"{card.input.size}, this run uses {cfg.input_size}): {str(err).splitlines()[-1].strip()}",
        ) from None


def _records_and_split(cfg: TrainConfig) -> tuple[list[Record], dict[str, str]]:
    records = read_manifest(cfg.data)
    if cfg.all_patients:
        split = dict.fromkeys((r.id for r in records), "train")
    else:
        split = train_val_test_split(records, val_fold=cfg.val_fold, k=cfg.folds, seed=cfg.seed)
    if cfg.limit_per_class:
        records = _sample(records, split, cfg.limit_per_class, cfg.seed)
    return records, split


def finalize(
    cfg: TrainConfig,
    checkpoint: Path,
    seconds: float | None = None,
    records_split: tuple[list[Record], dict[str, str]] | None = None,
) -> Path:
    """Write the model folder (safetensors, ONNX, card, curves) of ``cfg.out`` from a training checkpoint.

    ``records_split``: the run's (records, split), so a Figshare .mat folder is not read a second time."""
    from braintumor.training.module import SliceModule

    records, split = records_split or _records_and_split(cfg)
    module = SliceModule.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=False)
    metrics = _epoch_metrics(cfg.metrics_csv, cfg.keep)
    _write_model_folder(module.net, cfg, records, split, metrics, seconds)
    return Path(cfg.out)


def _sample(records: list[Record], split: dict[str, str], per_class: int, seed: int) -> list[Record]:
    rng = np.random.default_rng(seed)
    chosen = []
    for side in ("train", "val"):
        for label in CLASSES:
            pool = [r for r in records if split[r.id] == side and r.label == label]
            take = max(1, per_class if side == "train" else per_class // 2)
            chosen += [pool[i] for i in rng.permutation(len(pool))[:take]]
    return chosen


def _read_rows(metrics_csv: Path) -> list[dict[str, str]]:
    if not metrics_csv.is_file():
        return []
    with open(metrics_csv, newline="") as f:
        return list(csv.DictReader(f))


def _merged(earlier: list[dict[str, str]], later: list[dict[str, str]]) -> list[dict[str, str]]:
    """Earlier epochs that the later log does not repeat, then the later log."""
    first = min((int(r["epoch"]) for r in later), default=float("inf"))
    return [r for r in earlier if int(r["epoch"]) < first] + later


def _write_rows(path: Path, rows: list[dict[str, str]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=sorted(set().union(*rows)))
        writer.writeheader()
        writer.writerows(rows)


def _keep_earlier_rows(metrics_csv: Path) -> list[dict[str, str]]:
    """The epochs logged before this resume, also saved beside the log until the run ends: a run killed before
    it could put them back must not lose them for the next resume."""
    side = metrics_csv.with_name("metrics.before-resume.csv")
    rows = _merged(_read_rows(side), _read_rows(metrics_csv))
    if rows:
        _write_rows(side, rows)
    return rows


def _prepend_rows(metrics_csv: Path, earlier: list[dict[str, str]]) -> None:
    """Put back the epochs logged before a resume (those the resumed run did not log again)."""
    if earlier:
        _write_rows(metrics_csv, _merged(earlier, _read_rows(metrics_csv)))
    metrics_csv.with_name("metrics.before-resume.csv").unlink(missing_ok=True)


def _epoch_metrics(metrics_csv: Path, keep: str = "best") -> dict[str, float]:
    """The validation figures of the kept epoch (the best or the last one)."""
    rows = [r for r in _read_rows(metrics_csv) if r.get("val_score")]
    if not rows:
        return {}
    best = rows[-1] if keep == "last" else max(rows, key=lambda r: float(r["val_score"]))
    return {k: float(v) for k, v in best.items() if v and k.startswith("val_")} | {
        "epoch": int(best["epoch"]),
        "epochs_run": len({r["epoch"] for r in rows}),
    }


INTENDED_USE = (
    "Research and education only; not a medical device. Trained on 8-bit T1 contrast-enhanced slices of one public "
    "dataset (Figshare, Cheng 2017); the no-tumor class comes from another source (Br35H, mostly T2/FLAIR), so it "
    "may be recognised by sequence rather than anatomy."
)


def _training_block(
    cfg: TrainConfig,
    records: list[Record],
    split: dict[str, str],
    epochs_run: int | None,
    kept_epoch: int | None,
    seconds: float | None,
) -> Training:
    """How this run trained: data, split, one-way keys of its training patients (and of its start weights'),
    schedule and the command that reruns it."""
    from braintumor.bundle import WEIGHTS, SplitRecipe, Training, read_card
    from braintumor.data.patient_keys import key_block, trained_keys

    init = read_card(_init_dir(cfg.init)) if cfg.init else None
    # salted scrypt keys of this run's training groups, plus the start weights' key blocks as they are (salted keys
    # cannot be merged into a new salt): checks consult every block
    start_keys = tuple(b.as_card() for b in trained_keys(init.training)) if init else ()
    sides = {side: Counter(r.label for r in records if split[r.id] == side) for side in ("train", "val")}
    patients = {
        side: len({r.patient_id for r in records if split[r.id] == side and r.patient_id}) for side in ("train", "val")
    }
    return Training(
        data=str(cfg.data),
        split="all patients, no validation fold"
        if cfg.all_patients
        else f"patient-level class-stratified {cfg.folds}-fold, seed {cfg.seed}, validation fold {cfg.val_fold}",
        split_recipe=SplitRecipe(all_patients=True)
        if cfg.all_patients
        else SplitRecipe(folds=cfg.folds, seed=cfg.seed, val_fold=cfg.val_fold),
        # one-way keys of every training patient/image, so evaluation can refuse to score them (never raw ids)
        patient_keys=key_block([r for r in records if split[r.id] == "train"]),
        start_patient_keys=start_keys,
        images={k: dict(v) for k, v in sides.items()},
        patients=patients,
        initialised_from={
            "name": init.name,
            "command": init.training.command if init.training else None,
            "weights_sha256": init.files[WEIGHTS].sha256,
        }
        if init
        else None,
        epochs_run=epochs_run,
        kept_epoch=kept_epoch,
        kept="the last epoch" if cfg.keep == "last" or cfg.all_patients else "the best validation epoch",
        max_epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        seed=cfg.seed,
        seconds=None if seconds is None else round(seconds),
        precision=cfg.training_precision,
        command=cfg.command,
    )


def _write_model_folder(
    net: nn.Module,
    cfg: TrainConfig,
    records: list[Record],
    split: dict[str, str],
    metrics: dict[str, Any],
    seconds: float | None,
) -> None:
    import lightning
    import monai
    import torch

    from braintumor.bundle import InputSpec, ModelCard, Postprocessing, Task, write_card
    from braintumor.inference.export import export_onnx, save_weights
    from braintumor.training.plots import plot_curves

    out = Path(cfg.out)
    net = net.cpu().float().eval()
    save_weights(net, out)
    task = Task(ARCHITECTURES[cfg.arch][0])
    export_onnx(net, cfg.input_size, out)  # the analyzer's graph, or a class-only or mask-only one that evaluate scores
    epochs_run = metrics.pop("epochs_run", None)
    card = ModelCard(
        name=f"braintumor-{cfg.arch}",
        architecture=cfg.arch,
        task=task,
        classes=CLASSES,
        input=InputSpec(size=cfg.input_size),
        description=DESCRIPTIONS[cfg.arch],
        postprocessing=Postprocessing() if task.outlines else None,
        training=_training_block(cfg, records, split, epochs_run, metrics.get("epoch"), seconds),
        validation={
            "note": "none: trained on all patients; the recipe's accuracy on new patients is its cross-validation"
        }
        if cfg.all_patients
        else {
            **metrics,
            "note": f"{'last' if cfg.keep == 'last' else 'best'} epoch on the patient-level validation fold at "
            "network resolution; see 'braintumor evaluate' for native-resolution figures",
        },
        software={
            "python": platform.python_version(),
            "torch": torch.__version__,
            "monai": monai.__version__,
            "lightning": lightning.__version__,
        },
        intended_use=INTENDED_USE,
    )
    write_card(out, card)
    plot_curves(cfg.metrics_csv, out / "curves.png")
    log.info("model folder written: %s", out)
