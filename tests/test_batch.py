"""Batch analysis: the pipelined batch equals one-by-one analysis, a corrupt file costs only its own row, and an
interrupted run keeps its finished rows and resumes without duplicates."""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from braintumor.cli import main


def _slices(folder: Path, n: int) -> list[Path]:
    """Synthetic 256×256 head-like slices with a bright blob in a different place each."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:256, :256]
    paths = []
    for i in range(n):
        head = ((yy - 128) / 110) ** 2 + ((xx - 128) / 90) ** 2 < 1
        blob = (yy - 90 - 3 * i) ** 2 + (xx - 150) ** 2 < 300
        image = head * 90 + blob * 120 + rng.normal(0, 6, (256, 256))
        paths.append(folder / f"s{i:03d}.png")
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(paths[-1])
    return paths


def _rows(out: Path) -> list[dict]:
    return list(csv.DictReader(open(out / "results.csv")))


def test_batch_equals_one_by_one(tmp_path):
    files = _slices(tmp_path / "in", 7)
    assert (
        main(
            [
                "analyze",
                str(tmp_path / "in"),
                "--out",
                str(tmp_path / "batch"),
                "--batch-size",
                "4",
                "--spacing-mm",
                "0.5",
            ]
        )
        == 0
    )
    for f in files:
        assert (
            main(
                ["analyze", str(f), "--out", str(tmp_path / "one" / f.stem), "--batch-size", "1", "--spacing-mm", "0.5"]
            )
            == 0
        )
    batch = _rows(tmp_path / "batch")
    assert [Path(r["file"]).name for r in batch] == [f.name for f in files]  # input order
    for f, row in zip(files, batch, strict=True):
        single = _rows(tmp_path / "one" / f.stem)[0]
        assert row["label"] == single["label"] and row["tumor_pixels"] == single["tumor_pixels"]
        assert float(row["confidence"]) == pytest.approx(float(single["confidence"]), abs=1e-3)
        a = np.asarray(Image.open(tmp_path / "batch" / "masks" / f"{f.stem}.png"))
        b = np.asarray(Image.open(tmp_path / "one" / f.stem / "masks" / f"{f.stem}.png"))
        assert np.array_equal(a, b) and set(np.unique(a)) <= {0, 255}
        assert (tmp_path / "batch" / "overlays" / f"{f.stem}.png").is_file()


def test_corrupt_file_in_the_middle_costs_only_its_row(tmp_path):
    files = _slices(tmp_path / "in", 6)
    files[3].write_bytes(b"\x89PNG\r\n\x1a\n" + b"broken" * 10)
    assert (
        main(
            [
                "analyze",
                str(tmp_path / "in"),
                "--out",
                str(tmp_path / "out"),
                "--batch-size",
                "4",
                "--overlay-format",
                "jpeg",
            ]
        )
        == 1
    )
    rows = _rows(tmp_path / "out")
    assert [Path(r["file"]).name for r in rows] == [f.name for f in files]
    assert rows[3]["error"] and not any(r["error"] for i, r in enumerate(rows) if i != 3)
    for i, f in enumerate(files):
        assert (tmp_path / "out" / "masks" / f"{f.stem}.png").is_file() == (i != 3)
        assert (tmp_path / "out" / "overlays" / f"{f.stem}.jpg").is_file() == (i != 3)


@pytest.mark.slow
def test_interrupted_run_keeps_finished_rows_and_resumes(tmp_path):
    files = _slices(tmp_path / "in", 80)
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "braintumor.cli",
        "analyze",
        str(tmp_path / "in"),
        "--out",
        str(out),
        "--batch-size",
        "4",
        "--json",
    ]
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and (not (out / "results.csv").is_file() or len(_rows(out)) < 10):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = _rows(out)
    assert 10 <= len(finished) < len(files), "the run was not interrupted mid-batch"
    for row in finished:  # a flushed row means its outputs are on disk
        stem = Path(row["file"]).stem
        assert (out / "masks" / f"{stem}.png").is_file() and (out / "overlays" / f"{stem}.png").is_file()
    assert main(["analyze", str(tmp_path / "in"), "--out", str(out), "--resume"]) == 0
    names = [Path(r["file"]).name for r in _rows(out)]
    assert sorted(names) == [f.name for f in files] and len(names) == len(set(names))
    assert names[: len(finished)] == [Path(r["file"]).name for r in finished]
