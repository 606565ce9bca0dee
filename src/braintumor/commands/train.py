"""``braintumor train``: see ``braintumor.training.run``."""

import argparse
import logging

from braintumor.errors import OptionError
from braintumor.training.config import TrainConfig
from braintumor.training.run import train


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        out = train(TrainConfig.from_args(args))
    except MemoryError:
        raise OptionError("--batch-size", "out of memory: lower --batch-size or --size") from None
    except RuntimeError as err:
        if "out of memory" in str(err).lower():
            raise OptionError("--batch-size", "out of memory: lower --batch-size or --size") from None
        raise
    print(f"model folder: {out}")
    return 0
