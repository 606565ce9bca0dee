"""The README's fold-ensemble table is generated from the committed members' rows, never typed in."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _tool():
    """tools/ensemble_readme.py as a module (a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("ensemble_readme", ROOT / "tools" / "ensemble_readme.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_holds_what_the_members_rows_give():
    tool = _tool()
    readme = (ROOT / "README.md").read_text()
    assert tool.readme_with(readme, tool.block()) == readme, "run: python tools/ensemble_readme.py"


def test_the_block_is_replaced_whole():
    tool = _tool()
    text = f"a\n{tool.START}\nold table\n{tool.END}\nb\n"
    assert tool.readme_with(text, "new\n") == f"a\n{tool.START}\nnew\n{tool.END}\nb\n"


def test_the_default_model_is_the_ensemble_exactly_when_its_ship_rule_holds():
    from braintumor.bundle import DEFAULT_MODEL_DIR, ENSEMBLE_DIR, SINGLE_MODEL_DIR
    from braintumor.experiments.ensemble import cv_figures, ship_rule

    holds, verdict = ship_rule(cv_figures(ENSEMBLE_DIR))
    assert DEFAULT_MODEL_DIR == (ENSEMBLE_DIR if holds else SINGLE_MODEL_DIR), verdict


def test_the_shipped_int8_members_keep_their_float_figures():
    from braintumor.bundle import ENSEMBLE_DIR, read_card
    from braintumor.experiments.ensemble import INT8_DICE_LIMIT, quantization_figures

    figures = quantization_figures(ENSEMBLE_DIR)
    assert figures is not None, "every member keeps its float rows (eval/per_slice.float.csv)"
    float_, int8 = figures["float"], figures["int8"]
    assert int8["dice_mean"] >= float_["dice_mean"] - INT8_DICE_LIMIT
    assert int8["tumor_type_accuracy"] >= float_["tumor_type_accuracy"] - INT8_DICE_LIMIT
    members = [read_card(ENSEMBLE_DIR / m.name) for m in read_card(ENSEMBLE_DIR).members]
    assert all(m.quantization is not None and m.calibration is not None for m in members)
