"""``braintumor app``: start the Streamlit page with the shipped model (or ``--model``'s)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NoReturn

from braintumor.app.views import MEMBERS_ENV, MODEL_ENV, PAGE_NEEDS, STREAMLIT_OPTIONS
from braintumor.bundle import Task, read_card, require_task
from braintumor.commands.exposure import exposure_warning
from braintumor.errors import MissingExtra

PAGE = Path(__file__).resolve().parent.parent / "app" / "page.py"


def command(host: str, port: int) -> list[str]:
    flags = {
        "server.address": host,
        "server.port": port,
        "server.headless": True,
        "server.fileWatcherType": "none",
        "global.developmentMode": False,
        **STREAMLIT_OPTIONS,
    }
    args = [sys.executable, "-m", "streamlit", "run", str(PAGE)]
    for key, value in flags.items():
        args += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
    return args


def run(args: argparse.Namespace) -> NoReturn:
    """Replace this process with Streamlit, so a signal to the pid the user started stops the server itself."""
    import importlib.util

    if importlib.util.find_spec("streamlit") is None:
        raise MissingExtra("streamlit", "not installed; the web page needs it: pip install 'braintumor[app]'")
    if args.model:  # before Streamlit starts: one line instead of a broken page
        require_task(args.model, read_card(args.model), Task.SEGMENT_AND_CLASSIFY, PAGE_NEEDS)
    warning = exposure_warning(args.host)
    if warning:
        print(warning, file=sys.stderr)
    print(f"braintumor app on http://{args.host}:{args.port}  (Ctrl+C to stop)")
    sys.stdout.flush()
    sys.stderr.flush()  # exec discards Python's buffers
    argv = command(args.host, args.port)
    env = os.environ | {MODEL_ENV: str(args.model or ""), MEMBERS_ENV: str(args.members or "")}
    os.execve(argv[0], argv, env)
