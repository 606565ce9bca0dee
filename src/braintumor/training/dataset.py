"""Slices of a manifest cached at network resolution, and the MONAI augmentations for training."""

from __future__ import annotations

import logging

import numpy as np
import torch
from monai import transforms as T
from tqdm import tqdm

from braintumor import CLASSES
from braintumor.data.manifest import Record, load_record
from braintumor.errors import ScanError
from braintumor.preprocessing import mask_to_input, to_model_input

log = logging.getLogger(__name__)


def cache_slices(records: list[Record], size: int, progress: bool = True) -> dict:
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
        raise ScanError("dataset", "none of the listed images could be read")
    return {
        "image": torch.from_numpy(np.stack(images)[:, None]),
        "mask": torch.from_numpy(np.stack(masks)[:, None].astype(np.float32)),
        "label": torch.tensor(labels),
        "records": kept,
    }


def train_transforms() -> T.Compose:
    """Geometry (rotation, zoom, shift, left-right flip), MRI intensity (bias field, gamma, scale, noise)."""
    both = ["image", "mask"]
    return T.Compose([
        T.RandAffined(both, prob=0.8, rotate_range=0.26, scale_range=0.15, translate_range=(12, 12),
                      mode=("bilinear", "nearest"), padding_mode="zeros"),
        T.RandFlipd(both, prob=0.5, spatial_axis=1),
        T.RandBiasFieldd("image", prob=0.15, coeff_range=(0.0, 0.2)),
        T.RandAdjustContrastd("image", prob=0.3, gamma=(0.7, 1.5)),
        T.RandScaleIntensityd("image", prob=0.3, factors=0.15),
        T.RandShiftIntensityd("image", prob=0.3, offsets=0.08),
        T.RandGaussianNoised("image", prob=0.2, std=0.03),
    ])


class SliceDataset(torch.utils.data.Dataset):
    """Items ``{"image", "mask", "label"}`` from a cache; ``transform`` only for training data."""

    def __init__(self, cache: dict, indices: np.ndarray, transform=None):
        self.cache, self.indices, self.transform = cache, np.asarray(indices), transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        j = int(self.indices[i])
        item = {"image": self.cache["image"][j], "mask": self.cache["mask"][j], "label": self.cache["label"][j]}
        if self.transform is not None:
            item = self.transform(item)
            item = {k: (v.as_tensor() if hasattr(v, "as_tensor") else v) for k, v in item.items()}
        return item
