"""What the user can fix is one line and exit 2; anything else is a bug and keeps its traceback."""

from __future__ import annotations

import pytest

import braintumor.commands.inspect as inspect_command
from braintumor.cli import main
from braintumor.errors import ScanError


def test_a_user_error_is_one_line_and_debug_shows_its_traceback(tmp_path, capsys):
    missing = tmp_path / "nothing.png"
    assert main(["inspect", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("braintumor inspect: error: ") and str(missing) in err and len(err.strip().splitlines()) == 1
    with pytest.raises(ScanError, match=r"nothing\.png"):
        main(["--debug", "inspect", str(missing)])


@pytest.mark.parametrize(
    "bug", [ValueError("a bug deep down"), KeyError("x"), ImportError("no", name="braintumor.gone")]
)
def test_a_bug_keeps_its_traceback(monkeypatch, tmp_path, bug):
    def broken(args):
        raise bug

    monkeypatch.setattr(inspect_command, "run", broken)
    with pytest.raises(type(bug)):
        main(["inspect", str(tmp_path / "x.png")])


def test_a_missing_optional_package_names_its_extra(monkeypatch, tmp_path, capsys):
    def needs_streamlit(args):
        raise ImportError("No module named 'streamlit'", name="streamlit")

    monkeypatch.setattr(inspect_command, "run", needs_streamlit)
    assert main(["inspect", str(tmp_path / "x.png")]) == 2
    assert "streamlit: not installed; pip install 'braintumor[app]'" in capsys.readouterr().err


def test_option_errors_name_the_option(tmp_path, capsys):
    assert main(["analyze", str(tmp_path), "--spacing-mm", "nan"]) == 2
    assert "--spacing-mm: must be a positive number" in capsys.readouterr().err
    assert main(["cv", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--fold", "0"]) == 2
    assert "--fold: needs --ensemble" in capsys.readouterr().err


def test_a_user_error_is_one_line_whatever_its_parts_hold():
    from braintumor.errors import ScanError

    err = ScanError("exam.zip/a\nb.dcm", "cannot be read\r\n(second line)")
    assert str(err) == "exam.zip/a b.dcm: cannot be read (second line)" and err.name == "exam.zip/a b.dcm"
