"""A tiny timing helper: best-of-N rate of a callable, so runs are comparable in one process."""

from __future__ import annotations

import time
from collections.abc import Callable


def rate(fn: Callable[[], object], *, n: int, repeat: int = 5) -> float:
    """Operations per second: the best of ``repeat`` runs of ``n`` calls."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, time.perf_counter() - start)
    return n / best


def report(label: str, ours: float, baseline: float, baseline_label: str) -> None:
    print(
        f"{label:<36} {ours:>12,.0f}/s   baseline {baseline_label}: {baseline:>12,.0f}/s"
        f"   ratio {ours / baseline:5.2f}"
    )
