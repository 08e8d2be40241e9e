"""Pure maths of the WSI pipeline: tiling, resampling, probability codes, merge rules, components."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from omniseg.errors import OmnisegError
from omniseg.inference.components import EIGHT_CONNECTED, ChunkLabeller, object_mask, resolve
from omniseg.inference.merge import (
    CAPSULE,
    DT,
    OBJECT_GROUPS,
    PT,
    PTC,
    TUFT,
    VESSEL,
    merge_labels,
    probability_codes,
    threshold_code,
)
from omniseg.inference.outlines import mask_outline
from omniseg.inference.resample import axis_samples, resample_bilinear
from omniseg.inference.tiling import chunk_windows, tile_at, tile_grid, tiles_touching
from omniseg.io.raster import Window


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(1, 300),
    w=st.integers(1, 300),
    tile=st.integers(8, 96),
    overlap_frac=st.floats(0, 0.49),
)
def test_tile_cores_cover_every_pixel_exactly_once(h, w, tile, overlap_frac):
    overlap = min(int(tile * overlap_frac), (tile - 1) // 2)
    count = np.zeros((h, w), dtype=np.int32)
    for t in tile_grid((h, w), tile, overlap):
        # a tile, or the whole axis when the image is smaller: never padded beyond the image
        assert (t.window.h, t.window.w) == (min(tile, h), min(tile, w))
        c, win = t.core, t.window
        assert win.y <= c.y and c.y1 <= win.y1 and win.x <= c.x and c.x1 <= win.x1
        assert win.y >= 0 and win.y1 <= h and win.x >= 0 and win.x1 <= w
        count[c.y : c.y1, c.x : c.x1] += 1
        assert tile_at((h, w), tile, overlap, t.row, t.col) == t
        rows, cols = tiles_touching(c, tile, overlap)
        assert t.row in rows and t.col in cols
    assert (count == 1).all()


def test_inner_tiles_keep_full_context():
    tile, overlap = 64, 16
    for t in tile_grid((500, 500), tile, overlap):
        inner = t.core_in_window()
        if t.window.y > 0 and t.window.y1 < 500:
            assert inner.y >= overlap and tile - inner.y1 >= overlap


@pytest.mark.parametrize("tile,overlap", [(0, 0), (32, 16), (10, -1)])
def test_bad_tiling_is_a_clear_error(tile, overlap):
    with pytest.raises(OmnisegError, match=r"2 x overlap < tile"):
        tile_grid((100, 100), tile, overlap)


def test_chunk_windows_partition():
    count = np.zeros((70, 130), dtype=int)
    for win in chunk_windows((70, 130), 32):
        count[win.y : win.y1, win.x : win.x1] += 1
    assert (count == 1).all()


def _reader(array):
    return lambda y0, y1, x0, x1: array[..., y0:y1, x0:x1]


def test_resample_identity_is_exact_and_chunk_invariant():
    rng = np.random.default_rng(1)
    src = rng.integers(0, 256, (37, 53)).astype(np.uint8)
    same = resample_bilinear(_reader(src), src.shape, (1.0, 1.0), Window(0, 0, 37, 53))
    assert np.array_equal(same, src.astype(np.float32))
    for scale in (4.0, 2.5, 0.5):
        shape = (int(37 * scale), int(53 * scale))
        whole = resample_bilinear(_reader(src), src.shape, (scale, scale), Window(0, 0, *shape))
        assert whole.flags.c_contiguous  # the merge's whole-chunk passes run 2x slower otherwise
        pieces = np.zeros_like(whole)
        for win in chunk_windows(shape, 17):
            pieces[win.y : win.y1, win.x : win.x1] = resample_bilinear(
                _reader(src), src.shape, (scale, scale), win
            )
        assert np.array_equal(whole, pieces)


def _blend_both_axes(src, scale_yx, window):
    """The resampling formula without shortcuts: two gathers and a blend per axis."""
    ys = axis_samples(window.y, window.h, scale_yx[0], src.shape[-2])
    xs = axis_samples(window.x, window.w, scale_yx[1], src.shape[-1])
    block = src.astype(np.float32)
    fy = ys.frac[:, None]
    rows = np.take(block, ys.lo, axis=-2) * (1.0 - fy) + np.take(block, ys.hi, axis=-2) * fy
    return np.take(rows, xs.lo, axis=-1) * (1.0 - xs.frac) + np.take(rows, xs.hi, axis=-1) * xs.frac


@settings(max_examples=60, deadline=None)
@given(
    scale_y=st.sampled_from([1.0, 2.0, 4.0, 0.5, 2.5]),
    scale_x=st.sampled_from([1.0, 2.0, 4.0, 0.5, 2.5]),
    y=st.integers(-3, 40),
    x=st.integers(-3, 40),
    h=st.integers(1, 30),
    w=st.integers(1, 30),
    seed=st.integers(0, 1000),
)
def test_resample_on_the_source_grid_takes_pixels_exactly(scale_y, scale_x, y, x, h, w, seed):
    # an axis whose samples all sit on source pixels skips the blend; the result must be
    # bitwise the blend's, also where the window runs past the source (edge pixels repeat)
    src = np.random.default_rng(seed).integers(0, 256, (2, 23, 31)).astype(np.float32)
    window = Window(y, x, h, w)
    got = resample_bilinear(_reader(src), src.shape[-2:], (scale_y, scale_x), window)
    assert got.flags.c_contiguous
    assert np.array_equal(got, _blend_both_axes(src, (scale_y, scale_x), window))


def test_resample_upsampling_is_smooth_not_dilated():
    src = np.zeros((8, 8), dtype=np.float32)
    src[3:5, 3:5] = 255
    up = resample_bilinear(_reader(src), src.shape, (4.0, 4.0), Window(0, 0, 32, 32))
    # thresholding the resampled probability at the midpoint keeps the area (no dilation)
    assert abs(int((up > 127.5).sum()) - 4 * 16) <= 8


@settings(max_examples=40, deadline=None)
@given(thr=st.floats(0.05, 0.95), seed=st.integers(0, 10_000))
def test_codes_preserve_threshold_decisions(thr, seed):
    rng = np.random.default_rng(seed)
    prob = rng.random((1, 30, 30)).astype(np.float32)
    prob[0, 0, :5] = np.float32(thr)  # exactly at the threshold: background
    codes = probability_codes(prob, [thr])
    assert np.array_equal(codes[0] >= threshold_code(thr), prob[0] > thr)
    assert np.abs(codes.astype(float) / 255 - prob).max() <= 1.5 / 255


def _codes(**maps):
    cuts = {t: threshold_code(0.5) for t in range(6)}
    names = {"dt": DT, "pt": PT, "capsule": CAPSULE, "tuft": TUFT, "vessel": VESSEL, "ptc": PTC}
    return {names[k]: np.asarray(v, dtype=np.float32) for k, v in maps.items()}, cuts


def test_merge_tuft_over_capsule_and_ptc_never_in_glomerulus():
    codes, cuts = _codes(
        capsule=[[200, 200, 0, 0]],
        tuft=[[0, 210, 220, 0]],
        ptc=[[250, 250, 250, 250]],
    )
    labels, winner = merge_labels(codes, cuts)
    assert labels.tolist() == [[CAPSULE + 1, TUFT + 1, TUFT + 1, PTC + 1]]
    assert winner.tolist() == [[200, 210, 220, 250]]


def test_merge_overlap_goes_to_higher_probability_ties_to_lower_id():
    codes, cuts = _codes(
        dt=[[200, 150, 180, 0, 100]],
        pt=[[150, 200, 180, 0, 100]],
        vessel=[[0, 0, 0, 140, 100]],
        ptc=[[0, 0, 0, 160, 100]],
    )
    labels, _ = merge_labels(codes, cuts)
    assert labels.tolist() == [[DT + 1, PT + 1, DT + 1, PTC + 1, 0]]


def test_merge_with_only_some_tasks():
    codes, cuts = _codes(pt=[[0, 255]])
    labels, _ = merge_labels(codes, cuts)
    assert labels.tolist() == [[0, PT + 1]]


def _label_in_chunks(labels: np.ndarray, chunk: int):
    labeller = ChunkLabeller(labels.shape[1], OBJECT_GROUPS)
    ids = np.zeros(labels.shape, dtype=np.uint32)
    codes = np.full(labels.shape, 200, dtype=np.uint8)
    for win in chunk_windows(labels.shape, chunk):
        if win.x == 0:
            labeller.start_row(win.y)
        part = labels[win.y : win.y1, win.x : win.x1]
        if not part.any():
            labeller.skip_chunk(win.x, win.w)
            continue
        ids[win.y : win.y1, win.x : win.x1] = labeller.label_chunk(
            win.y, win.x, part, codes[win.y : win.y1, win.x : win.x1]
        )
    labeller.finish()
    return ids, resolve(labeller.table)


@pytest.mark.parametrize("chunk", [7, 16, 64])
def test_components_across_chunks_match_whole_image_labelling(chunk):
    rng = np.random.default_rng(3)
    labels = (ndimage.zoom(rng.random((12, 12)), 4, order=1) > 0.6).astype(np.uint8) * (DT + 1)
    labels[30:40, 5:20] = PT + 1  # a second class next to the first never joins it
    ids, comps = _label_in_chunks(labels, chunk)
    for group, values in OBJECT_GROUPS:
        whole, count = ndimage.label(np.isin(labels, values), structure=EIGHT_CONNECTED)
        mine = comps.root_of[ids]
        selected = np.isin(labels, values)
        # same partition of the pixels: a bijection between whole-image and chunked labels
        pairs = set(zip(whole[selected].tolist(), mine[selected].tolist(), strict=True))
        assert len(pairs) == count == len({m for _, m in pairs})
        assert sum(comps.group == group) == count
    assert comps.area.sum() == int((labels > 0).sum())


def test_ring_over_many_chunks_is_one_polygon_with_its_hole():
    yy, xx = np.mgrid[:90, :120]
    dist = np.hypot(yy - 45, xx - 60)
    labels = ((dist < 35) & (dist >= 15)).astype(np.uint8) * (VESSEL + 1)
    labels[:, 110:] = 0
    ids, comps = _label_in_chunks(labels, 16)
    assert comps.count == 1

    def read_ids(y0, y1, x0, x1):
        return ids[y0:y1, x0:x1]

    mask, step = object_mask(read_ids, comps.root_of, 0, comps.bbox[0], block=16)
    poly = mask_outline(mask, int(comps.bbox[0][0]), int(comps.bbox[0][1]), step)
    assert poly.geom_type == "Polygon" and len(poly.interiors) == 1
    assert abs(poly.area - int(labels.astype(bool).sum())) / labels.astype(bool).sum() < 0.1
    assert (
        abs(poly.interiors[0].centroid.x - 60.5) < 1
        and abs(poly.interiors[0].centroid.y - 45.5) < 1
    )


@pytest.mark.parametrize("chunk", [7, 16, 64])
def test_early_erasure_of_specks_equals_filtering_whole_image_components(chunk):
    """Chunk-interior specks erased while labelling == minimum-area filter on whole components."""
    rng = np.random.default_rng(5)
    labels = (ndimage.zoom(rng.random((20, 20)), 4, order=1) > 0.62).astype(np.uint8) * (DT + 1)
    labels[rng.random(labels.shape) > 0.97] = PTC + 1  # single-pixel specks everywhere
    minimum_px = 12
    labeller = ChunkLabeller(
        labels.shape[1], OBJECT_GROUPS, min_area={DT: minimum_px, PTC: minimum_px}
    )
    kept_labels = labels.copy()
    ids = np.zeros(labels.shape, dtype=np.uint32)
    codes = np.full(labels.shape, 200, dtype=np.uint8)
    for win in chunk_windows(labels.shape, chunk):
        if win.x == 0:
            labeller.start_row(win.y)
        part = kept_labels[win.y : win.y1, win.x : win.x1]  # a view: erased in place
        ids[win.y : win.y1, win.x : win.x1] = labeller.label_chunk(
            win.y, win.x, part, codes[win.y : win.y1, win.x : win.x1]
        )
    labeller.finish()
    comps = resolve(labeller.table)
    keep = np.concatenate([[False], comps.area >= minimum_px])
    final = np.where(keep[comps.root_of[ids] + 1], kept_labels, 0)

    expected = labels.copy()
    for _, values in OBJECT_GROUPS:
        whole, count = ndimage.label(np.isin(labels, values), structure=EIGHT_CONNECTED)
        sizes = np.bincount(whole.ravel(), minlength=count + 1)
        expected[(whole > 0) & (sizes[whole] < minimum_px)] = 0
    assert labeller.erased > 0  # the early path ran
    np.testing.assert_array_equal(final, expected)


def test_edge_ramp_cross_fades_neighbouring_windows():
    from omniseg.inference.blend import edge_ramp

    tile, overlap = 128, 16
    ramp = edge_ramp(tile, overlap)
    assert ramp.min() > 0 and ramp.max() == 1.0
    shared = 2 * overlap  # neighbouring windows share 2 * overlap px
    np.testing.assert_allclose(ramp[-shared:] + ramp[:shared], 1.0)  # weights sum to one
    np.testing.assert_array_equal(edge_ramp(10, 0), np.ones(10))


def test_blending_fades_between_disagreeing_tiles_and_keeps_single_tile_codes():
    from omniseg.inference.blend import blended_codes
    from omniseg.inference.tiling import grid_shape, iter_tiles

    shape, tile, overlap = (40, 150), 64, 16
    grid = grid_shape(shape, tile, overlap)
    windows = np.zeros((1, grid[0] * tile, grid[1] * tile), np.uint8)
    for t in iter_tiles(shape, tile, overlap):  # each tile says something else everywhere
        windows[0, t.row * tile : t.row * tile + t.window.h, t.col * tile :][:, : t.window.w] = (
            20 + 50 * t.col
        )
    processed = np.ones(grid, bool)
    full = blended_codes(windows, processed, shape, tile, overlap, Window(0, 0, *shape))[0]
    row = full[0]
    assert row[0] == 20 and row[-1] == 20 + 50 * (grid[1] - 1)  # seen by one tile: exact
    assert (np.diff(row) >= 0).all() and np.diff(row).max() < 50 / 4  # a fade, not a cut
    part = blended_codes(windows, processed, shape, tile, overlap, Window(5, 37, 20, 60))[0]
    np.testing.assert_array_equal(part, full[5:25, 37:97])  # any region: the same values
    processed[0, 1] = False  # a skipped tile contributes nothing
    holes = blended_codes(windows, processed, shape, tile, overlap, Window(0, 0, *shape))[0]
    assert not np.array_equal(holes[:, :80], full[:, :80])  # where tile (0, 1) saw
    np.testing.assert_array_equal(holes[:, 80:], full[:, 80:])  # ... and nowhere else


@settings(max_examples=40, deadline=None)
@given(
    radius=st.integers(0, 40),
    shape=st.tuples(st.integers(1, 90), st.integers(1, 90)),
    seed=st.integers(0, 2**16),
)
def test_grow_mask_equals_dilation_by_the_opencv_disk(radius, shape, seed):
    import cv2

    from omniseg.inference.gates import grow_mask

    mask = np.random.default_rng(seed).random(shape) > 0.97
    side = 2 * radius + 1
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side))
    expected = cv2.dilate(mask.astype(np.uint8), disk).astype(bool) if radius else mask
    np.testing.assert_array_equal(grow_mask(mask, radius), expected)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    block=st.integers(3, 40),
    max_trace=st.sampled_from([1 << 26, 200, 37]),
)
def test_object_mask_in_blocks_equals_the_whole_box_read(seed, block, max_trace):
    """Blockwise reading (one store chunk at a time) == reading the whole box at once, at step 1
    and reduced (any pixel of a step x step block counts); at step 1 no chunk is read twice."""
    from omniseg.inference import components

    rng = np.random.default_rng(seed)
    h, w = rng.integers(5, 70, size=2)
    ids = rng.integers(0, 4, size=(h, w)).astype(np.uint32)
    top, left = rng.integers(0, h), rng.integers(0, w)  # the box starts off the chunk grid
    ids[:top] = 0
    ids[:, :left] = 0
    root_of = np.array([-1, 0, 1, 0])  # ids 1 and 3 are one object
    index = 0
    ys, xs = np.nonzero(root_of[ids] == index)
    if len(ys) == 0:
        return
    bbox = np.array([ys.min(), xs.min(), ys.max(), xs.max()])
    reads = []

    def read_ids(y0, y1, x0, x1):
        reads.append((y0 // block, x0 // block, (y1 - 1) // block, (x1 - 1) // block))
        return ids[y0:y1, x0:x1]

    original = components.MAX_TRACE_PIXELS
    components.MAX_TRACE_PIXELS = max_trace
    try:
        mask, step = object_mask(read_ids, root_of, index, bbox, block=block)
    finally:
        components.MAX_TRACE_PIXELS = original
    y0, x0, y1, x1 = (int(v) for v in bbox)
    whole = root_of[ids[y0 : y1 + 1, x0 : x1 + 1]] == index
    rows, cols = -(-whole.shape[0] // step), -(-whole.shape[1] // step)
    padded = np.zeros((rows * step, cols * step), bool)
    padded[: whole.shape[0], : whole.shape[1]] = whole
    assert np.array_equal(mask, padded.reshape(rows, step, cols, step).any(axis=(1, 3)))
    if step == 1:  # every read lies within one chunk, and no chunk is read twice
        assert all(r0 == r1 and c0 == c1 for r0, c0, r1, c1 in reads)
        assert len(set(reads)) == len(reads)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    shape=st.tuples(st.integers(20, 70), st.integers(20, 70)),
    tiling=st.sampled_from([(32, 8), (40, 6), (48, 5), (16, 0), (64, 16)]),
)
def test_blended_codes_are_the_exactly_rounded_weighted_mean(seed, shape, tiling):
    """Integer-weighted blending == the weighted mean in exact rational arithmetic, rounded
    half to even, with the float ramps as weights (any overlap, not only powers of two)."""
    from fractions import Fraction

    from omniseg.inference.blend import blended_codes, edge_ramp, edge_weights
    from omniseg.inference.tiling import grid_shape, iter_tiles

    tile, overlap = tiling
    rng = np.random.default_rng(seed)
    grid = grid_shape(shape, tile, overlap)
    windows = rng.integers(0, 256, size=(2, grid[0] * tile, grid[1] * tile)).astype(np.uint8)
    processed = rng.random(grid) < 0.8
    got = blended_codes(windows, processed, shape, tile, overlap, Window(0, 0, *shape))
    scale = 4 * overlap if overlap else 1
    assert np.array_equal(edge_ramp(tile, overlap) * scale, edge_weights(tile, overlap))
    total = [[[Fraction(0)] * shape[1] for _ in range(shape[0])] for _ in range(2)]
    weight = [[Fraction(0)] * shape[1] for _ in range(shape[0])]
    for t in iter_tiles(shape, tile, overlap):
        if not processed[t.row, t.col]:
            continue
        win = t.window
        wy, wx = edge_weights(win.h, overlap), edge_weights(win.w, overlap)
        for y in range(win.y, min(win.y1, shape[0])):
            for x in range(win.x, min(win.x1, shape[1])):
                w = Fraction(int(wy[y - win.y]) * int(wx[x - win.x]), scale * scale)
                weight[y][x] += w
                for k in range(2):
                    code = int(windows[k, t.row * tile + y - win.y, t.col * tile + x - win.x])
                    total[k][y][x] += code * w
    for k in range(2):
        for y in range(shape[0]):
            for x in range(shape[1]):
                exact = total[k][y][x] / weight[y][x] if weight[y][x] else Fraction(0)
                assert got[k, y, x] == round(exact)  # Python rounds halves to even


def _row_run_union(mask: np.ndarray, y0: int, x0: int, step: int):
    """The outline by definition: the union of every pixel row run (slow, obviously right)."""
    import shapely

    rows, starts, ends = [], [], []
    for r, row in enumerate(mask):
        edges = np.diff(np.concatenate([[0], row.astype(np.int8), [0]]))
        for a, b in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True):
            rows.append(r), starts.append(a), ends.append(b)
    rows, starts, ends = map(np.asarray, (rows, starts, ends))
    return shapely.union_all(
        shapely.box(x0 + starts * step, y0 + rows * step, x0 + ends * step, y0 + (rows + 1) * step)
    )


@settings(max_examples=150, deadline=None)
@given(
    h=st.integers(1, 14),
    w=st.integers(1, 14),
    density=st.floats(0.05, 0.95),
    step=st.integers(1, 3),
    seed=st.integers(0, 10_000),
)
def test_outline_is_the_union_of_the_pixels(h, w, density, step, seed):
    """Random masks (holes, islands in holes, corner-only contacts): the polygonized outline is
    valid, covers exactly the union of the pixel rows, and splits parts that touch at a corner
    only (scipy's 4-connected components), ordered by their top-left vertex."""
    mask = np.random.default_rng(seed).random((h, w)) < density
    if not mask.any():
        with pytest.raises(ValueError):
            mask_outline(mask, 3, 5, step)
        return
    outline = mask_outline(mask, 3, 5, step)
    truth = _row_run_union(mask, 3, 5, step)
    assert outline.is_valid
    assert outline.area == mask.sum() * step * step == truth.area
    assert outline.symmetric_difference(truth).area == 0
    parts = list(getattr(outline, "geoms", [outline]))
    assert len(parts) == ndimage.label(mask)[1]  # default structure: 4-connected
    corners = [min((y, x) for x, y in p.exterior.coords) for p in parts]
    assert corners == sorted(corners)


def _merge_pixel(values: dict[int, float], cuts: dict[int, int]) -> tuple[int, int]:
    """The merge rule for one pixel, as the module docstring states it (slow, obviously right)."""
    fg = {t: v for t, v in values.items() if v >= cuts[t]}
    glomerulus = max((fg[t] for t in (CAPSULE, TUFT) if t in fg), default=None)
    contestants = [(DT, fg.get(DT)), (PT, fg.get(PT)), (CAPSULE, glomerulus)]
    contestants += [(VESSEL, fg.get(VESSEL)), (PTC, None if glomerulus else fg.get(PTC))]
    best_task, best = None, None
    for task, value in contestants:  # in task-id order: ties keep the earlier one
        if value is not None and (best is None or value > best):
            best_task, best = task, value
    if best_task is None:
        return 0, 0
    if best_task == CAPSULE and TUFT in fg:
        best_task = TUFT
    return best_task + 1, int(np.clip(np.rint(best), 0, 255))


@settings(max_examples=60, deadline=None)
@given(
    tasks=st.sets(st.sampled_from([DT, PT, CAPSULE, TUFT, VESSEL, PTC]), min_size=1),
    cut=st.integers(1, 254),
    integer=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_merge_labels_follows_the_rule_pixel_by_pixel(tasks, cut, integer, seed):
    rng = np.random.default_rng(seed)
    codes = {t: rng.choice([0.0, cut - 0.5, cut, cut + 0.25, 200.0, 255.0], (6, 7)) for t in tasks}
    if integer:
        codes = {t: np.floor(v).astype(np.uint8) for t, v in codes.items()}
    cuts = {t: cut for t in range(6)}
    labels, winner = merge_labels(codes, cuts)
    for (r, c), label in np.ndenumerate(labels):
        expected = _merge_pixel({t: float(v[r, c]) for t, v in codes.items()}, cuts)
        assert (int(label), int(winner[r, c])) == expected, (r, c)
