"""crossrec: cross-category recommendation with transfer learning."""

import os as _os
import sys as _sys

__version__ = "0.1.0"

# OpenMP's idle threads (torch's pool, which the compiled kernels share) spin this many rounds
# before they sleep, instead of GNU OpenMP's default 300,000: with more jobs than cores, long
# spins take the time slices the other jobs need (benchmarks/bench_contention.py; docs/DESIGN.md,
# "Shared cores"). It must be set before torch loads its OpenMP runtime, so it applies where
# crossrec is imported first (the CLI always); a GOMP_SPINCOUNT or OMP_WAIT_POLICY of the user's wins.
SPINCOUNT = "10000"
if "torch" not in _sys.modules and not {"GOMP_SPINCOUNT", "OMP_WAIT_POLICY"} & set(_os.environ):
    _os.environ["GOMP_SPINCOUNT"] = SPINCOUNT
