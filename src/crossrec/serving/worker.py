"""One server process of `crossrec serve --serve.workers N` (N > 1).

uvicorn's supervisor (`uvicorn.supervisors.Multiprocess`) starts N processes on the socket the CLI
bound, each with the import string `crossrec.serving.worker:app` (a factory) and the run's config
in `$CROSSREC_SERVE_CONFIG` (JSON, `config.to_dict`); each loads the newest version of the model
and opens the shared store. The supervisor restarts a process that dies, and on SIGHUP replaces
them one by one (each new one loads the newest version: a rolling reload).
"""

from __future__ import annotations

import json
import os

from fastapi import FastAPI

from crossrec.config import run_config_from_dict
from crossrec.serving.api import create_app
from crossrec.serving.loader import service_loader

ENV = "CROSSREC_SERVE_CONFIG"


def app() -> FastAPI:
    """The app of one server process, from the config in `$CROSSREC_SERVE_CONFIG`."""
    raw = os.environ.get(ENV)
    if not raw:
        raise RuntimeError(f"${ENV} is not set: start server processes with `crossrec serve --serve.workers N`")
    cfg = run_config_from_dict(json.loads(raw))
    return create_app(service_loader(cfg), cfg.serve)
