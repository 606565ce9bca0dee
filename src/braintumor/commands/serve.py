"""``braintumor serve``: the HTTP API on uvicorn, with the model loaded once before the port opens."""

from __future__ import annotations

import argparse
import importlib.util
import sys

from braintumor.commands.exposure import exposure_warning
from braintumor.errors import MissingExtra, OptionError


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; uvicorn then finishes the requests in flight and frees the port."""
    if any(importlib.util.find_spec(m) is None for m in ("fastapi", "uvicorn", "multipart")):
        raise MissingExtra(
            "fastapi", "not installed; the HTTP API needs FastAPI and uvicorn: pip install 'braintumor[serve]'"
        )
    if args.max_concurrent is not None and args.max_concurrent < 1:
        raise OptionError("--max-concurrent", f"must be at least 1, got {args.max_concurrent}")
    import uvicorn

    from braintumor.inference import Analyzer
    from braintumor.serve import create_app

    warning = exposure_warning(args.host, "serve", "API")
    if warning:
        print(warning, file=sys.stderr)
    app = create_app(Analyzer.load(args.model, members=args.members), max_concurrent=args.max_concurrent)
    print(f"braintumor serve on http://{args.host}:{args.port}  (API docs at /docs; Ctrl+C to stop)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port)
    return 0
