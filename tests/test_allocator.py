"""The glibc allocator tuning used by segment/train/evaluate (see omniseg.runtime.memory)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CODE = (
    "from omniseg.runtime.memory import tune_allocator; print(tune_allocator(), tune_allocator())"
)


def _run(**env) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "OMNISEG_"))}
    proc = subprocess.run(
        [sys.executable, "-c", CODE], env={**clean, **env}, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")
def test_tuning_applies_once_and_respects_opt_outs():
    import ctypes.util

    expected = "True True" if ctypes.util.find_library("c") else "False False"
    assert _run() == expected
    assert _run(OMNISEG_MALLOC_TUNING="0") == "False False"
    assert _run(MALLOC_TRIM_THRESHOLD_="65536") == "False False"  # the user's own setting wins


def test_importing_omniseg_does_not_tune_the_allocator():
    code = "import omniseg, omniseg.runtime.memory as a; print(a._done)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.strip() == "False", proc.stderr


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="fork/exec RSS carry-over is Linux"
)
def test_peak_rss_of_a_child_is_its_own_not_its_parents():
    """ru_maxrss would report the parent's RSS at fork for a small child; VmHWM does not."""
    import numpy as np

    from omniseg.runtime.memory import peak_rss_mb

    ballast = np.ones(600 * 2**20 // 8)  # 600 MB resident in this (parent) process
    parent = peak_rss_mb()
    code = "from omniseg.runtime.memory import peak_rss_mb; print(peak_rss_mb())"
    child = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 check=True).stdout)  # fmt: skip
    assert ballast.sum() > 0 and parent > 600
    assert 0 < child < parent - 400, (child, parent)


def test_the_heap_is_trimmed_when_it_creeps_not_when_the_network_refills_it(monkeypatch):
    """RSS right after a trim is low and the next batch refills it (the network's buffers):
    that refill must not count as creep, or every batch would trim (~0.5 s each). Creep past
    the level measured one batch after a trim trims at once; without creep, every N batches."""
    from omniseg.runtime import memory

    # RSS when each batch is done (the batch has run, so its buffers are in)
    rss = iter([1000, 1010, 1020, 1060, 1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007, 1008])
    trims, done = [], []
    monkeypatch.setattr(memory, "current_rss_mb", lambda: next(rss))
    monkeypatch.setattr(memory, "release_free_memory", lambda: trims.append(len(done)))
    trim = memory.HeapCreepTrim(every_batches=6, growth_mb=48)
    for batch in range(1, 14):
        done.append(batch)
        trim.batch_done()
    # level 1000 after batch 1; 1060 > 1000 + 48 at batch 4: creep -> trim; batch 5 refills to
    # 1000, the new level (no trim); no creep after it: the 6th batch since the trim (10) trims
    assert trims == [4, 10]
    assert trim.trims == 2
