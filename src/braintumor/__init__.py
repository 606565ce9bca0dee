"""braintumor: tumor type, outline and area (cm²) of brain MRI slices.

Pipeline stages are the sub-packages: imageio → data → preprocessing → bundle → models → inference →
training → evaluation → experiments → app / serve → commands.  Research and education only; not a medical device.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

CLASSES = ("glioma", "meningioma", "pituitary", "notumor")
TUMOR_CLASSES = CLASSES[:3]

if TYPE_CHECKING:
    __version__: str  # computed on first use, by __getattr__ below


def _version() -> str:
    """The installed distribution's version, whose one source is pyproject.toml; for a checkout used without
    installing it (``src`` on ``sys.path``), read from that checkout's pyproject.toml."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("braintumor")
    except PackageNotFoundError:
        import re
        from pathlib import Path

        pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
        text = pyproject.read_text(encoding="utf-8") if pyproject.is_file() else ""
        found = re.search(r'^version = "([^"]+)"$', text, re.MULTILINE)
        return found.group(1) if found else "0+unknown"


def __getattr__(name: str) -> str:
    """``__version__``, looked up once on first use: ``import braintumor`` stays as cheap as it was."""
    if name == "__version__":
        value = globals()["__version__"] = _version()
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
