"""The classification-only references (mlp, alexnet): shapes, parameter counts from the layer formulas, a tiny
training run that writes a checksummed model folder with an ONNX graph, and ``evaluate`` without masks."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch

from braintumor.cli import main
from braintumor.models import ARCHITECTURES, DESCRIPTIONS, build_model
from braintumor.models.alexnet import adaptive_avg_pool
from braintumor.training.run import TrainConfig, train
from conftest import csv_rows

CLASSES = 4


def dense(cin: int, cout: int) -> int:
    """A linear layer: weights and biases."""
    return cin * cout + cout


def conv_bn(cin: int, cout: int, kernel: int) -> int:
    """A convolution without bias, then batch norm (scale and shift per channel)."""
    return cin * cout * kernel * kernel + 2 * cout


def test_the_references_are_registered_as_classifiers():
    assert ARCHITECTURES["mlp"] == ("classification", 64)
    assert ARCHITECTURES["alexnet"] == ("classification", 224)
    assert "batch normalisation" in DESCRIPTIONS["alexnet"] and "adaptive average pooling" in DESCRIPTIONS["alexnet"]
    assert set(DESCRIPTIONS) == set(ARCHITECTURES)


def test_mlp_parameters_and_shapes():
    net = build_model("mlp").eval()
    side = ARCHITECTURES["mlp"][1]
    expected = dense(side * side, 512) + dense(512, 128) + dense(128, CLASSES)
    # 4096·512 + 512 + 512·128 + 128 + 128·4 + 4 = 2 097 664 + 65 664 + 516
    assert expected == 2_163_844
    assert sum(p.numel() for p in net.parameters()) == expected
    with torch.no_grad():
        mask, logits = net(torch.rand(3, 1, side, side))
        none, same, features = net.forward_with_features(torch.rand(3, 1, side, side))
    assert mask is None and none is None and logits.shape == same.shape == (3, CLASSES)
    assert features.shape == (3, 128)
    # the first layer fixes the side: another side is another network, and the wrong side is refused
    small = build_model("mlp", size=32)
    assert sum(p.numel() for p in small.parameters()) == dense(32 * 32, 512) + dense(512, 128) + dense(128, CLASSES)
    with pytest.raises(ValueError, match="reads 32×32 slices"):
        small(torch.rand(1, 1, 64, 64))


def test_alexnet_parameters_and_shapes():
    net = build_model("alexnet").eval()
    convolutions = (
        conv_bn(1, 96, 11) + conv_bn(96, 256, 5) + conv_bn(256, 384, 3) + conv_bn(384, 384, 3) + conv_bn(384, 256, 3)
    )
    expected = convolutions + dense(256 * 6 * 6, 4096) + dense(4096, 4096) + dense(4096, CLASSES)
    # convolutions 11 616 + 614 400 + 884 736 + 1 327 104 + 884 736 and batch norm 2·(96 + 256 + 384 + 384 + 256);
    # dense 9216·4096 + 4096, 4096·4096 + 4096, 4096·4 + 4
    assert convolutions == 3_722_592 + 2_752 and expected == 58_275_876
    assert sum(p.numel() for p in net.parameters()) == expected
    side = ARCHITECTURES["alexnet"][1]
    with torch.no_grad():
        trunk = net.features(torch.rand(2, 1, side, side))
        mask, logits = net(torch.rand(2, 1, side, side))
        _, _, features = net.forward_with_features(torch.rand(2, 1, side, side))
        # the smallest side that passes the three pools: 63 px → 15 → 7 → 3 → 1 (62 → 14 → 6 → 2: no third pool)
        _, small = net(torch.rand(2, 1, 63, 63))
    assert trunk.shape == (2, 256, 6, 6)  # the paper's grid at 224: the adaptive pooling is the identity there
    assert mask is None and logits.shape == small.shape == (2, CLASSES) and features.shape == (2, 4096)
    with pytest.raises(ValueError, match="at least 63 px"):
        net(torch.rand(1, 1, 62, 62))


@pytest.mark.parametrize("side", [1, 3, 6, 7, 13])
def test_alexnet_pooling_is_adaptive_average_pooling(side):
    x = torch.rand(2, 5, side, side + 2)
    assert torch.allclose(adaptive_avg_pool(x, 6), torch.nn.functional.adaptive_avg_pool2d(x, 6), atol=1e-6)


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(
    scope="module",
    params=["mlp", pytest.param("alexnet", marks=pytest.mark.slow)],  # alexnet: 58 M parameters, ~30 s
)
def trained(request, tiny_data, tmp_path_factory):
    """(architecture, model folder) after one epoch on the tiny set; alexnet at 64 px (its pooling allows it)."""
    arch = request.param
    out = train(
        TrainConfig(
            data=tiny_data,
            out=tmp_path_factory.mktemp(arch),
            arch=arch,
            size=64,
            epochs=1,
            batch_size=4,
            folds=4,
            progress=False,
        )
    )
    shutil.rmtree(out / "checkpoints")  # resumable state (GBs for alexnet), not part of the model folder
    return arch, out


def test_one_epoch_writes_a_loadable_model_folder(trained):
    import onnxruntime as ort

    from braintumor.inference.export import load_torch_model

    arch, folder = trained
    card = json.loads((folder / "card.json").read_text())
    assert card["architecture"] == arch and card["task"] == "classification"
    assert card["description"] == DESCRIPTIONS[arch] and card["input"]["size"] == 64
    assert card["postprocessing"] is None  # no mask, no threshold
    assert "val_acc" in card["validation"] and "val_dice_mean" not in card["validation"]
    assert set(card["files"]) == {"model.safetensors", "model.onnx"}
    for name, entry in card["files"].items():
        assert entry["sha256"] == _sha256(folder / name) and entry["bytes"] == (folder / name).stat().st_size
    net, _ = load_torch_model(folder)  # verifies the safetensors checksum
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["class_prob", "features"]
    x = np.random.default_rng(0).random((3, 1, 64, 64), dtype=np.float32)
    with torch.no_grad():
        _, logits, features = net.forward_with_features(torch.from_numpy(x))
    probs, onnx_features = session.run(None, {"image": x})
    assert np.allclose(probs, logits.softmax(1).numpy(), atol=1e-4) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert np.allclose(onnx_features, features.numpy(), atol=1e-3)


def test_evaluate_scores_a_classification_only_folder(trained, tiny_data, tmp_path, capsys):
    arch, folder = trained
    out = tmp_path / "eval"
    command = ["evaluate", "--data", str(tiny_data), "--model", str(folder), "--out", str(out), "--bootstrap", "50"]
    assert main(command) == 0
    assert "segmentation: not produced by this model" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert isinstance(report["accuracy"], float) and isinstance(report["tumor_type_accuracy"], float)
    assert report["segmentation_produced"] is False and report["model"] == f"braintumor-{arch}"
    absent = ("dice_mean", "dice_median", "iou_mean", "hd95_mm_median", "area_error_median", "missed_tumors")
    assert all(report[k] is None for k in absent) and report["notumor_outlined"] is None
    assert report["segmentation_per_class"] == {} and report["per_patient"]["dice_mean"] is None
    assert set(report["ci95"]) == {"accuracy", "tumor_type_accuracy"}  # no interval of a figure that does not exist
    rows = csv_rows(out / "per_slice.csv")
    assert rows and all(r["dice"] == "" and r["predicted"] for r in rows)
    md = (out / "report.md").read_text()
    assert "Segmentation: not produced by this model" in md and "| Dice" not in md and "| IoU" not in md
    assert not (out / "segmentation.png").exists() and (out / "confusion_matrix.png").stat().st_size > 0
    assert "no predicted outline" in (out / "gallery" / "gallery.md").read_text()


def test_a_classification_only_model_answers_with_a_type_and_no_mask(trained):
    from braintumor.imageio import Scan
    from braintumor.inference import Analyzer, Classification, Segmentation

    _, folder = trained
    pixels = np.random.default_rng(1).normal(40, 10, (40, 50)).astype(np.float32)
    (result,) = Analyzer(folder).analyze_scans([Scan(pixels, "a.png", spacing_mm=(0.5, 0.5), spacing_source="file")])
    assert isinstance(result, Classification) and not isinstance(result, Segmentation)
    assert result.label in result.probabilities and sum(result.probabilities.values()) == pytest.approx(1, abs=1e-4)
    row = result.row()
    assert row["label"] == result.label and row["tumor_pixels"] is None and row["area_cm2"] is None
    assert any("segmentation: not produced" in w for w in result.warnings)


@pytest.mark.slow
def test_cross_validation_of_a_classifier(tiny_data, tmp_path, capsys):
    out = tmp_path / "cv"
    command = ["cv", "--data", str(tiny_data), "--out", str(out), "--arch", "mlp", "--size", "32", "--folds", "2"]
    assert main([*command, "--epochs", "1", "--batch-size", "4", "--bootstrap", "20"]) == 0
    assert "segmentation: not produced by this model" in capsys.readouterr().out
    rows = csv_rows(out / "cv.csv")
    assert len(rows) == 2 and all(r["tumor_type_accuracy"] and r["dice_mean"] == "" for r in rows)
    pooled = json.loads((out / "pooled" / "report.json").read_text())
    assert pooled["segmentation_produced"] is False and pooled["dice_mean"] is None
