"""``braintumor bench --json`` runs both pipelines and reports the agreed fields (no timing asserted)."""

import json

import pytest

from braintumor.cli import main


def test_bench_json_fields(tmp_path, capsys):
    assert main(["bench", "--json", "--images", "2", "--end-to-end-images", "3", "--images-dir", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"ms_per_image", "ms_per_image_reference", "speedup", "peak_rss_mb", "cold_start_s"} <= set(out)
    assert out["image_source"] == "synthetic 512×512" and out["images"] == 2
    assert out["end_to_end_images"] == 3 and out["ms_per_image_end_to_end"] > 0 and out["peak_rss_mb_end_to_end"] > 0
    assert out["volume_shape"] == [155, 240, 240] and out["volume_s_end_to_end"] > 0 and out["volume_peak_rss_mb"] > 0
    assert out["members"] == 5  # the shipped model: an ensemble, so also timed with one member
    assert out["volume_meets_target"] == (out["volume_s_end_to_end"] <= 12.0)
    # speedup is computed from unrounded times; the printed ms are rounded to 0.01
    assert out["speedup"] == pytest.approx(out["ms_per_image_reference"] / out["ms_per_image"], rel=0.01)
