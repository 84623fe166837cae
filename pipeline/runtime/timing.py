"""The one timing loop of `evaluate` and `bilm bench`: seconds per call, after warm-up calls, optionally
bounded by a time budget. A leaf module (numpy-free, torch-free): the clock is a parameter, so a CUDA backend
passes its CUDA-event clock (`pipeline.cuda_timing.cuda_seconds`) and the loop stays the same."""
from __future__ import annotations

import time
from typing import Any, Callable

Clock = Callable[[Callable[[], Any]], float]  # runs fn once and returns the seconds it took


def wall_seconds(fn: Callable[[], Any]) -> float:
    """Host wall-clock seconds of one call (right for CPU backends, whose calls return when done)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def time_calls(fn: Callable[[], Any], iterations: int, warmup: int = 1, budget_s: float | None = None,
               min_calls: int = 3, clock: Clock = wall_seconds) -> list[float]:
    """Seconds per call of `fn` over at most `iterations` calls, after `warmup` untimed ones. With `budget_s`,
    stop once that many seconds were timed (after at least `min_calls`): slow settings get fewer calls."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    for _ in range(iterations):
        times.append(clock(fn))
        if budget_s is not None and sum(times) > budget_s and len(times) >= min_calls:
            break
    return times
