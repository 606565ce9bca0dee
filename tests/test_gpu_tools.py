"""tools/gpu: pack → train (a dry run on the CPU) → unpack → ``braintumor cv`` finishes the CV, training nothing."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from braintumor.bundle import read_card, sha256
from braintumor.cli import main
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


@pytest.fixture(scope="module")
def gpu_train():
    """tools/gpu/train.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("gpu_train", ROOT / "tools" / "gpu" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_epochs_are_chosen_to_fit_the_time_left(gpu_train):
    # 10 s an epoch, 30 s of start-up and finish, 420 s left: (420 - 30) // 10
    assert gpu_train.fitting_epochs(10.0, 30.0, 420.0, cap=40) == {
        "epochs": 39,
        "seconds_per_epoch": 10.0,
        "overhead_s": 30,
    }
    assert gpu_train.fitting_epochs(10.0, 30.0, 3600.0, cap=40)["epochs"] == 40
    assert gpu_train.fitting_epochs(100.0, 50.0, 60.0, cap=40)["epochs"] == 1  # never 0
    assert gpu_train.fitting_epochs(0.0, 0.0, 60.0, cap=40)["epochs"] == 40  # a 0 s epoch (rounded) is no error


def test_runs_still_going_at_the_deadline_are_stopped(gpu_train, tmp_path):
    sleep = [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(120)"]
    fail = [sys.executable, "-c", "import sys; print('bad things'); sys.exit(3)"]
    results = gpu_train.run_all({"slow": sleep, "bad": fail}, tmp_path, threads=1, deadline=time.time() + 3)
    assert results["slow"]["stopped"] and results["slow"]["rc"] != 0 and results["slow"]["seconds"] < 30
    assert results["bad"]["rc"] == 3 and "stopped" not in results["bad"]
    assert gpu_train.tail(tmp_path / "bad.log") == "bad things"


def test_an_earlier_attempt_is_cleared_and_other_folders_refused(gpu_train, tmp_path):
    earlier = tmp_path / "runs"
    (earlier / "fold0").mkdir(parents=True)
    (earlier / "gpu.json").write_text("{}")
    gpu_train.fresh_runs_folder(earlier)
    assert not earlier.exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("x")
    with pytest.raises(SystemExit, match="holds other files"):
        gpu_train.fresh_runs_folder(tmp_path / "mine")


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
        training = read_card(cv / run).training
        assert training is not None and "tools/gpu/pack.py" in training.notes["packed_data"]
    final = read_card(cv / "final")
    assert final.training is not None and final.training.all_patients
    assert final.cross_validation is not None and final.cross_validation["pooled"]["tumor_type_accuracy"] is not None
    assert (cv / "cv.md").is_file() and (cv / "pooled" / "report.json").is_file()


def test_unpack_refuses_weights_trained_on_another_split(round_trip, tmp_path):
    _, back = round_trip
    other = make_manifest(tmp_path / "other", patients_per_class=5)
    done = _tool("unpack.py", back, "--data", other, "--out", tmp_path / "cv")
    assert done.returncode != 0 and "is not this machine's split" in done.stderr


def test_unpack_refuses_an_incomplete_cv(round_trip, tiny_data, tmp_path):
    """A run that brought back nothing would be trained here by 'braintumor cv', on the CPU: no command then."""
    _, back = round_trip
    partial = tmp_path / "partial"
    shutil.copytree(back, partial)
    (partial / "fold1.safetensors").unlink()
    done = _tool("unpack.py", partial, "--data", tiny_data, "--out", tmp_path / "cv")
    assert done.returncode == 1 and "fold1: no model came back" in done.stderr and "braintumor cv" not in done.stdout
