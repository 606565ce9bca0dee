"""Turn what ``train.py`` brought back from the GPU machine into a CV folder that ``braintumor cv`` finishes.

For every run: the weights checked against the checksum its card recorded there, its split checked to be the
split this machine computes for the native-resolution data (same rows, same side, fold by fold), the ONNX graph
exported here with this project's own torch, and the card told what it was trained on. Then
``braintumor cv --data DATA --out OUT ... --final`` (printed at the end) trains nothing: it scores each fold
model on its unseen patients at native resolution, chooses the post-processing on the pooled out-of-fold
predictions and calibrates the final model from the folds.

    python tools/gpu/unpack.py FILES_AT --data ../shared/data/dev --out ~/braintumor-runs/gpu40
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import tarfile
import warnings
from dataclasses import replace
from pathlib import Path

from safetensors.torch import load_file

from braintumor.bundle import WEIGHTS, ModelCard, is_model_folder, read_card, verified_file, write_card
from braintumor.data import read_manifest, train_val_test_split
from braintumor.inference.export import export_onnx
from braintumor.models import build_model


def expected_split(data: Path, card: ModelCard) -> dict[str, str]:
    """The split this machine computes for ``data`` with the run's recipe."""
    records = read_manifest(data)
    assert card.training is not None, "a trained run's card says how it trained"
    recipe = card.training.split_recipe
    if recipe.all_patients:
        return dict.fromkeys((r.id for r in records), "train")
    assert recipe.val_fold is not None and recipe.folds is not None and recipe.seed is not None, recipe
    return train_val_test_split(records, val_fold=recipe.val_fold, k=recipe.folds, seed=recipe.seed)


def check_split(run: Path, data: Path, card: ModelCard) -> None:
    """The run's split.csv lists the same rows as ``expected_split``, each on the same side."""
    with open(run / "split.csv", newline="") as f:
        there = {row["id"]: row["split"] for row in csv.DictReader(f)}
    here = expected_split(data, card)
    wrong = [i for i, side in there.items() if here.get(i) != side]
    if wrong or there.keys() != here.keys():
        raise SystemExit(
            f"unpack: {run.name}: its split is not this machine's split of {data} ({len(wrong)} rows differ, "
            f"{len(here.keys() - there.keys())} missing); pack the same data folder again"
        )


def epochs_done(run: Path) -> int:
    """Epochs the run completed, from its metrics log (an epoch cut short logs nothing)."""
    with open(run / "logs" / "metrics.csv", newline="") as f:
        return 1 + max((int(r["epoch"]) for r in csv.DictReader(f) if r.get("epoch")), default=-1)


def unpack(files: Path, data: Path, out: Path) -> tuple[list[str], list[str]]:
    """Fill ``out`` with one model folder per complete run; returns the runs unpacked and what is wrong with the
    others (missing, no card, stopped before its last epoch)."""
    with tarfile.open(files / "meta.tar.gz") as tar:
        tar.extractall(out, filter="data")
    gpu = json.loads((out / "gpu.json").read_text())
    names, problems = [], []
    for name in gpu["runs"]:
        run, weights = out / name, files / f"{name}.safetensors"
        if not weights.is_file() or not is_model_folder(run):
            problems.append(f"{name}: no model came back (exit {gpu['runs'][name]['rc']}; see {out}/logs/{name}.log)")
            continue
        shutil.copy2(weights, run / WEIGHTS)
        card = read_card(run)
        verified_file(run, WEIGHTS, card)  # the bytes the GPU machine wrote, unchanged by the transfer
        assert card.training is not None and card.training.max_epochs is not None, "a trained run's card"
        if epochs_done(run) < card.training.max_epochs:
            problems.append(f"{name}: stopped after {epochs_done(run)} of {card.training.max_epochs} epochs")
        check_split(run, data, card)
        net = build_model(card.architecture, num_classes=len(card.classes), size=card.input.size)
        net.load_state_dict(load_file(str(run / WEIGHTS)))
        with warnings.catch_warnings():  # the exporter's shape-inference notes, one set per model
            warnings.simplefilter("ignore", UserWarning)
            export_onnx(net, card.input.size, run)
        packed = (
            f"trained on {card.training.data}, a copy of {data} padded and resized to {gpu['pack']['size']} px "
            f"as 8-bit PNG by tools/gpu/pack.py (same rows and patients), on "
            f"{gpu['gpu'] if gpu['gpu'] != 'none' else 'a machine with no GPU (a dry run)'}; ONNX exported here"
        )
        training = replace(card.training, notes={**card.training.notes, "packed_data": packed})
        write_card(run, replace(card, training=training))
        names.append(name)
    return names, problems


def _precision(run: Path) -> str:
    training = read_card(run).training
    return training.precision if training else "32"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", type=Path, help="the folder the device tool put train.py's files in")
    p.add_argument("--data", type=Path, required=True, help="the native-resolution dataset that was packed")
    p.add_argument("--out", type=Path, required=True, help="the CV folder to make")
    args = p.parse_args(argv)
    if args.out.exists() and any(args.out.iterdir()):
        print(f"unpack: {args.out} is not empty; choose a new --out", file=sys.stderr)
        return 2
    names, problems = unpack(args.files, args.data, args.out)
    gpu = json.loads((args.out / "gpu.json").read_text())
    if "final" not in gpu["runs"]:
        problems.append("final: not trained (--no-final)")
    if problems:
        print("unpack: " + "; ".join(problems), file=sys.stderr)
        print(
            "unpack: not a complete CV of the recipe it names: 'braintumor cv' would train what is missing here, on "
            "this CPU, for hours. Run the GPU again (fewer --epochs if runs were stopped).",
            file=sys.stderr,
        )
        return 1
    recipe = gpu["args"]
    print(
        f"braintumor cv --data {args.data} --out {args.out} --folds {recipe['folds']} --epochs {recipe['epochs']} "
        f"--batch-size {recipe['batch_size']} --lr {recipe['lr']:g} --seed {recipe['seed']}"
        + (f" --size {recipe['size']}" if recipe["size"] else "")
        + f" --precision {_precision(args.out / names[0])}"
        + " --final"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
