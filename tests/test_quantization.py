"""INT8 members (``experiments.quantization``): the float16-stored graph is turned back into the float32 graph it
runs as, quantized statically, and the int8 graph stays close to the float one; calibration never reads a member's
unseen slices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto

from braintumor import CLASSES
from braintumor.bundle import ENSEMBLE_DIR, ONNX, InputSpec, ModelCard, Postprocessing, Task, write_card
from braintumor.experiments.quantization import (
    float32_graph,
    quantize_member,
    scored_ids,
    session,
    training_records,
)
from conftest import csv_rows

pytestmark = pytest.mark.slow  # static quantization calibrates the graph: ~40 s, CI's full run only

SIZE = 32


def _blobs(n: int, seed: int) -> np.ndarray:
    """``(n, 1, SIZE, SIZE)`` inputs like preprocessed slices: a dim noisy background, one bright disc, in [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    out = rng.uniform(0.0, 0.3, (n, 1, SIZE, SIZE))
    for x in out:
        cy, cx, r = rng.integers(8, 24), rng.integers(8, 24), rng.integers(3, 8)
        x[0][(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(0.7, 1.0)
    return out.astype(np.float32)


@pytest.fixture(scope="module")
def member(tmp_path_factory) -> Path:
    """An untrained multitask_unet stored as an ensemble member is (float16 weights cast at load), with a card.
    No fit: the seeded initialisation, with non-trivial batch-norm statistics and its two last layers rescaled so
    that its mask and class logits spread (std 2) as a trained network's do; untouched, its outputs are all ≈ 0.49
    and any error tolerance would pass."""
    import torch

    from braintumor.inference.export import export_onnx, halve_onnx_weights
    from braintumor.models import build_model

    torch.manual_seed(0)
    net = build_model("multitask_unet", num_classes=len(CLASSES)).eval()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    with torch.no_grad():
        seg, cls = net(torch.from_numpy(_blobs(16, seed=0)))
        for layer, logits in ((net.final_conv, seg), (net.class_head[3], cls)):
            scale = 2.0 / logits.std()
            layer.weight.mul_(scale)
            layer.bias.mul_(scale).sub_(logits.mean() * scale)
    folder = tmp_path_factory.mktemp("member")
    export_onnx(net, SIZE, folder)
    halve_onnx_weights(folder / ONNX)
    card = ModelCard(
        name="tiny",
        architecture="multitask_unet",
        task=Task.SEGMENT_AND_CLASSIFY,
        classes=tuple(CLASSES),
        input=InputSpec(size=SIZE),
        postprocessing=Postprocessing(),
    )
    write_card(folder, card)
    return folder


def _errors(member: Path, int8: Path) -> tuple[np.ndarray, np.ndarray]:
    """|float − int8| of the mask and class probabilities on 8 inputs that calibrated nothing."""
    x = _blobs(8, seed=3)
    float_out = session(member / ONNX).run(["mask_prob", "class_prob"], {"image": x})
    int8_out = session(int8).run(["mask_prob", "class_prob"], {"image": x})
    for a, b in zip(float_out, int8_out, strict=True):
        assert a.shape == b.shape and np.isfinite(b).all()
    assert float_out[0].std() > 0.1  # the outputs spread: the tolerances below mean something
    return np.abs(float_out[0] - int8_out[0]), np.abs(float_out[1] - int8_out[1])


#: measured on this tiny member: mean mask error 0.016 (max 0.096), class error 4e-5 when calibrated on images like
#: its inputs; mean 0.10–0.16 (max 0.77) when calibrated on images 5–20× darker (activations clipped)
MASK_MEAN, MASK_MAX, CLASS_MAX = 0.04, 0.3, 0.01


def test_the_float32_graph_is_the_member_without_its_casts(member, tmp_path):
    import onnx

    graph = float32_graph(member / ONNX)
    assert not [i.name for i in graph.graph.initializer if i.data_type == TensorProto.FLOAT16]
    onnx.save(graph, str(tmp_path / "float32.onnx"))
    x = _blobs(4, seed=1)
    stored, plain = (
        session(member / ONNX).run(None, {"image": x}),
        session(tmp_path / "float32.onnx").run(None, {"image": x}),
    )
    for a, b in zip(stored, plain, strict=True):
        assert np.array_equal(a, b)  # the same float32 values ONNX Runtime casts to at load


@pytest.mark.parametrize("activations", ["QInt8", "QUInt8"])
def test_the_int8_member_runs_and_stays_close_to_the_float_member(member, tmp_path, activations):
    import onnx

    path = quantize_member(member, tmp_path, _blobs(32, seed=2), activation_type=activations)
    assert path == tmp_path / "model.int8.onnx"
    graph = onnx.load(str(path))
    int8_weights = [i for i in graph.graph.initializer if i.data_type == TensorProto.INT8 and len(i.dims) == 4]
    assert len(int8_weights) >= 20  # every Conv but the last and every ConvTranspose, per-channel int8
    assert sum(n.op_type == "QuantizeLinear" for n in graph.graph.node) >= 10
    mask_error, class_error = _errors(member, path)
    assert mask_error.max() > 0  # the int8 graph is not the float graph
    assert mask_error.mean() < MASK_MEAN and mask_error.max() < MASK_MAX and class_error.max() < CLASS_MAX


def test_the_tolerance_catches_a_badly_calibrated_int8_member(member, tmp_path):
    """Calibrated on images 20× darker than its inputs, the int8 graph clips its activations: the tolerance fails."""
    path = quantize_member(member, tmp_path, _blobs(32, seed=2) * 0.05)
    mask_error, _ = _errors(member, path)
    assert mask_error.mean() > MASK_MEAN


def test_calibration_rows_are_the_members_training_patients_never_its_unseen_slices(dev):
    folder = ENSEMBLE_DIR / "fold0"
    if not (folder / "eval" / "per_slice.csv").is_file():
        pytest.skip("no fold0 member in this checkout")
    rows = training_records(folder, dev)
    unseen = set(scored_ids(folder / "eval" / "per_slice.csv"))
    assert rows and unseen and not unseen & {r.id for r in rows}
    assert len(rows) + len(unseen) == len(csv_rows(dev / "index.csv"))  # every row on one side
