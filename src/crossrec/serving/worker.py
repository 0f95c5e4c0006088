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
import socket

from fastapi import FastAPI

from crossrec.config import RunConfig, run_config_from_dict, to_dict
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


def serve_workers(cfg: RunConfig, sock: socket.socket) -> None:
    """`cfg.serve.workers` processes on the bound socket `sock`, each loading the model (`app`),
    under uvicorn's supervisor (restarts a dead process; SIGHUP replaces them one by one)."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    os.environ[ENV] = json.dumps(to_dict(cfg))  # the processes are spawned: they read it from there
    config = uvicorn.Config(
        "crossrec.serving.worker:app",
        factory=True,
        host=cfg.serve.host,
        port=cfg.serve.port,
        workers=cfg.serve.workers,
        log_level="warning",
        timeout_worker_healthcheck=120,  # a process answers once its model is loaded
    )
    Multiprocess(config, sockets=[sock]).run()
