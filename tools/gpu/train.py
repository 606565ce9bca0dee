"""On the lent GPU machine: every fold of a cross-validation and the all-patients final model, at once.

The runs are exactly those ``braintumor cv --final`` makes (``train --val-fold k --keep last`` per fold,
``train --all-patients`` for the final model), started together so that one GPU and 16 cores serve six small
trainings in the minutes a lease allows. Only what cannot be remade elsewhere comes back under ``--out`` (at
most 8 files): each run's weights, and one archive of cards, splits, logs and timings. ``unpack.py`` turns them
into a CV folder on this project's machine, where ``braintumor cv`` scores the folds on the native-resolution
data and finishes the final model. Dry run on a CPU (what the tests do): ``--accelerator cpu`` on a tiny
dataset, ``--epochs 1``. ``tools/gpu/README.md`` has the device command.

    python3 tools/gpu/train.py --data .gpu/data --out "$OUT" --epochs 40 --minutes 8
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

from braintumor.training.config import TrainConfig, plan_folds

KEPT = ("card.json", "split.csv", "logs/metrics.csv", "curves.png")  # per run, into the archive
PROBE_EPOCHS = 2  # --minutes: how long a probe of every run at once trains before the epoch count is chosen
PACK_SECONDS = 30  # kept at the end of --minutes for the weights and the archive


def commands(args: argparse.Namespace) -> dict[str, list[str]]:
    """Each run's ``braintumor train`` command line, by run name (fold0 … foldK-1, final): the plan of
    ``braintumor cv --final`` (``plan_folds``), written by ``TrainConfig.to_argv``."""
    base = TrainConfig(
        data=args.data,
        out=args.runs,
        size=args.size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        folds=args.folds,
        accelerator=args.accelerator,
        num_workers=args.workers,
        max_minutes=args.max_minutes,
    )
    plan = plan_folds(base, args.runs, range(args.folds), final=not args.no_final)
    return {name: [sys.executable, "-m", "braintumor.cli", "train", *cfg.to_argv()] for name, cfg in plan.items()}


def run_all(
    runs: dict[str, list[str]], logs: Path, threads: int, deadline: float | None = None
) -> dict[str, dict[str, Any]]:
    """Start every run, wait for all (stopping those still running at ``deadline``, a ``time.time()``); their exit
    codes and wall times, and the end of the log of each that failed."""
    logs.mkdir(parents=True, exist_ok=True)
    env = os.environ | {"OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    started = time.time()
    procs = {}
    for name, cmd in runs.items():
        with open(logs / f"{name}.log", "w") as log:
            procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    results: dict[str, dict[str, Any]] = {}
    while len(results) < len(procs):
        for name, proc in procs.items():
            if name not in results and proc.poll() is not None:
                results[name] = {"rc": proc.returncode, "seconds": round(time.time() - started)}
                print(f"{name}: exit {proc.returncode} after {results[name]['seconds']} s", flush=True)
                if proc.returncode:
                    print(tail(logs / f"{name}.log"), flush=True)
        if deadline is not None and time.time() > deadline:
            for name, proc in procs.items():
                if name not in results:
                    proc.terminate()
                    try:
                        proc.wait(timeout=15)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
                    results[name] = {"rc": proc.returncode, "seconds": round(time.time() - started), "stopped": True}
                    print(f"{name}: stopped at the deadline after {results[name]['seconds']} s", flush=True)
        time.sleep(1)
    return {name: results[name] | {"command": " ".join(cmd)} for name, cmd in runs.items()}


def tail(log: Path, lines: int = 25) -> str:
    """The last lines of a log, progress-bar redraws collapsed."""
    kept = [line for line in log.read_text(errors="replace").replace("\r", "\n").splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


def fitting_epochs(per_epoch: float, overhead: float, seconds: float, cap: int) -> dict[str, Any]:
    """The epoch count (at most ``cap``, at least 1) with which a run whose epochs take ``per_epoch`` seconds and
    whose start-up and finish (reading data, ONNX export) take ``overhead`` ends within ``seconds``."""
    per_epoch = max(per_epoch, 0.1)
    fits = int((seconds - overhead) // per_epoch)
    return {"epochs": max(1, min(cap, fits)), "seconds_per_epoch": round(per_epoch, 1), "overhead_s": round(overhead)}


def epoch_seconds(run: Path) -> list[float]:
    """Each epoch's wall seconds, from the run's metrics log."""
    with open(run / "logs" / "metrics.csv", newline="") as f:
        return [float(r["epoch_seconds"]) for r in csv.DictReader(f) if r.get("epoch_seconds")]


def probe(args: argparse.Namespace, deadline: float) -> dict[str, Any]:
    """Every run for a few epochs at once, in a folder of its own, to time an epoch under the real load: the epoch
    count is then what fits the time left before ``deadline``. The probe's first epoch (warm-up) is not used."""
    epochs = min(PROBE_EPOCHS, args.epochs)
    where = args.runs / "probe"
    started = time.time()
    runs = commands(argparse.Namespace(**vars(args) | {"epochs": epochs, "runs": where}))
    results = run_all(runs, where / "logs", args.threads, deadline)
    if any(r["rc"] for r in results.values()):
        raise ProbeFailed(results)
    wall = time.time() - started
    timings = {n: epoch_seconds(where / n) for n in results}
    slowest = max(timings, key=lambda n: sum(timings[n]))
    per_epoch = max(t[-1] for t in timings.values())  # the last epoch: warm
    chosen = fitting_epochs(per_epoch, wall - sum(timings[slowest]), deadline - time.time(), args.epochs)
    return chosen | {"probe_epochs": epochs, "probe_s": round(wall), "at_most": args.epochs}


