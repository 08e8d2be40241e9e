"""``ordered_map`` returns what ``map`` returns, in order, for any thread count."""

from __future__ import annotations

import threading
import time

import pytest

from omniseg.threads import ordered_map


@pytest.mark.parametrize("threads", [0, 1, 2, 5])
def test_results_come_in_input_order_with_bounded_work_in_flight(threads):
    running, peak, lock = [0], [0], threading.Lock()

    def slow_square(i: int) -> int:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.002 * (7 - i % 7))  # later items often finish first
        with lock:
            running[0] -= 1
        return i * i

    assert list(ordered_map(slow_square, range(40), threads)) == [i * i for i in range(40)]
    assert peak[0] <= max(1, threads)


def test_an_error_reaches_the_consumer():
    def fail_on_three(i: int) -> int:
        if i == 3:
            raise ValueError("three")
        return i

    with pytest.raises(ValueError, match="three"):
        list(ordered_map(fail_on_three, range(10), 2))


@pytest.mark.parametrize("threads", [0, 1, 3])
def test_ordered_group_map_returns_each_group_with_its_results_in_order(threads):
    from omniseg.threads import ordered_group_map

    groups = [tuple(range(start, start + size)) for start, size in ((0, 3), (3, 1), (4, 4), (8, 2))]

    def uneven_square(i: int) -> int:
        time.sleep(0.001 * (5 - i % 5))  # later items often finish first
        return i * i

    found = list(ordered_group_map(uneven_square, iter(groups), threads, groups_ahead=1))
    assert found == [(g, [i * i for i in g]) for g in groups]
