"""``braintumor calibrate``: fit the temperature and the out-of-distribution model of a model folder on a dataset
(see ``braintumor.experiments.calibration_fit``) and store them in the folder, checksummed in its card."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from braintumor.bundle import ModelFolderError, read_card, write_card

if TYPE_CHECKING:
    from braintumor.inference import Analyzer


def _with_features(model_dir: Path) -> Analyzer:
    """An Analyzer whose ONNX graph outputs the pooled features; older folders are re-exported from their
    verified safetensors weights (needs the 'train' extra)."""
    from braintumor.inference import Analyzer

    analyzer = Analyzer(model_dir)
    if len(analyzer.session.get_outputs()) > 2:
        return analyzer
    from braintumor.inference.export import export_onnx, load_torch_model

    net, card = load_torch_model(model_dir)
    export_onnx(net, card.input.size, model_dir)
    write_card(model_dir, card)
    print(f"re-exported {model_dir / 'model.onnx'} with a 'features' output")
    return Analyzer(model_dir)


def run(args: argparse.Namespace) -> int:
    from braintumor.experiments.calibration_fit import calibrate, store

    model_dir = Path(args.model)
    if read_card(model_dir).members:
        raise ModelFolderError(
            str(model_dir),
            "an ensemble is calibrated on its members' out-of-fold outputs by 'braintumor cv --ensemble', not here",
        )
    # fitted on the raw network, never on an earlier calibration
    write_card(model_dir, replace(read_card(model_dir), calibration=None))
    analyzer = _with_features(model_dir)
    block, features = calibrate(args.data, analyzer)
    store(model_dir, block, features)
    held = block["heldout"]
    print(
        f"temperature {block['temperature']:.3f}: ECE {held['ece_before']:.3f} → {held['ece_after']:.3f}, "
        f"NLL {held['nll_before']:.3f} → {held['nll_after']:.3f} on {held['images']} held-out images; "
        f"out-of-distribution threshold {block['ood_threshold']:.2f}, false alarms {held['ood_false_alarm_rate']:.1%} "
        f"on them → {model_dir}"
    )
    return 0
