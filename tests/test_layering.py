"""Dependencies point down the pipeline: imageio → data → preprocessing → bundle → models → inference → training →
evaluation → experiments → app / serve → commands.  A module may import from its own stage and the stages before
it; the app and the API never import a CLI command.  Imports under ``if TYPE_CHECKING:`` (annotations only) do not
count.

The imports listed in KNOWN were there before this test; do not add to the list, remove from it."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "braintumor"
ORDER = [
    "imageio",
    "data",
    "preprocessing",
    "bundle",
    "models",
    "inference",
    "training",
    "evaluation",
    "experiments",
    "app",
    "commands",
]
RANK = {stage: i for i, stage in enumerate(ORDER)} | {"serve": ORDER.index("app")}

#: (importing file, imported module): training scores Dice per epoch with the evaluation metrics.
KNOWN = {
    ("training/module.py", "braintumor.evaluation.metrics"),
}


def _runtime_imports(tree: ast.Module) -> list[str]:
    type_only = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }
    found = []
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
    return [name for name in found if name.startswith("braintumor.")]


def test_imports_point_down_the_pipeline():
    upward = set()
    for path in sorted(PACKAGE.glob("*/*.py")):
        stage, name = path.parent.name, path.relative_to(PACKAGE).as_posix()
        for module in _runtime_imports(ast.parse(path.read_text(encoding="utf-8"))):
            target = module.split(".")[1]
            if target in RANK and target != stage and RANK[target] > RANK[stage]:
                upward.add((name, module))
    assert upward - KNOWN == set(), "imports against the pipeline's direction"
    assert KNOWN - upward == set(), "fixed: remove these from KNOWN"


def test_the_app_and_the_api_never_import_a_command():
    for path in [*(PACKAGE / "app").glob("*.py"), *(PACKAGE / "serve").glob("*.py")]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        assert not [m for m in _runtime_imports(tree) if m.startswith("braintumor.commands")], path
