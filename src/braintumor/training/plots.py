"""Training curves from Lightning's metrics.csv."""

from __future__ import annotations

import csv
from pathlib import Path


def plot_curves(metrics_csv: Path, out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(metrics_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for key, ax in (
        ("train_loss", axes[0]),
        ("val_acc", axes[1]),
        ("val_tumor_type_acc", axes[1]),
        ("val_dice_mean", axes[1]),
    ):
        points = [(int(r["epoch"]), float(r[key])) for r in rows if r.get(key)]
        if points:
            ax.plot(*zip(*points, strict=True), label=key, marker=".")
    axes[0].set_title("training loss")
    axes[1].set_title("validation (patient-level fold)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
