"""Request counters and latency histograms in the Prometheus text format (`GET /metrics`).

Example:
    >>> m = Metrics(); m.observe("/recommend", 200, 0.004); "crossrec_requests_total" in m.render("abc")
    True
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """Thread-safe counts per (path, status) and latency histograms per path."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count: dict[tuple[str, int], int] = defaultdict(int)
        self._hist: dict[str, list[int]] = defaultdict(lambda: [0] * (len(BUCKETS) + 1))
        self._sum: dict[str, float] = defaultdict(float)

    def observe(self, path: str, status: int, seconds: float) -> None:
        with self._lock:
            self._count[(path, status)] += 1
            self._hist[path][bisect.bisect_left(BUCKETS, seconds)] += 1
            self._sum[path] += seconds

    def render(self, version: str) -> str:
        lines = [
            "# HELP crossrec_requests_total Requests answered, by path and status.",
            "# TYPE crossrec_requests_total counter",
        ]
        with self._lock:
            for (path, status), n in sorted(self._count.items()):
                lines.append(f'crossrec_requests_total{{path="{path}",status="{status}"}} {n}')
            lines += ["# HELP crossrec_request_seconds Request latency.", "# TYPE crossrec_request_seconds histogram"]
            for path, counts in sorted(self._hist.items()):
                cum = 0
                for edge, n in zip(BUCKETS + (float("inf"),), counts):
                    cum += n
                    le = "+Inf" if edge == float("inf") else repr(edge)
                    lines.append(f'crossrec_request_seconds_bucket{{path="{path}",le="{le}"}} {cum}')
                lines.append(f'crossrec_request_seconds_sum{{path="{path}"}} {self._sum[path]:.6f}')
                lines.append(f'crossrec_request_seconds_count{{path="{path}"}} {cum}')
        lines += [
            "# HELP crossrec_model_info The served model version.",
            "# TYPE crossrec_model_info gauge",
            f'crossrec_model_info{{version="{version}"}} 1',
        ]
        return "\n".join(lines) + "\n"


__all__ = ["BUCKETS", "Metrics"]
