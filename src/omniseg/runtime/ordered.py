"""``ordered_map``: a function over items on a few threads, results in input order.

For work whose heavy parts release the GIL (numpy, zarr decompression, OpenCV, OpenSlide, PNG
encoding): the consumer sees exactly the sequence a plain ``map`` gives, so results never depend
on the thread count, and at most ``ahead`` x threads items are in flight (bounded memory).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
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
    """``map(function, items)``; on ``threads`` threads when threads > 1."""
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
