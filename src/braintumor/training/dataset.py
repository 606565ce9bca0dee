"""Slices of a manifest cached at network resolution, and the MONAI augmentations for training."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from monai import transforms as T
from monai.data import get_track_meta, set_track_meta
from tqdm import tqdm

from braintumor import CLASSES
from braintumor.data.manifest import Record, load_record
from braintumor.errors import DatasetError, ScanError
from braintumor.preprocessing import mask_to_input, scale_intensity, to_model_input
from braintumor.preprocessing.shifts import gamma, skull_strip, zscore_brain

log = logging.getLogger(__name__)


def cache_slices(records: list[Record], size: int, progress: bool = True) -> dict[str, Any]:
    """Images (N,1,S,S) float32, masks (N,1,S,S) float32, labels (N,); unreadable rows are skipped with a line."""
    images, masks, labels, kept = [], [], [], []
    for r in tqdm(records, desc=f"reading slices at {size}px", disable=not progress, leave=False):
        try:
            scan, mask = load_record(r)
        except ScanError as err:
            log.warning("skipped: %s", err)
            continue
        x, _ = to_model_input(scan.pixels, size)
        images.append(x)
        masks.append(mask_to_input(mask, size))
        labels.append(CLASSES.index(r.label))
        kept.append(r)
    if not kept:
        raise DatasetError("dataset", "none of the listed images could be read")
    return {
        "image": torch.from_numpy(np.stack(images)[:, None]),
        "mask": torch.from_numpy(np.stack(masks)[:, None].astype(np.float32)),
        "label": torch.tensor(labels),
        "records": kept,
    }


class RandSourceShiftd(T.RandomizableTransform, T.MapTransform):
    """With probability ``prob``, make the slice look as if another site had prepared it: skull-stripped,
    skull-stripped and z-scored (background above dark tissue), or another contrast curve; then scaled to
    [0, 1] as inference does.  Applied to every class alike, so the source is no cue for the class."""

    SHIFTS = (skull_strip, zscore_brain, gamma(0.6), gamma(1.6))

    def __init__(self, prob: float = 0.35) -> None:
        T.RandomizableTransform.__init__(self, prob)
        T.MapTransform.__init__(self, ["image", "mask"])
        self._choice = 0

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        self._choice = int(self.R.randint(len(self.SHIFTS)))

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        self.randomize()
        if not self._do_transform:
            return data
        image = np.asarray(data["image"])[0]
        mask = np.asarray(data["mask"])[0]
        shifted, _ = self.SHIFTS[self._choice](image, mask)
        out = dict(data)
        out["image"] = torch.from_numpy(scale_intensity(shifted)[None])
        return out


def train_transforms() -> T.Compose:
    """Other sources (skull stripping, z-scoring, contrast), geometry (rotation, zoom over a wide range of fields
    of view, shift, flips, quarter turns), MRI intensity (bias field, gamma, scale, noise)."""
    both = ["image", "mask"]
    return T.Compose(
        [
            RandSourceShiftd(prob=0.35),
            T.RandAffined(
                both,
                prob=0.8,
                rotate_range=0.26,
                scale_range=0.3,
                translate_range=(16, 16),
                mode=("bilinear", "nearest"),
                padding_mode="zeros",
            ),
            T.RandFlipd(both, prob=0.5, spatial_axis=1),
            T.RandRotate90d(both, prob=0.1),
            T.RandBiasFieldd("image", prob=0.15, coeff_range=(0.0, 0.2)),
            T.RandAdjustContrastd("image", prob=0.3, gamma=(0.7, 1.5)),
            T.RandScaleIntensityd("image", prob=0.3, factors=0.15),
            T.RandShiftIntensityd("image", prob=0.3, offsets=0.08),
            T.RandGaussianNoised("image", prob=0.2, std=0.03),
        ]
    )


class SliceDataset(torch.utils.data.Dataset[dict[str, Any]]):
    """Items ``{"image", "mask", "label"}`` from a cache; ``transform`` only for training data."""

    def __init__(
        self,
        cache: dict[str, Any],
        indices: np.ndarray,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.cache, self.indices, self.transform = cache, np.asarray(indices), transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        j = int(self.indices[i])
        item = {"image": self.cache["image"][j], "mask": self.cache["mask"][j], "label": self.cache["label"][j]}
        if self.transform is not None:
            # plain tensors through MONAI, not MetaTensors: same values in half the time a slice (8.3 → 3.9 ms on
            # one core here), and the augmentation is what a GPU run waits for
            tracking = get_track_meta()
            set_track_meta(False)
            try:
                item = self.transform(item)
            finally:
                set_track_meta(tracking)
        return item


def augmented_loader(
    cache: dict[str, Any], indices: np.ndarray, batch_size: int, num_workers: int, seed: int
) -> torch.utils.data.DataLoader[dict[str, Any]]:
    """Shuffled, augmented training batches (full batches only)."""
    return torch.utils.data.DataLoader(
        SliceDataset(cache, indices, train_transforms().set_random_state(seed=seed)),
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        worker_init_fn=seed_worker if num_workers > 0 else None,
    )


def seed_worker(worker_id: int) -> None:
    """Each loader process its own random streams: Lightning's seeding of numpy, random and torch, and MONAI's of
    the transforms, whose random state lives in the dataset that every worker copies (without this, two workers
    apply the same augmentations to their slices)."""
    from lightning.fabric.utilities.seed import pl_worker_init_function
    from monai.data.utils import worker_init_fn

    pl_worker_init_function(worker_id)
    worker_init_fn(worker_id)
