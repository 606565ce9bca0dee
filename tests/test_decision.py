"""The 4-class decision uses both heads: a confident tumor region never ends as a silent "no tumor"."""

import numpy as np

from braintumor.inference.checks import decide

NO_TUMOR = {"glioma": 0.03, "meningioma": 0.05, "pituitary": 0.02, "notumor": 0.90}


def _mask(side: int = 160, box: int = 20, inside: float = 0.95) -> np.ndarray:
    prob = np.zeros((side, side), np.float32)
    prob[40 : 40 + box, 50 : 50 + box] = inside
    return prob


def test_confident_region_overrides_no_tumor_with_the_likeliest_type():
    label, warnings = decide(NO_TUMOR, _mask(box=20), threshold=0.5)  # 400 px = 1.6% of the input
    assert label == "meningioma" and len(warnings) == 1 and "no tumor" in warnings[0]


def test_small_or_unsure_regions_leave_no_tumor():
    assert decide(NO_TUMOR, _mask(box=8), 0.5) == ("notumor", [])  # 64 px = 0.25%
    assert decide(NO_TUMOR, _mask(box=20, inside=0.6), 0.5) == ("notumor", [])
    assert decide(NO_TUMOR, np.zeros((160, 160)), 0.5) == ("notumor", [])


def test_a_tumor_call_is_left_alone():
    probs = {"glioma": 0.7, "meningioma": 0.1, "pituitary": 0.1, "notumor": 0.1}
    assert decide(probs, np.zeros((160, 160)), 0.5) == ("glioma", [])


def test_a_no_tumor_answer_has_no_outline_and_says_what_it_dismissed(monkeypatch):
    from braintumor.bundle import SINGLE_MODEL_DIR
    from braintumor.imageio import Scan
    from braintumor.inference import Analyzer

    analyzer = Analyzer(SINGLE_MODEL_DIR)  # one network, whose outputs are replaced below
    side = analyzer.size

    def run_members(batch: np.ndarray):  # the one network's outputs: mask, class probabilities (no features)
        prob = np.zeros((len(batch), 1, side, side), np.float32)
        prob[:, 0, 10:16, 10:16] = 0.9  # 36 px: below the confident-region size, above noise
        probs = np.tile(np.array([[0.02, 0.02, 0.01, 0.95]], np.float32), (len(batch), 1))
        return [{"mask_prob": prob, "class_prob": probs}]

    monkeypatch.setattr(analyzer, "run_members", run_members)
    yy, xx = np.mgrid[:256, :256]
    scan = Scan(pixels=(((yy - 128) ** 2 + (xx - 128) ** 2) < 100**2).astype(np.float32) * 100, name="x.png")
    result = analyzer.analyze(scan, spacing_mm=0.5)
    assert result.label == "notumor" and result.tumor_pixels == 0 and not result.mask.any()
    assert result.area_cm2 == 0 and any("dismissed" in w for w in result.warnings)
