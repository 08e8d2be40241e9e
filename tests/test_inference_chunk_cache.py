"""ChunkCache: reads through decoded chunks equal zarr's own reads, bounded, skipping empty chunks."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omniseg.inference.chunk_cache import ChunkCache

SHAPE, CHUNK = (37, 45), (8, 10)


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A 2-D uint32 array with some chunks never written (they read as the fill value)."""
    values = np.random.default_rng(0).integers(1, 2**31, size=SHAPE, dtype=np.uint32)
    array = zarr.create_array(
        tmp_path_factory.mktemp("cache") / "a.zarr", shape=SHAPE, chunks=CHUNK, dtype="uint32",
        fill_value=0, config={"write_empty_chunks": False},
    )  # fmt: skip
    nonempty = {(r, c) for r in range(5) for c in range(5) if (r + c) % 3 != 0}
    for r, c in nonempty:
        sl = (slice(r * CHUNK[0], (r + 1) * CHUNK[0]), slice(c * CHUNK[1], (c + 1) * CHUNK[1]))
        array[sl] = values[sl]
    return array, nonempty


boxes = st.tuples(
    st.integers(0, SHAPE[0]),
    st.integers(0, SHAPE[0]),
    st.integers(0, SHAPE[1]),
    st.integers(0, SHAPE[1]),
).map(lambda b: (min(b[0], b[1]), max(b[0], b[1]), min(b[2], b[3]), max(b[2], b[3])))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(box_list=st.lists(boxes, min_size=1, max_size=6), budget_chunks=st.integers(1, 6))
def test_reads_equal_zarr_whatever_the_budget(stored, box_list, budget_chunks):
    array, nonempty = stored
    chunk_bytes = CHUNK[0] * CHUNK[1] * 4
    for known in (None, nonempty):
        cache = ChunkCache(array, max_bytes=budget_chunks * chunk_bytes, nonempty=known)
        for y0, y1, x0, x1 in box_list:
            got = cache.read(y0, y1, x0, x1)
            np.testing.assert_array_equal(got, np.asarray(array[y0:y1, x0:x1]))
            assert got.dtype == np.uint32
        assert len(cache._chunks) <= budget_chunks


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(st.integers(0, SHAPE[0] - 1), min_size=1, max_size=12).map(sorted),
    cols=st.lists(st.integers(0, SHAPE[1] - 1), min_size=1, max_size=12).map(sorted),
)
def test_take_equals_orthogonal_indexing(stored, rows, cols):
    array, nonempty = stored
    cache = ChunkCache(array, nonempty=nonempty)
    np.testing.assert_array_equal(cache.take(rows, cols), np.asarray(array.oindex[rows, cols]))


def test_each_chunk_decoded_once_and_empty_chunks_never(stored):
    array, nonempty = stored
    cache = ChunkCache(array, nonempty=nonempty)
    for _ in range(3):
        cache.read(0, SHAPE[0], 0, SHAPE[1])
    assert cache.decoded == len(nonempty)
    # a box inside one chunk that was never written: no decode at all
    fresh = ChunkCache(array, nonempty=nonempty)
    assert (0, 0) not in nonempty
    assert not fresh.read(0, CHUNK[0], 0, CHUNK[1]).any()
    assert fresh.decoded == 0


def test_least_recently_used_goes_first(stored):
    array, _ = stored
    cache = ChunkCache(array, max_bytes=2 * CHUNK[0] * CHUNK[1] * 4)
    cache.read(0, 1, 0, 1)  # chunk (0, 0)
    cache.read(0, 1, 10, 11)  # chunk (0, 1)
    cache.read(0, 1, 0, 1)  # (0, 0) used again: (0, 1) is now the oldest
    cache.read(0, 1, 20, 21)  # chunk (0, 2) evicts (0, 1)
    assert list(cache._chunks) == [(0, 0), (0, 2)]
    assert cache.decoded == 3


def test_threads_share_one_cache(stored):
    array, nonempty = stored
    cache = ChunkCache(array, max_bytes=3 * CHUNK[0] * CHUNK[1] * 4, nonempty=nonempty)
    rng = np.random.default_rng(1)
    jobs = [
        tuple(sorted(rng.integers(0, SHAPE[0], 2))) + tuple(sorted(rng.integers(0, SHAPE[1], 2)))
        for _ in range(200)
    ]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda b: cache.read(*b), jobs))
    for (y0, y1, x0, x1), got in zip(jobs, results, strict=True):
        np.testing.assert_array_equal(got, np.asarray(array[y0:y1, x0:x1]))


def test_cached_chunks_cannot_be_changed_by_a_reader(stored):
    array, _ = stored
    cache = ChunkCache(array)
    cache.read(0, 2, 0, 2)[:] = 7  # the returned box is a copy
    np.testing.assert_array_equal(cache.read(0, 2, 0, 2), np.asarray(array[0:2, 0:2]))
    assert not cache._chunks[(0, 0)].flags.writeable


def test_boxes_outside_the_array_are_refused(stored):
    array, _ = stored
    cache = ChunkCache(array)
    with pytest.raises(IndexError, match="outside"):
        cache.read(0, SHAPE[0] + 1, 0, 1)
    with pytest.raises(IndexError, match="outside"):
        cache.take([0], [SHAPE[1]])
    with pytest.raises(ValueError, match="2-D"):
        ChunkCache(zarr.zeros((2, 2, 2)))
