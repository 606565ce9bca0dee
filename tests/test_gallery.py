"""The outcome gallery of evaluate and the README montage: right slices, same numbers, no patient ids."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from braintumor import TUMOR_CLASSES
from braintumor.cli import main
from braintumor.data import Record, read_manifest
from braintumor.evaluation.evaluate import SliceOutcome
from braintumor.evaluation.gallery import (
    FIGSHARE_CREDIT,
    LISTED,
    SLICE_HEIGHT,
    is_figshare,
    markdown,
    write_gallery,
)
from braintumor.inference import Segmentation
from braintumor.inference.render import EXPERT_RGB, PREDICTED_RGB
from conftest import csv_rows

NUMBER = re.compile(r"\d+\.\d+")


@pytest.fixture(scope="module")
def evaluated(tiny_data, tiny_model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gallery") / "eval"
    assert (
        main(["evaluate", "--data", str(tiny_data), "--model", str(tiny_model), "--out", str(out), "--bootstrap", "20"])
        == 0
    )
    return out


def _expected(out: Path) -> tuple[dict[str, dict | None], list[dict]]:
    """File name → its per_slice.csv row (None: a no-tumor outline, whose size the CSV does not carry)."""
    rows = [r for r in csv_rows(out / "per_slice.csv") if not r["error"]]
    expected: dict[str, dict | None] = {}
    for label in TUMOR_CLASSES:
        ranked = sorted(
            (r for r in rows if r["label"] == label and r["dice"]), key=lambda r: (float(r["dice"]), r["id"])
        )
        roles: dict[int, str] = {}
        for role, k in (("best", len(ranked) - 1), ("worst", 0), ("median", (len(ranked) - 1) // 2)):
            roles.setdefault(k, role)
        expected |= {
            f"{label}_{role}_dice{float(ranked[k]['dice']):.2f}.png": ranked[k] for k, role in roles.items() if ranked
        }
    notumor = [r for r in rows if r["label"] == "notumor"]
    outlined = round(json.loads((out / "report.json").read_text())["notumor_outlined"] * len(notumor))
    expected |= {f"notumor_outlined_{k}.png": None for k in range(1, min(outlined, LISTED) + 1)}
    wrong = sorted((r for r in rows if r["label"] != r["predicted"]), key=lambda r: (-float(r["confidence"]), r["id"]))
    expected |= {f"misclassified_{k}.png": r for k, r in enumerate(wrong[:LISTED], 1)}
    return expected, notumor


def _figures(row: dict) -> list[str]:
    return [row[k] or "n/a" for k in ("label", "predicted", "confidence", "dice", "area_true_cm2", "area_pred_cm2")]


def test_gallery_shows_the_chosen_slices_with_per_slice_numbers(evaluated):
    gallery = evaluated / "gallery"
    expected, notumor = _expected(evaluated)
    assert sorted(p.name for p in gallery.glob("*.png")) == sorted(expected)
    index = {
        m[1]: m[2].split(" | ")
        for m in re.finditer(
            r"^\| [^|]+ \| !\[[^]]*\]\(([^)]+)\) \| (.*) \|$", (gallery / "gallery.md").read_text(), re.M
        )
    }
    assert sorted(index) == sorted(expected)
    for name, row in expected.items():
        with Image.open(gallery / name) as picture:
            caption = picture.text["Description"]
            assert picture.mode == "P" and 384 <= picture.width <= 512 and 384 <= int(picture.text[SLICE_HEIGHT])
        if row is None:  # a no-tumor outline: some no-tumor row of per_slice.csv, given a tumor pixel count
            assert index[name][0] == "notumor" and "predicted outline" in caption
            assert [index[name][1], index[name][2]] in [[r["predicted"], r["confidence"]] for r in notumor]
            continue
        assert index[name] == _figures(row)
        assert NUMBER.findall(caption) == [
            row[k] for k in ("confidence", "dice", "area_true_cm2", "area_pred_cm2") if row[k]
        ]
        assert f"true {row['label']} / predicted {row['predicted']}" in caption


def test_gallery_names_no_patient(evaluated, tiny_data):
    patients = {r["patient_id"] for r in csv_rows(tiny_data / "index.csv") if r["patient_id"]}
    gallery = evaluated / "gallery"
    index = (gallery / "gallery.md").read_text()
    texts = [p.name for p in gallery.iterdir()] + [index]
    for p in gallery.glob("*.png"):
        with Image.open(p) as picture:
            texts += list(picture.text.values())
    assert patients and not [(pid, t) for pid in patients for t in texts if pid in t]
    assert FIGSHARE_CREDIT not in index  # the tiny set is not Figshare data


def _colours(picture: Image.Image, height: int) -> set[tuple[int, int, int]]:
    """The colours of the slice part (the caption strip's legend holds both colours too)."""
    part = picture.convert("RGB").crop((0, 0, picture.width, height))
    return set(map(tuple, np.asarray(part).reshape(-1, 3).tolist()))


def test_gallery_pictures_draw_the_expert_and_predicted_outlines(evaluated):
    rows = {n: r for n, r in _expected(evaluated)[0].items() if r and r["dice"]}
    for name, row in rows.items():
        with Image.open(evaluated / "gallery" / name) as picture:
            colours = _colours(picture, int(picture.text[SLICE_HEIGHT]))
        assert EXPERT_RGB in colours  # every tumor slice has an expert outline
        assert (PREDICTED_RGB in colours) == (float(row["area_pred_cm2"]) > 0)


class OffsetAnalyzer:
    """Predicts a square overlapping the tiny set's glioma blob: an outline beside the expert's."""

    def analyze_scans(self, scans):
        mask = np.zeros(scans[0].shape, np.uint8)
        mask[16:30, 18:32] = 1
        return [
            Segmentation(
                file=scans[0].name,
                scan=scans[0],
                spacing_mm=None,
                spacing_source="unknown",
                mask=mask,
                tumor_pixels=int(mask.sum()),
                area_cm2=None,
            )
        ]


def test_gallery_picture_draws_both_outlines(tiny_data, tmp_path):
    records = read_manifest(tiny_data)
    glioma, notumor = (next(r for r in records if r.label == label) for label in ("glioma", "notumor"))
    outcomes = [
        SliceOutcome(
            glioma,
            0,
            0,
            np.array([0.9, 0.05, 0.03, 0.02]),
            dice=0.5,
            area_true_cm2=0.36,
            area_pred_cm2=0.49,
            pred_pixels=196,
        ),
        SliceOutcome(notumor, 3, 0, np.array([0.7, 0.1, 0.1, 0.1]), pred_pixels=196),
    ]
    write_gallery(outcomes, OffsetAnalyzer(), tmp_path)
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [
        "glioma_best_dice0.50.png",
        "misclassified_1.png",
        "notumor_outlined_1.png",
    ]
    with Image.open(tmp_path / "notumor_outlined_1.png") as picture:
        assert picture.text["Description"].endswith("no tumor in truth; predicted outline 196 px")
        assert PREDICTED_RGB in _colours(picture, int(picture.text[SLICE_HEIGHT]))
    with Image.open(tmp_path / "glioma_best_dice0.50.png") as picture:
        assert {EXPERT_RGB, PREDICTED_RGB} <= _colours(picture, int(picture.text[SLICE_HEIGHT]))
        assert picture.text["Description"] == (
            "true glioma / predicted glioma, confidence 0.9\nDice 0.5, area 0.36 cm² true vs 0.49 cm² predicted"
        )


def test_montage_is_one_small_png(evaluated, tmp_path):
    out = tmp_path / "docs" / "figures" / "montage.png"
    assert main(["montage", str(evaluated / "gallery"), "--out", str(out)]) == 0
    assert 0 < out.stat().st_size <= 300_000
    with Image.open(out) as sheet:
        assert sheet.width <= 2 * 256 + 20


def test_montage_refuses_a_folder_without_a_gallery(tmp_path, capsys):
    assert main(["montage", str(tmp_path), "--out", str(tmp_path / "m.png")]) == 2
    assert "no tumor-type pictures" in capsys.readouterr().err


def test_figshare_data_is_credited():
    figshare = Record("fs0001", Path("images/fs0001.png"), None, "glioma", None, 0.49)
    other = Record("s1", Path("images/s1.png"), None, "glioma", None, 0.49)
    assert is_figshare([other, figshare]) and not is_figshare([other])
    assert FIGSHARE_CREDIT in markdown([], FIGSHARE_CREDIT) and FIGSHARE_CREDIT not in markdown([], None)


def test_a_gallery_failure_keeps_the_report(tiny_data, tiny_model, tmp_path, capsys, monkeypatch):
    import braintumor.evaluation.gallery as G

    def broken(*args, **kwargs):
        raise RuntimeError("no fonts")

    monkeypatch.setattr(G, "choose", broken)
    out = tmp_path / "eval"
    assert (
        main(["evaluate", "--data", str(tiny_data), "--model", str(tiny_model), "--out", str(out), "--bootstrap", "20"])
        == 2
    )
    assert "drawing the gallery failed (RuntimeError: no fonts)" in capsys.readouterr().err
    assert (out / "report.json").is_file() and (out / "per_slice.csv").is_file()
