"""``braintumor`` command line.  Heavy imports happen inside each command, so ``analyze`` starts fast.

Errors a user can fix (bad file, bad folder, unknown option value) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from braintumor import __version__
from braintumor.errors import UserError, missing_extra
from braintumor.training.config import TrainConfig


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="braintumor",
        description="Brain MRI slice analysis: tumor type, outline, "
        "area in cm². Research and education only; not a medical device.",
    )
    p.add_argument("--version", action="version", version=f"braintumor {__version__}")
    p.add_argument("--debug", action="store_true", help="show the traceback of errors reported in one line")
    sub = p.add_subparsers(dest="command", required=True)

    a = sub.add_parser("analyze", help="analyse scans (files or folders) with the shipped or a given model")
    a.add_argument("inputs", nargs="+", type=Path, help="files or folders (searched recursively)")
    a.add_argument("--out", type=Path, help="write results.csv, masks/ and overlays/ here")
    a.add_argument("--spacing-mm", type=float, help="pixel spacing (mm) for inputs that carry none")
    a.add_argument("--model", type=Path, help="model folder (default: the shipped model)")
    _members_option(a)
    a.add_argument("--json", action="store_true", help="one JSON object per line instead of text")
    a.add_argument(
        "--batch-size",
        type=int,
        default=2,
        help="slices per network run (default 2: with ONNX Runtime's memory arena on, larger batches cost memory "
        "and gain no speed on a CPU)",
    )
    a.add_argument(
        "--overlay-format",
        choices=["png", "jpeg", "none"],
        default="png",
        help="overlays/ as lossless PNG (default), JPEG (≈15× cheaper to write) or not at all",
    )
    a.add_argument("--resume", action="store_true", help="skip the files already in OUT/results.csv and append")

    i = sub.add_parser("inspect", help="read one scan and print its size, spacing and where it came from")
    i.add_argument("input", type=Path)
    i.add_argument("--slice", type=int, help="slice of a NIfTI volume / frame of a multi-frame DICOM")

    s = sub.add_parser("split", help="patient-level, class-stratified k-fold split of a dataset → CSV")
    s.add_argument("--data", type=Path, required=True)
    s.add_argument("--folds", type=int, default=5)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", type=Path, required=True, help="CSV with a 'fold' column")

    t = sub.add_parser("train", help="train a model folder on a dataset (needs the 'train' extra)")
    TrainConfig.add_options(t)

    v = sub.add_parser(
        "cv",
        help="patient-level k-fold cross-validation: one model per fold, each evaluated on "
        "its unseen fold → cv.csv, cv.md, pooled/ (resumable fold by fold)",
    )
    TrainConfig.add_options(v, scope="cv")
    v.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (by patient)")
    v.add_argument(
        "--final",
        action="store_true",
        help="then train the recipe on all patients → OUT/final, a model folder whose card carries the CV figures",
    )
    v.add_argument(
        "--ensemble",
        type=Path,
        help="keep each finished fold as a member of this ensemble folder (float16 weights, its evaluation, the "
        "CV table in cv.md); folds already there are checked against today's split and not trained again",
    )
    v.add_argument(
        "--fold",
        type=int,
        action="append",
        help="train only this fold (repeatable; needs --ensemble): one fold per session, each kept when it ends",
    )

    e = sub.add_parser("evaluate", help="evaluate a model on a dataset → report.json, report.md, plots")
    e.add_argument("--data", type=Path, required=True)
    e.add_argument("--model", type=Path, help="model folder (default: the shipped model)")
    _members_option(e)
    e.add_argument("--out", type=Path, required=True)
    e.add_argument(
        "--split",
        choices=["unseen", "all"],
        default="unseen",
        help="'unseen' (default): only rows of patients the model was not trained on; "
        "'all': every row, refused if any belongs to a training patient",
    )
    e.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (by patient)")

    c = sub.add_parser(
        "calibrate",
        help="fit a model folder's temperature and out-of-distribution threshold on the "
        "patients it did not train on (needs the 'train' extra for old folders)",
    )
    c.add_argument("--data", type=Path, required=True, help="the model's training dataset (its unseen fold is used)")
    c.add_argument(
        "--model",
        type=Path,
        required=True,
        help="the single model folder to calibrate in place (an ensemble's temperature comes from 'cv --ensemble')",
    )

    h = sub.add_parser(
        "shifts",
        help="score a model's unseen tumor slices under acquisition shifts (skull stripping, "
        "z-score, 16-bit, zoom, rotation, bias, noise) → shifts.csv, shifts.md",
    )
    h.add_argument("--data", type=Path, required=True)
    h.add_argument("--model", type=Path, help="model folder (default: the shipped model)")
    h.add_argument("--out", type=Path, required=True)
    h.add_argument("--shift", action="append", help="only these shifts (repeatable; default: all)")
    h.add_argument("--limit", type=int, help="a seeded sample of this many tumor slices")

    b = sub.add_parser("bench", help="time the default pipeline against the reference pipeline")
    b.add_argument("--json", action="store_true")
    b.add_argument("--images", type=int, default=20, help="images to time one at a time")
    b.add_argument("--end-to-end-images", type=int, default=150, help="images for the whole-command timing")
    b.add_argument(
        "--images-dir",
        type=Path,
        help="folder of slices to time (default: ../shared/data/dev-512 beside "
        "the checkout, else synthetic 512×512 slices)",
    )
    b.add_argument(
        "--model",
        type=Path,
        help="model folder (default: the shipped model); an ensemble is also timed with one member",
    )

    m = sub.add_parser("montage", help="tile a gallery from evaluate (OUT/gallery) into one small PNG for a README")
    m.add_argument("gallery", type=Path, help="the gallery folder evaluate wrote")
    m.add_argument("--out", type=Path, required=True, help="the PNG to write (at most 300 KB)")

    w = sub.add_parser(
        "app",
        help="start the Streamlit web page (no authentication or TLS: keep it on loopback "
        "or behind a reverse proxy that adds them)",
    )
    _server_options(w, port=8501)
    w.add_argument("--model", type=Path, help="model folder (default: the shipped model)")
    _members_option(w)

    r = sub.add_parser(
        "serve",
        help="start the HTTP API (POST /analyze, docs at /docs; optional bearer token, no TLS: beyond this "
        "machine, give it a token and put it behind a reverse proxy with TLS)",
    )
    _server_options(r, port=8000)
    r.add_argument("--model", type=Path, help="model folder (default: the shipped model)")
    _members_option(r)
    r.add_argument(
        "--max-concurrent", type=int, help="analyses at once; more wait in the queue (default: 2 per CPU core)"
    )
    r.add_argument(
        "--queue",
        type=int,
        default=64,
        help="requests that may wait for an analysis slot; more get 503 + Retry-After (default: 64)",
    )
    r.add_argument(
        "--queue-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="longest wait for a slot before 503 + Retry-After (default: 30)",
    )
    r.add_argument(
        "--upload-memory-mb",
        type=int,
        default=512,
        metavar="MB",
        help="request bodies held at once, waiting or being analysed; a body beyond it gets 503 (default: 512)",
    )
    r.add_argument(
        "--token-file",
        type=Path,
        metavar="FILE",
        help="require 'Authorization: Bearer <token>' on every route but /health, the token read from FILE "
        "(default: $BRAINTUMOR_TOKEN if set, else no token)",
    )
    r.add_argument(
        "--insecure",
        action="store_true",
        help="serve a non-loopback --host without a token (refused otherwise)",
    )
    return p


def _members_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--members",
        type=int,
        help="for an ensemble model: run only its first N members (1: the fastest, one network)",
    )


def _server_options(p: argparse.ArgumentParser, port: int) -> None:
    """Where the page or the API listens; loopback unless the user says otherwise."""
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    p.add_argument("--port", type=int, default=port)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "analyze":
            from braintumor.commands.analyze import run
        elif args.command == "inspect":
            from braintumor.commands.inspect import run
        elif args.command == "split":
            from braintumor.commands.split import run
        elif args.command == "train":
            from braintumor.commands.train import run
        elif args.command == "cv":
            from braintumor.commands.cv import run
        elif args.command == "evaluate":
            from braintumor.commands.evaluate import run
        elif args.command == "calibrate":
            from braintumor.commands.calibrate import run
        elif args.command == "shifts":
            from braintumor.commands.shifts import run
        elif args.command == "bench":
            from braintumor.commands.bench import run
        elif args.command == "montage":
            from braintumor.commands.montage import run
        elif args.command == "serve":
            from braintumor.commands.serve import run
        else:
            from braintumor.commands.app import run
        return int(run(args) or 0)
    except UserError as err:
        if args.debug:
            raise
        print(f"braintumor {args.command}: error: {err}", file=sys.stderr)
        return 2
    except ImportError as err:
        extra = missing_extra(err)  # an optional package; any other ImportError is a bug: its traceback shows
        if extra is None or args.debug:
            raise
        print(f"braintumor {args.command}: error: {extra}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
