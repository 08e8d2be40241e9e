"""Work on a few threads whose results come back in input order, with bounded memory.

For work whose heavy parts release the GIL (numpy, zarr decompression, OpenCV, OpenSlide, PNG
encoding): the consumer sees exactly the sequence a plain ``map`` gives, so results never depend
on the thread count. Used by slide reading (io), patch extraction (data) and the tile loop,
merge and object tracing (inference): it sits low so that all of them may use it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")
AHEAD_PER_THREAD = 2


def ordered_map(
    function: Callable[[Item], Result],
    items: Iterable[Item],
    threads: int,
    *,
    name: str = "omniseg",
    ahead: int = AHEAD_PER_THREAD,
) -> Iterator[Result]:
    """``map(function, items)``; on ``threads`` threads when threads > 1, with at most
    ``ahead`` x ``threads`` items in flight."""
    if threads <= 1:
        yield from map(function, items)
        return
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name) as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(function, item))
            if len(pending) >= ahead * threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def ordered_group_map(
    function: Callable[[Item], Result],
    groups: Iterable[Sequence[Item]],
    threads: int,
    *,
    name: str = "omniseg",
    groups_ahead: int = 2,
) -> Iterator[tuple[Sequence[Item], list[Result]]]:
    """(group, [function(item) for item in group]) for each group, in order. With ``threads``
    >= 1 the items run on that many background threads, ``groups_ahead`` groups beyond the one
    being consumed (a batch computes while the next ones are read); 0 = in this thread."""
    if threads == 0:
        for group in groups:
            yield group, [function(item) for item in group]
        return
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name) as pool:
        pending: deque = deque()
        for group in groups:
            pending.append((group, [pool.submit(function, item) for item in group]))
            if len(pending) > groups_ahead:
                done, futures = pending.popleft()
                yield done, [f.result() for f in futures]
        while pending:
            done, futures = pending.popleft()
            yield done, [f.result() for f in futures]


class OrderedWriter:
    """One background thread that runs jobs in submission order while the caller computes the
    next piece. At most ``max_pending`` jobs wait, so memory stays bounded; leaving the block
    waits for every job and raises the first job error."""

    def __init__(self, max_pending: int = 2, name: str = "omniseg-write") -> None:
        self.max_pending = max_pending
        self.name = name

    def __enter__(self) -> OrderedWriter:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.name)
        self._pending: deque = deque()
        return self

    def submit(self, job: Callable[..., None], *args) -> None:
        self._pending.append(self._pool.submit(job, *args))
        while len(self._pending) > self.max_pending:
            self._pending.popleft().result()

    def __exit__(self, *exc_info) -> None:
        self._pool.shutdown(wait=True)  # finished jobs are kept even when one failed
        while self._pending:
            self._pending.popleft().result()
