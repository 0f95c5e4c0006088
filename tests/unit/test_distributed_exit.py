"""A process that joined a group leaves it at exit (a group left to the interpreter's teardown can
abort the process with gloo)."""

from __future__ import annotations

import socket

import torch.distributed as dist

from crossrec import distributed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _one_process_launch(monkeypatch, register) -> None:
    """The environment torchrun gives a one-process launch (atexit registrations go to `register`)."""
    monkeypatch.setattr(distributed, "launched", lambda: True)
    monkeypatch.setattr(distributed.atexit, "register", register)
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "RANK": "0", "WORLD_SIZE": "1"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)


def test_joining_registers_leaving_and_leaving_destroys_the_group(monkeypatch) -> None:
    registered = []
    _one_process_launch(monkeypatch, registered.append)
    try:
        assert distributed.init_from_env("cpu") and dist.is_initialized()
        assert registered == [distributed.leave]
        distributed.leave()
        assert not dist.is_initialized()
        distributed.leave()  # a second call (already left) is a no-op
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_collectives_keep_their_work_handles(monkeypatch) -> None:
    """A finished collective's work is destroyed by Python, not by gloo's worker thread, which
    would ask for the GIL while a replica's interpreter may be finalizing (collectives.py)."""
    import torch

    from crossrec import collectives

    _one_process_launch(monkeypatch, lambda f: None)
    try:
        distributed.init_from_env("cpu")
        t = torch.arange(4.0)
        for _ in range(collectives.HELD + 3):
            collectives.broadcast(t, 0)
        assert len(collectives._held) == collectives.HELD  # the latest ones, no more
        assert all(w.is_completed() for w in collectives._held)
        assert torch.equal(t, torch.arange(4.0))
    finally:
        distributed.leave()
