"""Seeded mutation fuzzing of every reader: bit flips, truncation, scrambled headers, oversized length fields.

Each mutated file must end as a clean refusal (``ScanError``) or a valid result (a mask the size of the image,
finite probabilities).  The files are analysed in a child process, so a crash or a hang in a native decoder
fails the test and names the file.  CI runs a fixed budget; a longer run:
``BRAINTUMOR_FUZZ_CASES=2000 python -m pytest tests/test_fuzz.py``.
"""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import png_bytes, write_dicom, write_figshare_mat

CASES = int(os.environ.get("BRAINTUMOR_FUZZ_CASES", "30"))  # mutations per seed file

WORKER = """
import json, sys
from pathlib import Path
import numpy as np
from braintumor.errors import ScanError
from braintumor.inference import Analyzer
analyzer = Analyzer.default()
for path in sorted(Path(sys.argv[1]).iterdir()):
    print("START", path.name, flush=True)
    try:
        r = analyzer.analyze(path, spacing_mm=0.5)
    except ScanError as err:
        assert str(err).startswith(str(path)), str(err)
        assert "\\n" not in str(err), str(err)
        print("REFUSED", path.name, flush=True)
        continue
    p = np.array(list(r.probabilities.values()))
    assert r.mask.shape == r.scan.shape, (r.mask.shape, r.scan.shape)
    assert np.isfinite(p).all() and abs(p.sum() - 1) < 1e-3, p
    print("OK", path.name, flush=True)
"""


def _seeds(tmp_path: Path) -> dict[str, bytes]:
    import nibabel as nib
    from PIL import Image

    image = (np.indices((48, 40)).sum(0) * 3 % 256).astype(np.uint8)
    seeds = {"seed.png": png_bytes(image)}
    for fmt, suffix in (("JPEG", ".jpg"), ("BMP", ".bmp"), ("TIFF", ".tif")):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, fmt)
        seeds[f"seed{suffix}"] = buffer.getvalue()
    seeds["seed.dcm"] = write_dicom(tmp_path / "s.dcm", image.astype(np.uint16)).read_bytes()
    seeds["multi.dcm"] = write_dicom(tmp_path / "m.dcm", np.stack([image] * 3).astype(np.uint16), frames=3).read_bytes()
    nifti = nib.Nifti1Image(np.stack([image.T] * 3, axis=2).astype(np.int16), np.diag([0.5, 0.5, 3, 1])).to_bytes()
    seeds["seed.nii"] = nifti
    seeds["seed.nii.gz"] = gzip.compress(nifti)
    seeds["seed.mat"] = write_figshare_mat(tmp_path / "s.mat", image, image > 100).read_bytes()
    from scipy.io import savemat

    buffer = io.BytesIO()
    savemat(buffer, {"cjdata": {"image": image.astype(np.int16), "label": 1.0, "PID": "123"}}, do_compression=True)
    seeds["v5.mat"] = buffer.getvalue()
    return seeds


def _mutate(data: bytes, rng: np.random.Generator) -> bytes:
    out = bytearray(data)
    kind = rng.integers(4)
    if kind == 0:  # bit flips
        for _ in range(int(rng.integers(1, 9))):
            i = int(rng.integers(len(out)))
            out[i] ^= 1 << int(rng.integers(8))
    elif kind == 1:  # truncation
        out = out[: int(rng.integers(1, len(out)))]
    elif kind == 2:  # scrambled header bytes
        head = min(len(out), 600)
        for _ in range(int(rng.integers(4, 32))):
            out[int(rng.integers(head))] = int(rng.integers(256))
    else:  # oversized length/size fields
        head = min(len(out), 1024) - 4
        for _ in range(int(rng.integers(1, 4))):
            i = int(rng.integers(head))
            out[i : i + 4] = rng.choice(
                [b"\xff\xff\xff\xff", b"\xff\xff\xff\x7f", b"\x00\x00\x01\x00", b"\x00\xa0\x00\x00"]
            )
    return bytes(out)


@pytest.mark.slow
def test_mutated_files_are_refused_cleanly_or_analysed(tmp_path):
    rng = np.random.default_rng(20261201)
    cases = tmp_path / "cases"
    cases.mkdir()
    for name, data in _seeds(tmp_path).items():
        stem, suffix = name.split(".", 1)
        (cases / f"{stem}-original.{suffix}").write_bytes(data)
        for i in range(CASES):
            (cases / f"{stem}-{i:04d}.{suffix}").write_bytes(_mutate(data, rng))
    done = subprocess.run(
        [sys.executable, "-c", WORKER, str(cases)], capture_output=True, text=True, timeout=60 + CASES * 10
    )
    lines = done.stdout.splitlines()
    last = lines[-1] if lines else "no output"
    assert done.returncode == 0, f"worker died ({done.returncode}) at {last}: {done.stderr[-3000:]}"
    outcomes = [line.split()[0] for line in lines if not line.startswith("START")]
    assert len(outcomes) == len(list(cases.iterdir()))
    assert all(line.split()[0] == "OK" for line in lines if "-original." in line and not line.startswith("START"))
    print(f"fuzz: {len(outcomes)} files, {outcomes.count('OK')} analysed, {outcomes.count('REFUSED')} refused")