class ProbeFailed(Exception):
    def __init__(self, results: dict[str, dict[str, Any]]) -> None:
        self.results = results


def gpu_name() -> str:
    try:
        return subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=30
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "none"


def bring_back(
    runs_dir: Path, out: Path, results: dict[str, dict[str, Any]], extra: dict[str, Any], weights: bool = True
) -> list[Path]:
    """Weights as ``NAME.safetensors`` and ``meta.tar.gz`` (cards, splits, logs, ``gpu.json``) under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in results if weights else ():
        if (runs_dir / name / "model.safetensors").is_file():
            written.append(Path(shutil.copy2(runs_dir / name / "model.safetensors", out / f"{name}.safetensors")))
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


def fresh_runs_folder(runs: Path) -> None:
    """An earlier attempt's runs removed (a run that fails early must not bring back old weights); a folder that
    is not train.py's is refused."""
    if runs.is_dir() and any(runs.iterdir()):
        if not any((runs / marker).exists() for marker in ("gpu.json", "logs", "probe")):
            raise SystemExit(f"train.py: {runs} holds other files; choose another --runs")
        shutil.rmtree(runs)


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
    packed = json.loads((args.data / "pack.json").read_text())
    if args.size not in (None, packed["size"]):
        print(f"train.py: {args.data} was packed at {packed['size']} px; omit --size or pack again", file=sys.stderr)
        return 2
    args.size = packed["size"]
    fresh_runs_folder(args.runs)
    started = time.time()
    deadline = started + args.minutes * 60 - PACK_SECONDS if args.minutes else None
    chosen = None
    if deadline is not None:
        try:
            chosen = probe(args, deadline)
        except ProbeFailed as failed:  # its logs come back, no weights
            bring_back(args.runs / "probe", args.out, failed.results, record(args, None, started, packed), False)
            print("train.py: the probe failed; its logs are in meta.tar.gz", file=sys.stderr)
            return 1
        print(f"probe: {chosen}", flush=True)
        args.epochs = chosen["epochs"]
        left = max((deadline - time.time() - chosen["overhead_s"]) / 60, 0.5)  # no run outlives the deadline
        args.max_minutes = min(args.max_minutes or left, left)
    results = run_all(commands(args), args.runs / "logs", args.threads, deadline)
    extra = record(args, chosen, started, packed)
    files = bring_back(args.runs, args.out, results, extra)
    print(f"{len(files)} files in {args.out} after {extra['seconds']} s", flush=True)
    return int(any(r["rc"] for r in results.values()))


def record(
    args: argparse.Namespace, chosen: dict[str, Any] | None, started: float, packed: dict[str, Any]
) -> dict[str, Any]:
    """What gpu.json says besides the runs: the probe, the machine, the arguments, the packed data."""
    return {
        "probe": chosen,
        "seconds": round(time.time() - started),
        "gpu": gpu_name(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "pack": packed,
    }


if __name__ == "__main__":
    sys.exit(main())
