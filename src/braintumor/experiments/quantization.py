"""INT8 ensemble members: a member's graph statically quantized with ONNX Runtime (QDQ, per-channel int8 weights,
activations calibrated on the member's own training slices).

``make_int8`` is the shipping path: it replaces a member's float graph by its int8 graph (uint8 activations, 7-bit
weights, which x86 CPUs without VNNI multiply without saturating) and records how in the card; the member is then
scored again (``experiments.ensemble``). The rest measures an int8 graph against the float member: latency, the
largest differences, the out-of-fold figures. Results: "INT8 members" in ``docs/experiments.md``.
"""

from __future__ import annotations

import csv
import shutil
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from braintumor.bundle import ONNX, ModelCard, Quantization, read_card, verified_file, write_card
from braintumor.data import Record, load_record, read_manifest
from braintumor.data.patient_keys import trained_groups
from braintumor.data.splits import group_of
from braintumor.preprocessing import to_model_input

if TYPE_CHECKING:
    import onnx
    import onnxruntime as ort

    from braintumor.inference import Analyzer

INT8 = "model.int8.onnx"
#: the ops that carry the compute (19 Conv, 4 ConvTranspose) and those that pass int8 through; the rest stay float.
#: The 1×1 mask conv before the sigmoid and the class head's two Gemms are tiny and sit right before the
#: probabilities: kept float. (ONNX Runtime 1.32's CPU provider fuses the Convs into QLinearConv but runs the
#: ConvTransposes in float between their DequantizeLinear and QuantizeLinear.)
QUANTIZED_OPS = ("Conv", "ConvTranspose", "MaxPool", "Relu", "Pad")
KEPT_FLOAT = ("/final_conv/Conv", "/class_head/class_head.0/Gemm", "/class_head/class_head.3/Gemm")


def float32_graph(path: str | Path) -> onnx.ModelProto:
    """The member's graph with its float16-stored weights as the float32 initializers they are cast to at load
    (``halve_onnx_weights`` undone: same values, no Cast nodes), for the quantizer, which calibrates float32."""
    import onnx
    from onnx import TensorProto, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    halves = {i.name: i for i in graph.initializer if i.data_type == TensorProto.FLOAT16}
    casts = [
        n
        for n in graph.node
        if n.op_type == "Cast" and n.input[0] in halves and onnx.helper.get_attribute_value(n.attribute[0]) == 1
    ]
    for node in casts:
        half = halves.pop(node.input[0])
        graph.initializer.remove(half)
        graph.initializer.append(
            numpy_helper.from_array(numpy_helper.to_array(half).astype(np.float32), node.output[0])
        )
        graph.node.remove(node)
    onnx.checker.check_model(model)
    return model


def training_records(member_dir: str | Path, data: str | Path | None = None) -> list[Record]:
    """The rows of the member's training patients (never its unseen fold): the calibration pool."""
    card = read_card(member_dir)
    assert card.training is not None, "a member says how it trained"
    records = read_manifest(data or card.training.data)
    trained = trained_groups(records, [card.training])
    unseen = {i for rows in sorted((Path(member_dir) / "eval").glob("*.csv")) for i in scored_ids(rows)}
    rows = [r for r in records if group_of(r) in trained]
    assert not unseen & {r.id for r in rows}, "a training row is in the member's out-of-fold rows (eval/*.csv)"
    return rows


def scored_ids(rows: str | Path) -> list[str]:
    """The slice ids of a member's committed out-of-fold rows (``eval/per_slice.csv``)."""
    with open(rows, newline="") as f:
        return [row["id"] for row in csv.DictReader(f)]


def preprocessed_slices(records: Sequence[Record], size: int, n: int = 96, seed: int = 0) -> np.ndarray:
    """``(n, 1, size, size)`` float32: ``n`` rows drawn at random, preprocessed exactly as the Analyzer does."""
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(records), size=min(n, len(records)), replace=False)
    return np.stack([to_model_input(load_record(records[i])[0].pixels, size)[0] for i in chosen])[:, None]


