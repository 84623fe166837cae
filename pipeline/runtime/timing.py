"""The timing loops of `evaluate` and `bilm bench`: seconds per call, after warm-up calls, optionally
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


# A call shorter than this gets one untimed call of its own backend first, in every round: after a call, the
# runtime that made it keeps its idle threads spinning for a while (OpenMP in PyTorch), and on 2 cores the next
# backend's first call then runs beside them (ORT's first call after PyTorch's ran up to 17% slower). PyTorch
# keeps OpenMP's default wait policy, as a PyTorch server runs: OMP_WAIT_POLICY=PASSIVE
# slowed eager by 17-48% at BERT small's 1 x 32 to 8 x 128 cells and 10% on real texts (2-core AMX Xeon,
# 2026-12-02), which flattered ONNX Runtime. ORT sessions timed this way spin only while a run lasts
# (runtime.ort.SPINNING "run"; evaluate, bench): several pools spinning between runs outlast any settling call.
SETTLE_S = 0.25

# Where a runtime's threads may spin between calls (the bench's GEMM ceilings time ORT sessions spinning as ORT
# does by default, for its best throughput), they keep spinning 10-20 ms after the last call returns: on 2 cores
# a torch GEMM started right away ran at 247-263 GFLOP/s, 20 ms later at 406-411 (512 x 768 x 3,072, 2-core AMX
# Xeon, 2026-12-03), and the bench's torch ceilings had read as low as 20-160 GFLOP/s at shapes where torch
# reaches 350-420. The other runtime is timed after waiting this long.
IDLE_SPIN_S = 0.05


def interleaved(calls: dict[str, Callable[[], Any]], rounds: int, warmup: int = 1,
                clocks: dict[str, Clock] | None = None, budget_s: float | None = None,
                min_rounds: int = 3, settle_s: float | None = None,
                settlers: dict[str, Callable[[], Any]] | None = None) -> dict[str, list[float]]:
    """Seconds per call of each backend over at most `rounds` rounds, each round timing every backend once in
    turn, after `warmup` untimed calls each: a shared machine's speed drifts by tens of percent over minutes,
    and interleaving makes the drift hit every backend alike, so ratios within one run hold. Where a backend's
    latest call took under `settle_s` (None: SETTLE_S), it first makes one untimed settling call
    (`settlers[name]`, else the call itself). With `budget_s`, stop after a round once the slowest backend has
    spent that many seconds (after at least `min_rounds`)."""
    clocks, settlers = clocks or {}, {**calls, **(settlers or {})}
    settle_s = SETTLE_S if settle_s is None else settle_s
    last = dict.fromkeys(calls, 0.0)  # seconds of each backend's latest call, the last warm-up's at first
    for name, fn in calls.items():
        time_calls(fn, 0, warmup - 1)
        if warmup:
            last[name] = clocks.get(name, wall_seconds)(fn)
    times: dict[str, list[float]] = {name: [] for name in calls}
    for done in range(1, rounds + 1):
        for name, fn in calls.items():
            if last[name] < settle_s:
                settlers[name]()
            times[name] += time_calls(fn, 1, 0, clock=clocks.get(name, wall_seconds))
            last[name] = times[name][-1]
        if budget_s is not None and done >= min_rounds and max(map(sum, times.values())) > budget_s:
            break
    return times
