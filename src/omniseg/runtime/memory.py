"""Process memory: keep large tensor buffers in the heap, and hand freed pages back.

``tune_allocator`` keeps large tensor buffers inside the process instead of an mmap/munmap
per allocation (glibc).

glibc serves every allocation above ``M_MMAP_THRESHOLD`` (dynamic, at most 32 MiB) with a fresh
mmap and returns it on free, so each batch of 512 px activations (~134 MiB per conv output at
batch 4) is page-faulted in again. On this project's 2-core CPU that cost 40 % of the forward time
(9.3 s vs 5.7 s per 4 x 512 px batch, ~2 million page faults vs 41 thousand; see
``benchmarks/forward_speed.py --allocator``). Raising the mmap and trim thresholds makes freed
buffers reusable. The price is a constant, not a slide-size-dependent, amount of memory: the
same forward peaked at 1478 MB instead of 1100 MB (heap fragmentation); ``omniseg segment
CMU-1-Small-Region.svs --tasks dt,pt,capsule,tuft,vessel`` (1 thread) took 62.6 s and 1.99 GB
peak RSS instead of 87.7 s and 1.44 GB. It is the reverse of Dask's trap,
which sets ``MALLOC_TRIM_THRESHOLD_`` low and so slows torch down.

Called at the start of a run (never at import). A user's own ``MALLOC_*`` environment wins, and
``OMNISEG_MALLOC_TUNING=0`` switches it off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys

M_TRIM_THRESHOLD = -1  # glibc <malloc.h> parameter numbers
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 1 << 30  # serve buffers up to 1 GiB from the heap
TRIM_THRESHOLD_BYTES = 1 << 31  # give heap top back to the OS only above 2 GiB of slack

_done = False


def tune_allocator() -> bool:
    """Apply the thresholds once per process; True when they are in effect."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux") or os.environ.get("OMNISEG_MALLOC_TUNING") == "0":
        return False
    if any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other libcs have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
    ok = mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1 and ok
    _done = ok
    return ok


def release_free_memory() -> None:
    """Hand freed heap pages back to the OS (glibc ``malloc_trim``; a no-op elsewhere).

    Chunk-sized numpy buffers freed by several threads stay in glibc's per-thread arenas and
    would make RSS creep up over a long slide although live memory is constant.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB: Linux ``VmHWM`` (this program's own high-water
    mark), else ``ru_maxrss``. Not ``ru_maxrss`` on Linux: a child keeps across ``exec`` the RSS
    its parent had at ``fork``, so a benchmark child of a 1.5 GB parent reported 1.5 GB for
    every slide."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS


def current_rss_mb() -> float | None:
    """Resident memory now (Linux /proc; None elsewhere)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError, AttributeError):
        return None


class HeapCreepTrim:
    """Hands freed heap back every ``every_batches`` batches, or sooner once RSS has crept
    ``growth_mb`` above its working level: the RSS one batch after the last trim, when the
    network's buffers are back in (measured against the trim itself, that growth is the
    network re-faulting its activations, and a trim on it would cost ~0.5 s per batch).

    On a 100k x 80k slide the 5x and 10x passes read large regions on threads, whose freed
    buffers glibc keeps (``tune_allocator``): a fixed 64-batch trim let them reach 720 MB
    against 524 MB on a 10k x 8k slide."""

    def __init__(self, every_batches: int, growth_mb: float) -> None:
        self.every_batches, self.growth_mb = every_batches, growth_mb
        self.since_trim = 0
        self.level: float | None = None
        self.trims = 0

    def batch_done(self) -> None:
        self.since_trim += 1
        rss = current_rss_mb()
        if self.level is None and self.since_trim == 1:
            self.level = rss
            return
        crept = rss is not None and self.level is not None and rss > self.level + self.growth_mb
        if crept or self.since_trim >= self.every_batches:
            release_free_memory()
            self.trims += 1
            self.since_trim, self.level = 0, None
