"""``braintumor app``: start the Streamlit page with the shipped model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from braintumor.app.views import MAX_UPLOAD_MB


def command(host: str, port: int) -> list[str]:
    page = Path(__file__).resolve().parent.parent / "app" / "page.py"
    return [sys.executable, "-m", "streamlit", "run", str(page), "--server.address", host, "--server.port", str(port),
            "--server.headless", "true", "--server.maxUploadSize", str(MAX_UPLOAD_MB),
            "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none", "--global.developmentMode",
            "false"]


def run(args) -> int:
    import importlib.util

    if importlib.util.find_spec("streamlit") is None:
        raise ValueError("the web app needs Streamlit: pip install 'braintumor[app]'")
    print(f"braintumor app on http://{args.host}:{args.port}  (Ctrl+C to stop)")
    return subprocess.call(command(args.host, args.port))
