"""Will a `bilm bench` cell fit in this machine's memory? Measured at a smaller batch, not guessed.

Before a cell of batch B > 1, `bilm bench` runs the cell's warm-up calls untimed at batch B/8 (same length), one
backend at a time, and records how far each raised the process's peak resident memory. In the cell's timed rounds
PyTorch eager runs while the ONNX Runtime sessions' shared arena still holds the largest ORT peak, so the cell
needs about eager's growth plus the largest ORT growth; activations are linear in the batch at a fixed length, so
that sum times 8 is the estimate (an overstatement where ORT runs row chunks, runtime.ort.CPU_MAX_BATCH_TOKENS:
its share then stops growing at one chunk). A cell whose estimate exceeds what the system has available is
skipped with a message naming the memory it needs, before its first call: without the check, XLNet-base at
64 x 512 ran 17 minutes on a 24 GB machine before the kernel killed the bench at 24.2 GB resident.

Linux only (the peak is reset through /proc/self/clear_refs); elsewhere nothing is measured and every cell runs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

PROBE_DIVISOR = 8  # a probe runs an eighth of the cell's batch: the grid's batches are 1, 8, 64
HEADROOM = 0.9  # share of MemAvailable a cell may plan to use: the page cache and other processes move meanwhile
GB = 1e9


def _proc_bytes(path: str, field: str) -> int | None:
    """A "Field:  N kB" line of a /proc file, in bytes (None off Linux)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _status_bytes(field: str) -> int | None:
    """VmRSS / VmHWM of this process, in bytes."""
    return _proc_bytes("/proc/self/status", field)


def reset_peak() -> bool:
    """Reset this process's peak resident memory (VmHWM) to its current resident memory."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def available_bytes() -> int | None:
    """The kernel's estimate of memory available to new allocations without swapping (MemAvailable)."""
    return _proc_bytes("/proc/meminfo", "MemAvailable")


def peak_growth(fn: Callable[[], Any]) -> int | None:
    """Bytes by which the process's peak resident memory during fn() exceeds its resident memory before it, or
    None where the peak cannot be reset (off Linux)."""
    before = _status_bytes("VmRSS")
    if before is None or not reset_peak():
        return None
    fn()
    peak = _status_bytes("VmHWM")
    return None if peak is None else max(0, peak - before)


class CellMemory:
    """What probes measured per (batch, seq), and the estimate and verdict for a larger batch at that length."""

    def __init__(self, available: Callable[[], int | None] = available_bytes):
        self.sized: dict[tuple[int, int], int] = {}  # (probe batch, seq) -> bytes the probe's cell needs
        self.skipped: dict[str, str] = {}  # "BxS" -> why
        self._available = available
        self.measurable = _status_bytes("VmRSS") is not None and Path("/proc/self/clear_refs").exists()

    @staticmethod
    def _small(batch: int) -> int:
        return max(1, batch // PROBE_DIVISOR)

    def probe_batch(self, batch: int, seq: int) -> int | None:
        """The batch to probe before batch x seq; None for a batch of one (nothing smaller to scale from), where
        that probe already ran, or where nothing can be measured."""
        small = self._small(batch)
        return None if batch == 1 or (small, seq) in self.sized or not self.measurable else small

    def record(self, batch: int, seq: int, freeing: list[int | None], holding: list[int | None]) -> None:
        """A probe's growths: `freeing` from backends that give their memory back after each call (PyTorch),
        `holding` from those that share one arena kept between calls (ONNX Runtime): they add up as sum + max."""
        if any(g is None for g in freeing + holding):
            return  # not measurable here
        self.sized[(batch, seq)] = sum(freeing) + max(holding, default=0)

    def estimate(self, batch: int, seq: int) -> float | None:
        """Bytes batch x seq will add to the process, from its probe at seq."""
        small = self._small(batch)
        need = self.sized.get((small, seq)) if batch > 1 else None
        return None if need is None else need * batch / small

    def skip(self, batch: int, seq: int) -> bool:
        """Whether batch x seq is expected not to fit (then `skipped` says why); False where nothing is known."""
        need, available = self.estimate(batch, seq), self._available()
        if need is None or available is None or need <= HEADROOM * available:
            return False
        small = self._small(batch)
        self.skipped[f"{batch}x{seq}"] = (
            f"skipped: needs about {need / GB:.1f} GB more ({self.sized[(small, seq)] / GB:.2f} GB measured at "
            f"{small}x{seq}, times {batch / small:g}) and {available / GB:.1f} GB is available: time this cell on a "
            f"machine with more memory")
        return True
