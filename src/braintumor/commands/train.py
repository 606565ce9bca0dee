"""``braintumor train``: see ``braintumor.training.run``."""

import argparse
import logging
from typing import Any

from braintumor.training.run import TrainConfig, train


def config(args: argparse.Namespace, **overrides: Any) -> TrainConfig:
    """The TrainConfig of the shared training options (``train`` and ``cv``)."""
    devices = int(args.devices) if str(args.devices).isdigit() else args.devices
    values = dict(
        data=args.data,
        out=args.out,
        arch=args.arch,
        size=args.size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        folds=args.folds,
        val_fold=getattr(args, "val_fold", 0),
        max_minutes=args.max_minutes,
        patience=args.patience,
        devices=devices,
        accelerator=args.accelerator,
        strategy=args.strategy,
        precision=args.precision,
        limit_per_class=args.limit_per_class,
        pretrained=args.pretrained,
        resume=getattr(args, "resume", False),
        init=args.init,
        num_workers=args.workers,
        keep=getattr(args, "keep", "best"),
        all_patients=getattr(args, "all_patients", False),
    )
    return TrainConfig(**(values | overrides))


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        out = train(config(args))
    except MemoryError:
        raise ValueError("out of memory: lower --batch-size or --size") from None
    except RuntimeError as err:
        if "out of memory" in str(err).lower():
            raise ValueError("out of memory: lower --batch-size or --size") from None
        raise
    print(f"model folder: {out}")
    return 0
