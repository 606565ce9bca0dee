"""The README is the front door and the docs are where the details moved: a relative link or image that points at
nothing is a dead end for a reader, so every one must resolve, and the README must stay short enough to be read.

Links inside code (fenced blocks, `inline spans`) are text, not links, and are not checked."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

from conftest import ROOT

README = ROOT / "README.md"
PAGES = [README, ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md")), *(ROOT / "candidates").glob("*.md")]
README_MAX_LINES = 200
ENSEMBLE_CV_MARKERS = ("<!-- ensemble-cv:start -->", "<!-- ensemble-cv:end -->")

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,}).*?^ {0,3}\1[ \t]*$", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"(`+)(?!`).+?(?<!`)\1(?!`)", re.DOTALL)
# [text](target) and ![alt](target), with an optional "title"; the target may be wrapped in <>
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")  # http:, https:, mailto:, …


def _targets(page: Path) -> list[str]:
    text = _CODE_SPAN.sub("", _FENCE.sub("", page.read_text(encoding="utf-8")))
    return [m.group(1).strip("<>") for m in _LINK.finditer(text)]


def _local_path(target: str) -> str | None:
    """The file part of a relative link; None for an external link or a link to an anchor of the same page."""
    if _SCHEME.match(target):
        return None
    path = target.split("#", 1)[0].split("?", 1)[0]
    return unquote(path) or None


def _broken(page: Path) -> list[str]:
    broken = []
    for target in _targets(page):
        path = _local_path(target)
        if path is None:
            continue
        resolved = ROOT / path.lstrip("/") if path.startswith("/") else page.parent / path
        if not resolved.exists():
            broken.append(target)
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(page):
    assert page.is_file(), f"{page.relative_to(ROOT)} is missing"
    broken = _broken(page)
    name = page.relative_to(ROOT).as_posix()
    assert not broken, f"{name}: links to files that do not exist: " + ", ".join(broken)


def test_the_link_check_sees_links():
    """A pattern that matched nothing would pass every page; the README's links to its docs must be found."""
    found = {_local_path(t) for t in _targets(README)}
    missing = [f"docs/{p.name}" for p in PAGES if p.parent.name == "docs" and f"docs/{p.name}" not in found]
    assert not missing, "README.md does not link to: " + ", ".join(missing)


def test_readme_is_a_front_door():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): move details into docs/ and link to them"
    )
    for marker in ENSEMBLE_CV_MARKERS:
        assert marker in (line.strip() for line in lines), f"README.md lacks the line {marker}"
    start, end = (next(i for i, line in enumerate(lines) if line.strip() == m) for m in ENSEMBLE_CV_MARKERS)
    assert start < end, f"README.md: {ENSEMBLE_CV_MARKERS[0]} must come before {ENSEMBLE_CV_MARKERS[1]}"
