"""The HTTP API (``braintumor serve``): the CLI's analysis for other programs, on FastAPI + uvicorn."""

from braintumor.serve.api import create_app

__all__ = ["create_app"]
