"""The bench's memory check: growth measured from the kernel's peak, a cell estimated from its probe at an eighth of
its batch, and skipped with the reason when it would not fit."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.cell_memory import GB, CellMemory, peak_growth

linux = pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc")


@linux
def test_growth_is_the_peak_of_the_call_even_when_freed_before_it_returns():
    def touch_and_free():
        block = np.ones(300_000_000 // 8)  # 300 MB, touched
        del block

    assert 0.25 * GB < peak_growth(touch_and_free) < 0.6 * GB
    assert peak_growth(lambda: None) < 0.05 * GB  # the peak was reset: the 300 MB above is not counted again


def test_a_probe_adds_what_frees_to_the_largest_of_what_holds_and_scales_with_the_batch():
    memory = CellMemory(available=lambda: 100 * GB)
    memory.measurable = True
    assert memory.probe_batch(64, 512) == 8 and memory.probe_batch(8, 512) == 1 and memory.probe_batch(1, 512) is None
    memory.record(8, 512, freeing=[int(1.5 * GB)], holding=[int(2 * GB), int(2.5 * GB), int(1 * GB)])
    assert memory.sized[(8, 512)] == int(4 * GB)  # eager's transient peak on top of the arena's largest
    assert memory.probe_batch(64, 512) is None  # probed once per length
    assert memory.estimate(64, 512) == pytest.approx(32 * GB) and memory.estimate(16, 512) is None
    assert memory.estimate(64, 128) is None  # not probed at 128
    memory.record(8, 128, freeing=[None], holding=[GB])  # a growth that could not be measured: nothing recorded
    assert (8, 128) not in memory.sized


def test_a_cell_that_would_not_fit_is_skipped_with_what_it_needs():
    memory = CellMemory(available=lambda: 20 * GB)
    memory.record(8, 512, freeing=[GB], holding=[2 * GB])
    assert memory.skip(64, 512)  # 24 GB against 90% of 20
    why = memory.skipped["64x512"]
    assert "24.0 GB" in why and "3.00 GB measured at 8x512" in why and "20.0 GB is available" in why, why
    memory.record(2, 512, freeing=[GB], holding=[GB])
    assert not memory.skip(16, 512) and "16x512" not in memory.skipped  # 16 GB fits in 18


def test_nothing_known_means_nothing_skipped():
    memory = CellMemory(available=lambda: None)
    memory.record(8, 512, freeing=[300 * GB], holding=[])
    assert not memory.skip(64, 512) and not CellMemory(available=lambda: GB).skip(64, 512)
    unmeasurable = CellMemory()
    unmeasurable.measurable = False
    assert unmeasurable.probe_batch(64, 512) is None