def quantize_member(
    member_dir: str | Path,
    out_dir: str | Path,
    calibration_images: np.ndarray,
    activation_type: str = "QInt8",
    reduce_range: bool = False,
) -> Path:
    """``out_dir/model.int8.onnx``: the member's graph (float32 again), shape-inferred and pre-optimised, statically
    quantized in QDQ format, weights int8 per output channel, activations ``activation_type`` (QInt8 or QUInt8),
    MinMax ranges over ``calibration_images`` (``(N, 1, size, size)``, one image per calibration batch).
    ``reduce_range``: 7-bit weights, which x86 CPUs without VNNI need to multiply uint8 by int8 without saturating."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):  # type: ignore[misc]  # onnxruntime ships no type information: an Any base
        def __init__(self, images: Iterable[np.ndarray]) -> None:
            self.batches = iter([{"image": x[None].astype(np.float32)} for x in images])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    member_dir, out_dir = Path(member_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / INT8
    with tempfile.TemporaryDirectory() as tmp:
        plain, prepared = Path(tmp) / "float32.onnx", Path(tmp) / "prepared.onnx"
        onnx.save(float32_graph(verified_file(member_dir, ONNX)), str(plain))
        quant_pre_process(str(plain), str(prepared))
        names = {n.name for n in onnx.load(str(prepared)).graph.node}
        quantize_static(
            str(prepared),
            str(out),
            Reader(calibration_images),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(QUANTIZED_OPS),
            nodes_to_exclude=[n for n in KEPT_FLOAT if n in names],
            per_channel=True,
            activation_type=getattr(QuantType, activation_type),
            weight_type=QuantType.QInt8,
            reduce_range=reduce_range,
        )
    return out


#: what ships: uint8 activations and 7-bit int8 weights, MinMax ranges over this many training slices (seed 0)
SHIPPED_ACTIVATIONS, SHIPPED_REDUCE_RANGE, CALIBRATION_SLICES = "QUInt8", True, 96


def make_int8(member_dir: str | Path, data: str | Path | None = None) -> ModelCard:
    """Replace the member's float graph (``model.onnx``) by its int8 graph, calibrated on ``CALIBRATION_SLICES`` of
    its own training patients, and write the card: ``quantization`` says how; ``calibration`` is dropped, since the
    out-of-distribution model was fitted on the float graph's features (fit it again)."""
    import onnxruntime

    member_dir = Path(member_dir)
    card = read_card(member_dir)
    slices = preprocessed_slices(training_records(member_dir, data), card.input.size, CALIBRATION_SLICES)
    with tempfile.TemporaryDirectory() as tmp:
        graph = quantize_member(member_dir, tmp, slices, SHIPPED_ACTIVATIONS, reduce_range=SHIPPED_REDUCE_RANGE)
        shutil.move(graph, member_dir / ONNX)
    quantization = Quantization(
        activations="uint8, per tensor",
        weights="int8 per output channel, 7-bit range",
        calibration=f"MinMax over {len(slices)} slices of the member's training patients (seed 0)",
        kept_float=KEPT_FLOAT,
        tool=f"onnxruntime {onnxruntime.__version__} quantize_static, QDQ",
    )
    return write_card(member_dir, replace(card, calibration=None, quantization=quantization))


def session(path: str | Path, threads: int = 2) -> ort.InferenceSession:
    """A session set up as the runtime sets its own."""
    from braintumor.inference.runtime import onnx_session

    return onnx_session(Path(path), threads)


def int8_analyzer(member_dir: str | Path, int8_path: str | Path, threads: int = 2) -> Analyzer:
    """The member's Analyzer (its card, rows, post-processing and decision) running the int8 graph instead."""
    from braintumor.inference import Analyzer

    analyzer = Analyzer(member_dir, threads=threads)
    analyzer.sessions = [session(int8_path, threads)]
    analyzer.session = analyzer.sessions[0]
    return analyzer


def interleaved_latency(
    sessions: dict[str, ort.InferenceSession], batch: np.ndarray, runs: int = 50, warmup: int = 3
) -> dict[str, dict[str, float]]:
    """Per image, ms: median wall time and median process CPU time of ``runs`` runs of each session, the sessions
    taking turns run by run, so that a background load falls on all of them alike."""
    for s in sessions.values():
        for _ in range(warmup):
            s.run(None, {"image": batch})
    wall: dict[str, list[float]] = {k: [] for k in sessions}
    cpu: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(runs):
        for name, s in sessions.items():
            w, c = time.perf_counter(), time.process_time()
            s.run(None, {"image": batch})
            wall[name].append(time.perf_counter() - w)
            cpu[name].append(time.process_time() - c)
    n = len(batch)
    return {
        k: {"wall_ms": 1000 * float(np.median(wall[k])) / n, "cpu_ms": 1000 * float(np.median(cpu[k])) / n}
        for k in sessions
    }


