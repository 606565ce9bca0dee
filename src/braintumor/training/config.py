"""``TrainConfig``: the one source of training options. The CLI's options are generated from its fields,
``to_argv`` writes the command that reruns a configuration (the card, the GPU tools), and ``plan_folds`` is the one
rule for what each cross-validation fold trains on.

Torch-free at import: the CLI builds its parser from this module.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import typing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

#: the run folder's CSV log folder
LOGS = "logs"


def _opt(help: str, default: Any = dataclasses.MISSING, flag: str | None = None, **extra: Any) -> Any:
    """A field with the help text (and CLI flag, choices, …) of its command-line option."""
    return field(default=default, metadata={"help": help, "flag": flag, **extra})


@dataclass
class TrainConfig:
    data: Path = _opt("dataset folder (manifest layout: index.csv, images/, masks/) or a folder of Figshare .mat")
    out: Path = _opt("the run folder: checkpoints, logs, the model folder")
    arch: str = _opt("multitask_unet (default), seed_unet, inception_v3, alexnet, mlp", "multitask_unet")
    size: int | None = _opt("input side in px (default: the architecture's)", None)
    epochs: int = _opt("epochs (one one-cycle schedule)", 40)
    batch_size: int = _opt("slices per step", 16)
    lr: float = _opt("peak learning rate of the one-cycle schedule", 2e-3)
    seg_loss: Literal["dice_ce", "tversky"] = _opt(
        "mask loss per slice: dice_ce (Dice + BCE) or tversky (Tversky alpha 0.3, beta 0.7 + BCE: a missed tumor "
        "pixel costs more than a false one)",
        "dice_ce",
        choices=["dice_ce", "tversky"],
    )
    seed: int = _opt("seed of the split, the initial weights and the augmentation", 0)
    folds: int = _opt("patient-level folds of the split", 5)
    val_fold: int = _opt("the fold held out for validation", 0, scope="train")
    max_minutes: float | None = _opt("stop after this much training time", None)
    patience: int = _opt("early stopping patience (epochs); none with --keep last, cv or --all-patients", 12)
    devices: str = _opt("number of devices/processes, or auto", "auto")
    accelerator: str = _opt("cpu, gpu, auto", "auto")
    strategy: str = _opt("auto, ddp, ddp_spawn …", "auto")
    # default: see ``training_precision``
    precision: str | None = _opt("bf16-mixed (default: GPU, AMX CPU), 32 (default: other CPUs), 16-mixed", None)
    limit_per_class: int | None = _opt("train on a small sample (smoke test)", None)
    pretrained: bool = _opt("ImageNet weights (inception_v3; needs timm + download)", False)
    resume: bool = _opt("continue from OUT/checkpoints/last.ckpt", False, scope="train")
    init: Path | None = _opt(
        "start from this model folder's weights ('default': the single shipped network, not the ensemble), e.g. "
        "to fine-tune on your data or at a larger --size; for cv, a CV folder continues its recipe (each fold from "
        "the same fold's model, the final model from its final/)",
        None,
    )
    num_workers: int = _opt("data loader processes", 0, flag="--workers")
    progress: bool = field(default=True, metadata={"cli": False})
    # "best": the epoch of the highest validation score; "last": the final epoch, for runs whose validation fold
    # must not choose anything (cross-validation scores that fold)
    keep: Literal["best", "last"] = _opt(
        "the epoch written: best validation score, or last", "best", scope="train", choices=["best", "last"]
    )
    # every patient in training, no validation fold: the final model once cross-validation has fixed the recipe
    # and its epoch count (standard practice; the CV figures are its accuracy estimate)
    all_patients: bool = _opt(
        "train on every patient, no validation fold, keep the last epoch: the final model of a recipe that "
        "cross-validation ('braintumor cv') has fixed",
        False,
        scope="train",
    )

    @classmethod
    def add_options(cls, parser: argparse.ArgumentParser, scope: str = "train") -> None:
        """The command-line options of every field (``scope="cv"``: those a cross-validation sets per fold are
        left out)."""
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            meta = f.metadata
            if meta.get("cli", True) is False or (scope != "train" and meta.get("scope") == "train"):
                continue
            kind = _base_type(hints[f.name])
            kwargs: dict[str, Any] = {"dest": f.name, "help": meta["help"]}
            if kind is bool:
                kwargs["action"] = "store_true"
            else:
                kwargs["type"] = kind
                if "choices" in meta:
                    kwargs["choices"] = meta["choices"]
                if f.default is dataclasses.MISSING:
                    kwargs["required"] = True
                else:
                    kwargs["default"] = f.default
            parser.add_argument(_flag(f), **kwargs)

    @classmethod
    def from_args(cls, args: argparse.Namespace, **overrides: Any) -> TrainConfig:
        """The configuration of parsed options (fields a parser left out keep their defaults)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**({k: v for k, v in vars(args).items() if k in names} | overrides))

    def to_argv(self) -> list[str]:
        """``braintumor train`` arguments that rerun this configuration (options at their default left out)."""
        argv = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("cli", True) is False or (value == f.default and f.name != "size"):
                continue
            if f.name == "size":
                value = self.input_size  # written out: the architecture's default may change
            if isinstance(value, bool):
                argv.append(_flag(f))
            else:
                argv += [_flag(f), f"{value:g}" if isinstance(value, float) else str(value)]
        return argv

    @property
    def command(self) -> str:
        """The ``braintumor train`` command line that reruns this configuration."""
        return shlex.join(["braintumor", "train", *self.to_argv()])

    @property
    def input_size(self) -> int:
        from braintumor.models import ARCHITECTURES

        return self.size or ARCHITECTURES[self.arch][1]

    @property
    def training_precision(self) -> str:
        """``precision``, else bf16-mixed on a GPU or on a CPU with AMX bf16 tiles, 32 on other CPUs. Measured on
        2-core machines (160 px, batch 16, channels-last): with AMX, an epoch of dev took 88 s in bf16 and 140 s
        in fp32; with AVX-512 but no AMX, bf16 was slower (0.95 vs 0.71 s a step)."""
        if self.precision:
            return self.precision
        return "bf16-mixed" if self.on_gpu or cpu_has_amx() else "32"

    @property
    def on_gpu(self) -> bool:
        import torch

        return self.accelerator in ("gpu", "cuda") or (self.accelerator == "auto" and torch.cuda.is_available())

    @property
    def deterministic(self) -> bool | Literal["warn"]:
        """Deterministic algorithms on a CPU; on a GPU only a warning where an operation has none, since torch
        refuses to run such an operation (some pooling and padding backward passes) in a strict run."""
        return "warn" if self.on_gpu else True

    @property
    def metrics_csv(self) -> Path:
        return Path(self.out) / LOGS / "metrics.csv"

    @property
    def lightning_devices(self) -> str | int:
        return int(self.devices) if self.devices.isdigit() else self.devices


def plan_folds(
    base: TrainConfig, runs: Path, folds: typing.Iterable[int], final: bool = False
) -> dict[str, TrainConfig]:
    """What a cross-validation trains, by run name: fold k on the other folds, kept at its last epoch (the fold it
    is scored on chooses nothing) in ``runs/fold{k}``; with ``final``, the recipe on every patient in ``runs/final``."""
    plan = {
        f"fold{k}": replace(base, out=Path(runs) / f"fold{k}", val_fold=k, keep="last", all_patients=False)
        for k in folds
    }
    if final:
        plan["final"] = replace(base, out=Path(runs) / "final", all_patients=True, keep="last")
    return plan


def cpu_has_amx() -> bool:
    """Whether this CPU multiplies bf16 in AMX tiles (torch's own check; private, so absent means no)."""
    import torch

    return bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


def _flag(f: dataclasses.Field[Any]) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _base_type(hint: Any) -> Any:
    """``int | None`` → int; ``Literal[...]`` → str; others as they are."""
    if typing.get_origin(hint) is Literal:
        return str
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint
