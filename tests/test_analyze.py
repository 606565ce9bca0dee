"""The shipped model through the Python API and the CLI, on real slices where present."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from braintumor.bundle import (
    DEFAULT_MODEL_DIR,
    ONNX,
    SINGLE_MODEL_DIR,
    WEIGHTS,
    member_dirs,
    read_card,
    sha256,
    verified_file,
)
from braintumor.cli import main
from braintumor.commands.analyze import COLUMNS
from braintumor.data import load_mask, read_manifest
from braintumor.data.patient_keys import trained_groups
from braintumor.data.splits import group_of
from braintumor.errors import ModelFolderError
from braintumor.evaluation.metrics import dice
from braintumor.inference import Analyzer, Failure
from conftest import csv_rows


@pytest.fixture(scope="module")
def unseen_tumor_slices(dev512, analyzer):
    """Each network of the shipped model with the dev-512 tumor slices of patients it never trained on (an
    ensemble member: its own held-out fold), at 512 px, twice the resolution it trained on.  The ensemble as a
    whole has seen every dev patient through 4 of its 5 members, so it is checked one unseen member at a time."""
    records = [r for r in read_manifest(dev512) if r.label != "notumor"]
    pairs = []
    for folder, training in zip(analyzer.member_dirs, analyzer.trainings, strict=True):
        trained = trained_groups(records, [training])
        pairs.append((folder, [r for r in records if group_of(r) not in trained]))
    assert sum(len(rows) for _, rows in pairs) >= 15
    return pairs


def test_real_slices_label_mask_and_area(unseen_tumor_slices):
    correct, dices, seen = 0, [], 0
    for folder, rows in unseen_tumor_slices:
        network = Analyzer(folder)
        for r in rows:
            result = network.analyze(r.image, spacing_mm=0.49)
            truth = load_mask(r, result.mask.shape)
            assert result.mask.shape == truth.shape == (512, 512)
            correct += result.label == r.label
            dices.append(dice(result.mask, truth))
            assert result.spacing_source == "user" and result.spacing_mm == (0.49, 0.49)
            assert result.area_cm2 == pytest.approx(result.tumor_pixels * 0.49**2 / 100)
        seen += len(rows)
    assert correct / seen >= 0.8
    assert np.mean(dices) >= 0.6 and np.median(dices) >= 0.7


def test_the_ensemble_answers_its_most_confident_slice_right(analyzer, dev512):
    """A smoke test on seen patients (every dev patient trained 4 of the 5 members): not a measure of accuracy."""
    rows = [r for r in read_manifest(dev512) if r.label != "notumor"][:20]
    results = [analyzer.analyze(r.image) for r in rows]
    confident = max(range(len(rows)), key=lambda i: results[i].confidence or 0.0)
    assert results[confident].label == rows[confident].label


def test_shipped_model_is_small_and_checksummed():
    card = read_card(DEFAULT_MODEL_DIR)
    members = member_dirs(DEFAULT_MODEL_DIR, card) if card.members else [DEFAULT_MODEL_DIR]
    for folder in members:
        member = read_card(folder)
        assert sum(p.stat().st_size for p in folder.iterdir() if p.is_file()) <= 10 * 1024 * 1024  # ≤ 10 MB a network
        for name in (WEIGHTS, ONNX):
            assert member.files[name].sha256 == sha256(folder / name)


def test_tampered_weights_are_refused(tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(SINGLE_MODEL_DIR, copy)
    data = bytearray((copy / ONNX).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / ONNX).write_bytes(bytes(data))
    with pytest.raises(ModelFolderError, match="SHA-256 does not match"):
        Analyzer.load(copy)
    (copy / WEIGHTS).write_bytes((copy / WEIGHTS).read_bytes()[:-10])
    with pytest.raises(ModelFolderError, match="refusing to load"):
        verified_file(copy, WEIGHTS)


def test_unknown_spacing_gives_no_area(analyzer):
    image = np.zeros((256, 256), np.uint8)
    image[60:200, 60:200] = 100
    result = analyzer.analyze(_png(image), name="x.png")
    assert result.area_cm2 is None and result.spacing_source == "unknown"
    assert any("spacing unknown" in w for w in result.warnings)


def _png(array) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("network", ["single", "member"])
def test_onnx_and_pytorch_agree(analyzer, dev512, network):
    import torch

    from braintumor.imageio import load_scan
    from braintumor.inference.export import load_torch_model
    from braintumor.preprocessing import to_model_input

    folder = SINGLE_MODEL_DIR if network == "single" else analyzer.member_dirs[0]
    net, card = load_torch_model(folder)
    onnx = Analyzer(folder)
    for path in sorted((dev512 / "images").glob("*.png"))[:4]:
        x, _ = to_model_input(load_scan(path).pixels, card.input.size)
        mask_onnx, probs_onnx, features_onnx = onnx.network(x[None, None])
        with torch.inference_mode():
            seg, cls, features = net.forward_with_features(torch.from_numpy(x)[None, None])
        mask_torch, probs_torch = torch.sigmoid(seg).numpy(), torch.softmax(cls, 1).numpy()
        if network == "single":  # the same float32 arithmetic
            assert np.abs(mask_torch - mask_onnx).max() < 1e-3 and np.abs(probs_torch - probs_onnx).max() < 1e-4
            assert np.abs(features.numpy() - features_onnx).max() < 1e-3 * max(1.0, float(np.abs(features).max()))
        else:  # a member's int8 graph against its float16 weights: boundary pixels move, little else
            assert np.abs(mask_torch - mask_onnx).mean() < 5e-3 and np.abs(probs_torch - probs_onnx).max() < 0.02
            assert ((mask_torch >= 0.5) == (mask_onnx >= 0.5)).mean() >= 0.995


def test_cli_batch_with_a_corrupt_file(dev512, tmp_path, capsys):
    images = sorted((dev512 / "images").glob("*.png"))[:3]
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    out = tmp_path / "out"
    status = main(["analyze", *map(str, images), str(bad), "--spacing-mm", "0.49", "--out", str(out)])
    assert status == 1
    rows = csv_rows(out / "results.csv")
    assert list(rows[0]) == COLUMNS and len(rows) == 4
    assert [bool(r["error"]) for r in rows] == [False, False, False, True]
    for r, image in zip(rows, images, strict=False):  # the last row, the corrupt file, has no image
        assert r["spacing_mm"] == "0.49" and r["spacing_source"] == "user"
        assert float(r["area_cm2"]) == pytest.approx(int(r["tumor_pixels"]) * 0.49**2 / 100, abs=1e-3)
        mask = np.asarray(Image.open(out / "masks" / image.name))
        assert mask.shape == (512, 512) and set(np.unique(mask)) <= {0, 255}
        assert (out / "overlays" / image.name).is_file()
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 4 and "ERROR" in printed[-1]


def test_cli_json_lines_and_exit_codes(dev512, tmp_path, capsys):
    image = sorted((dev512 / "images").glob("*.png"))[0]
    assert main(["analyze", str(image), "--json"]) == 0
    row = json.loads(capsys.readouterr().out.strip())
    assert list(row) == COLUMNS and row["spacing_mm"] is None and row["area_cm2"] is None
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    assert main(["analyze", str(empty)]) == 2  # nothing could be read


def test_folder_input_is_recursive(tmp_path, capsys):
    (tmp_path / "a" / "b").mkdir(parents=True)
    image = np.zeros((64, 64), np.uint8)
    (tmp_path / "a" / "b" / "deep.png").write_bytes(_png(image))
    (tmp_path / "a" / "notes.txt").write_text("ignored")
    assert main(["analyze", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["file"].endswith("deep.png")


def test_analyzer_is_thread_safe(analyzer, dev512):
    from concurrent.futures import ThreadPoolExecutor

    path = sorted((dev512 / "images").glob("*.png"))[0]
    expected = analyzer.analyze(path).probabilities
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: analyzer.analyze(path).probabilities, range(8)))
    assert all(r == pytest.approx(expected) for r in results)


def test_gradcam_highlights_part_of_the_slice(analyzer, dev512):
    from braintumor.imageio import load_scan
    from braintumor.inference.explain import Explainer

    scan = load_scan(sorted((dev512 / "images").glob("*.png"))[0])
    cam = Explainer(DEFAULT_MODEL_DIR).explain(scan)
    assert cam.shape == scan.shape and 0.0 <= cam.min() and cam.max() <= 1.0
    assert cam.max() - cam.min() > 0.5  # a map, not a constant


def test_batch_keeps_input_order_around_errors(analyzer, dev512, tmp_path):
    images = sorted((dev512 / "images").glob("*.png"))[:3]
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"")
    sources = [images[0], bad, images[1], images[2]]
    results = list(analyzer.analyze_many(sources, batch_size=2))
    assert [r.file for r in results] == [str(p) for p in sources]
    assert [isinstance(r, Failure) for r in results] == [False, True, False, False]
