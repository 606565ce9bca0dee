"""Write the README's fold-ensemble table (between its ensemble-cv markers) from the committed members' rows.

    python tools/ensemble_readme.py            # after 'braintumor cv --ensemble src/braintumor/assets/ensemble'

tests/test_readme_cv.py checks that the README holds exactly what this writes.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from braintumor.bundle import ENSEMBLE_DIR, is_model_folder
from braintumor.experiments.ensemble import readme_block

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- ensemble-cv:start -->", "<!-- ensemble-cv:end -->"


def block() -> str:
    return readme_block(ENSEMBLE_DIR) if is_model_folder(ENSEMBLE_DIR) else "No member is committed yet.\n"


def readme_with(text: str, inner: str) -> str:
    return re.sub(f"{re.escape(START)}\n.*?{re.escape(END)}", lambda _: f"{START}\n{inner}{END}", text, flags=re.S)


def main() -> int:
    readme = ROOT / "README.md"
    readme.write_text(readme_with(readme.read_text(), block()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
