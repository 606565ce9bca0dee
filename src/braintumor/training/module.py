"""The LightningModule: losses for whichever heads the network has, validation metrics per epoch."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import lightning as L
import numpy as np
import torch
from monai.losses import DiceCELoss, TverskyLoss
from torch import nn

from braintumor import CLASSES, TUMOR_CLASSES
from braintumor.evaluation.metrics import dice
from braintumor.models import build_model

if TYPE_CHECKING:
    from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig


class SliceModule(L.LightningModule):
    def __init__(
        self,
        arch: str = "multitask_unet",
        lr: float = 2e-3,
        weight_decay: float = 1e-4,
        class_weights: list[float] | None = None,
        pretrained: bool = False,
        size: int | None = None,
        seg_loss: str = "dice_ce",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = build_model(arch, num_classes=len(CLASSES), pretrained=pretrained, size=size)
        # the reference segmenter was trained with plain BCE; ours with Dice + BCE per slice
        self.seg_loss = nn.BCEWithLogitsLoss() if arch == "seed_unet" else mask_loss(seg_loss)
        weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.cls_loss = nn.CrossEntropyLoss(weight=weights, label_smoothing=0.05)
        self._val: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._epoch_started = time.perf_counter()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        out: tuple[torch.Tensor | None, torch.Tensor | None] = self.net(x.contiguous(memory_format=torch.channels_last))
        return out

    def on_train_epoch_start(self) -> None:
        self._epoch_started = time.perf_counter()

    def on_train_epoch_end(self) -> None:
        # wall seconds of the epoch, its validation included: what a run's length is planned from
        self.log("epoch_seconds", time.perf_counter() - self._epoch_started, on_step=False, on_epoch=True)

    def on_fit_start(self) -> None:
        # channels-last: faster convolutions on CPU (oneDNN) and on GPU tensor cores
        self.net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's overloads omit memory_format

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        seg, cls = self(batch["image"])
        loss = 0.0
        if seg is not None:
            seg_loss = self.seg_loss(seg.float(), batch["mask"])
            self.log("train_seg_loss", seg_loss, on_step=False, on_epoch=True)
            loss = loss + seg_loss
        if cls is not None:
            cls_loss = self.cls_loss(cls.float(), batch["label"])
            self.log("train_cls_loss", cls_loss, on_step=False, on_epoch=True)
            loss = loss + cls_loss
        assert isinstance(loss, torch.Tensor), "every network has a mask head, a class head or both"
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        seg, cls = self(batch["image"])
        labels = batch["label"].cpu().numpy()
        no_classes = np.full((len(labels), len(CLASSES)), np.nan)
        probs = cls.float().softmax(1).cpu().numpy() if cls is not None else no_classes
        masks = (seg.float() > 0).cpu().numpy()[:, 0] if seg is not None else None
        truth = batch["mask"].cpu().numpy()[:, 0] > 0.5
        dices = (
            np.array([dice(m, t) for m, t in zip(masks, truth, strict=True)])
            if masks is not None
            else np.full(len(labels), np.nan)
        )
        self._val.append((labels, probs, dices))

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        labels = np.concatenate([v[0] for v in self._val])
        probs = np.concatenate([v[1] for v in self._val])
        dices = np.concatenate([v[2] for v in self._val])
        self._val.clear()
        metrics = validation_metrics(labels, probs, dices)
        for key, value in metrics.items():
            self.log(key, value, prog_bar=key in ("val_acc", "val_dice_mean"), sync_dist=True)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # a resumed run may be given more epochs: keep the step count, rebuild the schedule's length
        for state in checkpoint.get("lr_schedulers", []):
            state.pop("total_steps", None)
            state.pop("_schedule_phases", None)

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        lr = self.hparams["lr"]
        opt = torch.optim.AdamW(self.parameters(), lr=lr, weight_decay=self.hparams["weight_decay"])
        steps = int(max(1, self.trainer.estimated_stepping_batches))  # a float only when unbounded (inf)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def validation_metrics(labels: np.ndarray, probs: np.ndarray, dices: np.ndarray) -> dict[str, float]:
    """Epoch figures; ``val_score`` (model selection) = tumor-type accuracy + mean Dice on tumor slices."""
    out: dict[str, float] = {}
    tumor = labels != CLASSES.index("notumor")
    score = 0.0
    if not np.isnan(probs).all():
        pred = probs.argmax(1)
        out["val_acc"] = float((pred == labels).mean())
        tumor_pred = probs[:, : len(TUMOR_CLASSES)].argmax(1)  # the tumor types only, among tumor slices
        out["val_tumor_type_acc"] = float((tumor_pred[tumor] == labels[tumor]).mean()) if tumor.any() else 0.0
        score += out["val_tumor_type_acc"]
    if not np.isnan(dices).all():
        out["val_dice_mean"] = float(dices[tumor].mean()) if tumor.any() else 0.0
        out["val_dice_median"] = float(np.median(dices[tumor])) if tumor.any() else 0.0
        score += out["val_dice_mean"]
    out["val_score"] = score
    return out


def mask_loss(name: str) -> nn.Module:
    """Per-slice mask loss: ``dice_ce`` (Dice + BCE) or ``tversky`` (Tversky + BCE; MONAI's alpha weighs false
    positives and beta false negatives, so 0.3/0.7 makes under-segmentation, the measured weakness on large
    tumors, the dearer error)."""
    if name == "dice_ce":
        return DiceCELoss(sigmoid=True)
    if name == "tversky":
        tversky, bce = TverskyLoss(sigmoid=True, alpha=0.3, beta=0.7), nn.BCEWithLogitsLoss()
        return _Sum(tversky, bce)
    raise ValueError(f"unknown mask loss {name!r}; choose dice_ce or tversky")


class _Sum(nn.Module):
    """The sum of losses of the same inputs."""

    def __init__(self, *losses: nn.Module) -> None:
        super().__init__()
        self.losses = nn.ModuleList(losses)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum((loss(logits, target) for loss in self.losses), torch.zeros((), device=logits.device))