def largest_differences(a: ort.InferenceSession, b: ort.InferenceSession, batch: np.ndarray) -> dict[str, float]:
    """The largest absolute difference between two graphs' mask and class probabilities on one batch."""
    mask_a, class_a = a.run(["mask_prob", "class_prob"], {"image": batch})
    mask_b, class_b = b.run(["mask_prob", "class_prob"], {"image": batch})
    return {
        "mask_prob": float(np.abs(mask_a - mask_b).max()),
        "class_prob": float(np.abs(class_a - class_b).max()),
        "mask_pixels_flipped": float(np.mean((mask_a >= 0.5) != (mask_b >= 0.5))),
    }


def figures(outcomes: Sequence[Any]) -> dict[str, float | int]:
    """The compared figures of an evaluation: mean Dice over tumor slices, tumor-type accuracy, no-tumor outlined
    rate (as ``summarise`` computes them, without the bootstrap)."""
    from braintumor.evaluation.evaluate import summarise

    report = summarise(list(outcomes), n_boot=0)
    return {k: report[k] for k in ("n_images", "dice_mean", "tumor_type_accuracy", "accuracy", "notumor_outlined")}


def committed_figures(member_dir: str | Path, name: str) -> dict[str, float | int]:
    """The same figures from the member's committed ``eval/per_slice.csv``."""
    from braintumor.experiments.ensemble import read_slices

    return figures(read_slices(Path(member_dir) / "eval" / "per_slice.csv", name))


def compare_member(
    member_dir: str | Path,
    out_dir: str | Path,
    activation_types: Sequence[str] = ("QInt8", "QUInt8"),
    n_calibration: int = 96,
    runs: int = 60,
    progress: bool = False,
) -> dict[str, Any]:
    """Quantize one float member (one exported by ``export_member``, before ``make_int8``; once per activation type,
    into ``out_dir/<type>``) and measure each int8 graph against the float member: latency at batch 1 and 8
    (interleaved), the largest probability differences on 8 unseen slices, and the out-of-fold figures through
    ``evaluate`` (the float ones must equal the committed ones)."""
    from braintumor.evaluation.evaluate import evaluate
    from braintumor.inference import Analyzer

    member_dir, out_dir = Path(member_dir), Path(out_dir)
    card = read_card(member_dir)
    assert card.training is not None
    calibration = preprocessed_slices(training_records(member_dir), card.input.size, n_calibration)
    graphs = {"float": verified_file(member_dir, ONNX)}
    for kind in activation_types:
        graphs[kind] = quantize_member(member_dir, out_dir / kind, calibration, activation_type=kind)
    sessions = {k: session(p) for k, p in graphs.items()}
    ids = scored_ids(member_dir / "eval" / "per_slice.csv")
    unseen = [r for r in read_manifest(card.training.data) if r.id in set(ids)]
    probe = preprocessed_slices(unseen, card.input.size, n=8, seed=1)  # unseen slices, for timing and differences
    result: dict[str, Any] = {
        "member": member_dir.name,
        "calibration_images": len(calibration),
        "bytes": {k: p.stat().st_size for k, p in graphs.items()},
        "latency": {f"batch{n}": interleaved_latency(sessions, probe[:n], runs) for n in (1, 8)},
        "differences": {k: largest_differences(sessions["float"], sessions[k], probe) for k in activation_types},
        "committed": committed_figures(member_dir, member_dir.name),
    }
    outcomes = {}
    for kind, path in graphs.items():
        analyzer = Analyzer(member_dir, threads=2) if kind == "float" else int8_analyzer(member_dir, path)
        outcomes[kind], _ = evaluate(card.training.data, analyzer, split="unseen", progress=progress)
        if [o.record.id for o in outcomes[kind]] != ids:
            raise AssertionError(f"{member_dir}: the evaluated rows differ from eval/per_slice.csv")
        result[kind] = figures(outcomes[kind])
    for kind in activation_types:
        pairs = list(zip(outcomes["float"], outcomes[kind], strict=True))
        result[kind] |= {
            "max_abs_dice_change": max(
                abs(a.dice - b.dice) for a, b in pairs if a.dice is not None and b.dice is not None
            ),
            "predictions_changed": sum(a.pred != b.pred for a, b in pairs),
        }
    result["rows"] = {k: [(o.record.id, o.dice, o.pred) for o in v] for k, v in outcomes.items()}
    return result
