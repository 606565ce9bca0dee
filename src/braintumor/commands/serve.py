"""``braintumor serve``: the HTTP API on uvicorn, with the model loaded once before the port opens."""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from braintumor.commands.exposure import exposure_warning, is_loopback
from braintumor.errors import MissingExtra, OptionError

#: The environment variable that holds the bearer token when no ``--token-file`` is given.
TOKEN_ENV = "BRAINTUMOR_TOKEN"
#: Shortest token accepted: 16 random characters are beyond guessing over HTTP.
MIN_TOKEN_CHARS = 16
TOKEN_HINT = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))' makes one"


def read_token(token_file: Path | None, environ: Mapping[str, str] = os.environ) -> str | None:
    """The bearer token: the text of ``token_file`` (surrounding whitespace dropped) when given, else the value of
    ``BRAINTUMOR_TOKEN``, else None.  An ``OptionError`` for one that is unreadable, empty, too short or not a
    header's printable ASCII; no message repeats any of its characters."""
    if token_file is not None:
        name = "--token-file"
        try:
            text = token_file.read_text(encoding="utf-8")
        except OSError as err:
            raise OptionError(name, f"cannot read {token_file}: {err.strerror or type(err).__name__}") from None
        except UnicodeDecodeError:
            raise OptionError(name, f"{token_file} is not UTF-8 text") from None
    elif TOKEN_ENV in environ:
        name, text = TOKEN_ENV, environ[TOKEN_ENV]
    else:
        return None
    token = text.strip()
    if not token:
        raise OptionError(name, f"the token is empty ({TOKEN_HINT})")
    if not all("!" <= c <= "~" for c in token):  # an HTTP header carries it: no spaces, no control characters
        raise OptionError(name, "the token must be printable ASCII without spaces")
    if len(token) < MIN_TOKEN_CHARS:
        raise OptionError(name, f"the token is shorter than {MIN_TOKEN_CHARS} characters ({TOKEN_HINT})")
    return token


def check_limits(args: argparse.Namespace) -> None:
    """The serve options' values, each refused in one line before the model loads."""
    if args.max_concurrent is not None and args.max_concurrent < 1:
        raise OptionError("--max-concurrent", f"must be at least 1, got {args.max_concurrent}")
    if args.queue < 0:
        raise OptionError("--queue", f"must be 0 or more, got {args.queue}")
    if not (math.isfinite(args.queue_timeout) and args.queue_timeout > 0):
        raise OptionError("--queue-timeout", f"must be a number of seconds above 0, got {args.queue_timeout}")
    if args.upload_memory_mb < 1:
        raise OptionError("--upload-memory-mb", f"must be at least 1, got {args.upload_memory_mb}")


def exposure(host: str, token: str | None, insecure: bool) -> str | None:
    """The warning for ``host``, or None; an ``OptionError`` for an API without a token beyond this machine unless
    ``insecure`` says so."""
    if is_loopback(host):
        return None
    where = host or "(all interfaces)"
    if token is None and not insecure:
        raise OptionError(
            "--host",
            f"{where} is not a loopback address and the API has no token, so anyone who can reach it could use "
            f"it: give --token-file FILE (or set {TOKEN_ENV}), or --insecure to serve it without authentication",
        )
    if token is None:
        return exposure_warning(host, "serve", "API")
    return (
        f"braintumor serve: warning: --host {where} is not a loopback address and the API has no TLS: the token "
        "and the scans cross the network in clear text. Put it behind a reverse proxy with TLS."
    )


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; uvicorn then finishes the requests in flight and frees the port."""
    if any(importlib.util.find_spec(m) is None for m in ("fastapi", "uvicorn", "multipart")):
        raise MissingExtra(
            "fastapi", "not installed; the HTTP API needs FastAPI and uvicorn: pip install 'braintumor[serve]'"
        )
    check_limits(args)
    token = read_token(args.token_file)
    warning = exposure(args.host, token, args.insecure)
    import uvicorn

    from braintumor.inference import Analyzer
    from braintumor.serve import create_app

    if warning:
        print(warning, file=sys.stderr)
    app = create_app(
        Analyzer.load(args.model, members=args.members),
        max_concurrent=args.max_concurrent,
        queue=args.queue,
        queue_timeout=args.queue_timeout,
        upload_memory=args.upload_memory_mb * 2**20,
        token=token,
    )
    guarded = "; every route but /health needs the bearer token" if token else ""
    url = f"http://{args.host}:{args.port}"
    print(f"braintumor serve on {url}  (API docs at /docs{guarded}; Ctrl+C to stop)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port)
    return 0
