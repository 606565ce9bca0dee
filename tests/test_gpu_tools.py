"""tools/gpu: pack → train (a dry run on the CPU) → unpack → ``braintumor cv`` finishes the CV, training nothing."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from braintumor.cli import main
from braintumor.inference.bundle import read_card, sha256
from conftest import csv_rows, make_manifest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # three small trainings and a CV: about a minute


def _tool(name: str, *args: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gpu" / name), *map(str, args)], capture_output=True, text=True
    )


@pytest.fixture(scope="module")
def round_trip(tiny_data, tmp_path_factory):
    """Tiny data packed at 32 px; 2 folds + the final model, probed then trained 1 epoch by train.py on the CPU."""
    tmp = tmp_path_factory.mktemp("gpu")
    packed, back = tmp / "gpu" / "data", tmp / "back"
    done = _tool("pack.py", "--data", tiny_data, "--out", packed, "--size", 32)
    assert done.returncode == 0, done.stderr
    done = _tool(
        "train.py", "--data", packed, "--out", back, "--runs", tmp / "runs", "--folds", 2, "--epochs", 1,
        "--minutes", 5, "--size", 32, "--batch-size", 4, "--accelerator", "cpu", "--workers", 0, "--threads", 1,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return packed, back


def test_pack_keeps_rows_and_network_input(round_trip, tiny_data):
    packed, _ = round_trip
    summary = json.loads((packed / "pack.json").read_text())
    source, copy = csv_rows(tiny_data / "index.csv"), csv_rows(packed / "index.csv")
    assert [(r["id"], r["label"], r["patient_id"]) for r in copy] == [
        (r["id"], r["label"], r["patient_id"]) for r in source
    ]
    assert summary["rows"] == len(source)
    assert summary["max_input_difference"] < 0.01  # 8-bit rounding only


def test_train_brings_back_weights_and_one_archive(round_trip):
    _, back = round_trip
    assert sorted(p.name for p in back.iterdir()) == [
        "final.safetensors",
        "fold0.safetensors",
        "fold1.safetensors",
        "meta.tar.gz",
    ]
    with tarfile.open(back / "meta.tar.gz") as tar:
        gpu = json.load(tar.extractfile("gpu.json"))
    assert gpu["probe"]["epochs"] == gpu["args"]["epochs"] == 1 and set(gpu["runs"]) == {"fold0", "fold1", "final"}


def test_epochs_are_chosen_to_fit_the_minutes():
    spec = importlib.util.spec_from_file_location("gpu_train", ROOT / "tools" / "gpu" / "train.py")
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    # a probe of 2 epochs: the slowest run trained 20 s (10 s an epoch), start-up and finish took 30 s more
    chosen = train.fitting_epochs({"fold0": 16.0, "final": 20.0}, wall=50.0, probe_epochs=2, minutes=7, cap=40)
    assert chosen == {"epochs": 39, "seconds_per_epoch": 10.0, "overhead_s": 30}  # (420 - 30) // 10
    assert train.fitting_epochs({"final": 20.0}, 50.0, 2, minutes=60, cap=40)["epochs"] == 40
    assert train.fitting_epochs({"final": 200.0}, 250.0, 2, minutes=1, cap=40)["epochs"] == 1  # never 0


def test_unpack_then_cv_scores_the_folds_without_training(round_trip, tiny_data, tmp_path):
    _, back = round_trip
    cv = tmp_path / "cv"
    done = _tool("unpack.py", back, "--data", tiny_data, "--out", cv)
    assert done.returncode == 0, done.stderr
    command = done.stdout.split()
    assert command[:2] == ["braintumor", "cv"] and "--final" in command
    assert main([*command[1:], "--bootstrap", "20"]) == 0
    for run in ("fold0", "fold1", "final"):
        assert sha256(cv / run / "model.safetensors") == sha256(back / f"{run}.safetensors")  # the GPU's weights
        assert not (cv / run / "checkpoints").exists()  # nothing was trained again here
        assert "tools/gpu/pack.py" in read_card(cv / run)["training"]["packed_data"]
    final = read_card(cv / "final")
    assert final["training"]["all_patients"] and final["cross_validation"]["pooled"]["tumor_type_accuracy"] is not None
    assert (cv / "cv.md").is_file() and (cv / "pooled" / "report.json").is_file()


def test_unpack_refuses_weights_trained_on_another_split(round_trip, tmp_path):
    _, back = round_trip
    other = make_manifest(tmp_path / "other", patients_per_class=5)
    done = _tool("unpack.py", back, "--data", other, "--out", tmp_path / "cv")
    assert done.returncode != 0 and "is not this machine's split" in done.stderr
