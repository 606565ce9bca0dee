"""On the lent GPU machine: every fold of a cross-validation and the all-patients final model, at once.

The runs are exactly those ``braintumor cv --final`` makes (``train --val-fold k --keep last`` per fold,
``train --all-patients`` for the final model), started together so that one GPU and 16 cores serve six small
trainings in the minutes a lease allows. Only what cannot be remade elsewhere comes back under ``--out`` (at
most 8 files): each run's weights, and one archive of cards, splits, logs and timings. ``unpack.py`` turns them
into a CV folder on this project's machine, where ``braintumor cv`` scores the folds on the native-resolution
data and finishes the final model. Dry run on a CPU (what the tests do): ``--accelerator cpu`` on a tiny
dataset, ``--epochs 1``. ``tools/gpu/README.md`` has the device command.

    python3 tools/gpu/train.py --data .gpu/data --out "$OUT" --epochs 40 --minutes 6 --max-minutes 7
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

KEPT = ("card.json", "split.csv", "logs/metrics.csv", "curves.png")  # per run, into the archive
PROBE_EPOCHS = 2  # --minutes: how long a probe of every run at once trains before the epoch count is chosen


def commands(args: argparse.Namespace) -> dict[str, list[str]]:
    """Each run's ``braintumor train`` command line, by run name (fold0 … foldK-1, final)."""
    common = [
        "--data", str(args.data), "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
        "--lr", f"{args.lr:g}", "--seed", str(args.seed), "--folds", str(args.folds),
        "--accelerator", args.accelerator, "--workers", str(args.workers),
    ]  # fmt: skip
    for flag, value in (("--size", args.size), ("--max-minutes", args.max_minutes)):
        if value:
            common += [flag, f"{value:g}"]
    train = [sys.executable, "-m", "braintumor.cli", "train"]
    runs = {
        f"fold{k}": [*train, "--out", str(args.runs / f"fold{k}"), *common, "--val-fold", str(k), "--keep", "last"]
        for k in range(args.folds)
    }
    if not args.no_final:
        runs["final"] = [*train, "--out", str(args.runs / "final"), *common, "--all-patients"]
    return runs


def run_all(runs: dict[str, list[str]], logs: Path, threads: int) -> dict[str, dict]:
    """Start every run, wait for all; their exit codes and wall times."""
    logs.mkdir(parents=True, exist_ok=True)
    env = os.environ | {"OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    started = time.time()
    procs = {}
    for name, cmd in runs.items():
        with open(logs / f"{name}.log", "w") as log:
            procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    results = {}
    for name, proc in procs.items():
        rc = proc.wait()
        results[name] = {"rc": rc, "seconds": round(time.time() - started), "command": " ".join(runs[name])}
        print(f"{name}: exit {rc} after {results[name]['seconds']} s", flush=True)
    return results


def fitting_epochs(probe: dict[str, float], wall: float, probe_epochs: int, minutes: float, cap: int) -> dict:
    """The epoch count (at most ``cap``) with which every run ends within ``minutes``, from a probe that trained
    all runs at once for ``probe_epochs`` epochs: ``probe`` holds each run's training seconds (its card), ``wall``
    the probe's wall time; the difference is start-up and finish (reading data, ONNX export), paid again."""
    per_epoch = max(probe.values()) / probe_epochs
    overhead = max(wall - max(probe.values()), 0.0)
    fits = int((minutes * 60 - overhead) // per_epoch)
    return {"epochs": max(1, min(cap, fits)), "seconds_per_epoch": round(per_epoch, 1), "overhead_s": round(overhead)}


def probe(args: argparse.Namespace) -> dict:
    """Every run for a few epochs at once, in a folder of its own, to time an epoch under the real load."""
    epochs = min(PROBE_EPOCHS, args.epochs)
    where = args.runs / "probe"
    started = time.time()
    results = run_all(
        commands(argparse.Namespace(**vars(args) | {"epochs": epochs, "runs": where})), where, args.threads
    )
    if any(r["rc"] for r in results.values()):
        raise SystemExit(f"train.py: the probe failed; see {where}/*.log")
    seconds = {n: float(json.loads((where / n / "card.json").read_text())["training"]["seconds"]) for n in results}
    chosen = fitting_epochs(seconds, time.time() - started, epochs, args.minutes, args.epochs)
    return chosen | {"probe_epochs": epochs, "at_most": args.epochs}


def gpu_name() -> str:
    try:
        return subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=30
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "none"


def bring_back(runs_dir: Path, out: Path, results: dict[str, dict], extra: dict) -> list[Path]:
    """Weights as ``NAME.safetensors`` and ``meta.tar.gz`` (cards, splits, logs, ``gpu.json``) under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in results:
        weights = runs_dir / name / "model.safetensors"
        if weights.is_file():
            written.append(Path(shutil.copy2(weights, out / f"{name}.safetensors")))
    (runs_dir / "gpu.json").write_text(json.dumps({"runs": results, **extra}, indent=2) + "\n")
    with tarfile.open(out / "meta.tar.gz", "w:gz") as tar:
        tar.add(runs_dir / "gpu.json", arcname="gpu.json")
        for log in sorted((runs_dir / "logs").glob("*.log")):
            tar.add(log, arcname=f"logs/{log.name}")
        for name in results:
            for kept in KEPT:
                if (runs_dir / name / kept).is_file():
                    tar.add(runs_dir / name / kept, arcname=f"{name}/{kept}")
    return [*written, out / "meta.tar.gz"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path(".gpu/data"), help="the folder pack.py wrote")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-out")), help="what comes back")
    p.add_argument("--runs", type=Path, default=Path("/tmp/gpu-runs"), help="the run folders (stay there)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=40, help="the epochs of every run (with --minutes: at most)")
    p.add_argument(
        "--minutes", type=float, help="choose the epochs (≤ --epochs) so that all runs end in this time, by a probe"
    )
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int)
    p.add_argument("--max-minutes", type=float, help="each run stops after this much training (a safety net)")
    p.add_argument("--accelerator", default="gpu")
    p.add_argument("--workers", type=int, default=2, help="data loader processes per run")
    p.add_argument("--threads", type=int, default=2, help="CPU threads per run")
    p.add_argument("--no-final", action="store_true", help="the folds only")
    args = p.parse_args(argv)
    if not (args.data / "pack.json").is_file():
        print(f"train.py: {args.data} has no pack.json; run tools/gpu/pack.py first and carry .gpu", file=sys.stderr)
        return 2
    started = time.time()
    chosen = probe(args) if args.minutes else None
    if chosen:
        print(f"probe: {chosen}", flush=True)
        args.epochs = chosen["epochs"]
    results = run_all(commands(args), args.runs / "logs", args.threads)
    extra = {
        "probe": chosen,
        "seconds": round(time.time() - started),
        "gpu": gpu_name(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "pack": json.loads((args.data / "pack.json").read_text()),
    }
    files = bring_back(args.runs, args.out, results, extra)
    print(f"{len(files)} files in {args.out} after {extra['seconds']} s", flush=True)
    return int(any(r["rc"] for r in results.values()))


if __name__ == "__main__":
    sys.exit(main())
