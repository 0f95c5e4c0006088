"""crossrec's OpenMP spin default (crossrec/__init__.py): set before torch loads OpenMP, never over
the user's own setting."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import crossrec


def spin_after(code: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    out = subprocess.run(
        [sys.executable, "-c", f"{code}; import os; print(os.environ.get('GOMP_SPINCOUNT'))"],
        env=clean | env,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


@pytest.mark.parametrize(
    ("code", "env", "expected"),
    [
        ("import crossrec", {}, crossrec.SPINCOUNT),  # the CLI's case: crossrec first
        ("import crossrec", {"GOMP_SPINCOUNT": "300000"}, "300000"),  # the user's value wins
        ("import crossrec", {"OMP_WAIT_POLICY": "PASSIVE"}, "None"),  # so does their wait policy
        ("import sys; sys.modules['torch'] = None; import crossrec", {}, "None"),  # too late once torch is in
    ],
    ids=["set", "user-spin", "user-policy", "torch-first"],
)
def test_the_spin_default_applies_only_where_it_can_and_may(code, env, expected):
    assert spin_after(code, **env) == expected
