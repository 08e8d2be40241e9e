"""Augmentation keeps image and mask aligned, is seeded, and its stain maths is invertible;
the dataset split and the task-balanced sampler behave."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from omniseg.data import PatchRecord
from omniseg.data.augment import (
    AugmentConfig,
    augment_pair,
    colour_jitter,
    dihedral,
    hed_to_rgb,
    rgb_to_hed,
    stain_jitter,
)
from omniseg.data.dataset import PatchDataset, TaskBalancedBatchSampler, stratified_split
from tests._training_synth import disc_pair, make_patch_set


def _marked(size=48, seed=0):
    """An image whose mask is derivable from it: red > 0.5 exactly on the mask, asymmetric."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((size, size), bool)
    mask[5:20, 8:40] = True  # an off-centre bar: flips and rotations move it visibly
    mask[30:44, 30:36] = True
    image = rng.uniform(0.0, 0.3, (size, size, 3)).astype(np.float32)
    image[mask, 0] = 0.95
    return image, mask


GEOMETRY_ONLY = AugmentConfig(stain_prob=0.0, colour_prob=0.0, scale_prob=1.0)


@pytest.mark.parametrize("seed", range(8))
def test_geometry_moves_mask_with_image(seed):
    image, mask = _marked()
    out_img, out_mask = augment_pair(image, mask, 32, GEOMETRY_ONLY, np.random.default_rng(seed))
    assert out_img.shape == (32, 32, 3) and out_mask.shape == (32, 32)
    derived = out_img[..., 0] > 0.55  # red channel marks the object (bilinear blurs edges)
    disagree = derived != out_mask
    assert disagree.mean() < 0.025, disagree.mean()  # a half-pixel shift gives ~0.06
    if out_mask.any():  # interior agreement is exact: only edge pixels may differ
        assert (derived & out_mask).sum() >= 0.8 * out_mask.sum()


def test_dihedral_exactly_aligned_without_rescaling():
    image, mask = _marked()
    cfg = dataclasses.replace(GEOMETRY_ONLY, scale_prob=0.0)
    for seed in range(8):
        out_img, out_mask = augment_pair(image, mask, 48, cfg, np.random.default_rng(seed))
        np.testing.assert_array_equal(out_img[..., 0] > 0.5, out_mask)
    poses = {dihedral(mask, k, f).tobytes() for k in range(4) for f in (False, True)}
    assert len(poses) == 8


def test_colour_ops_leave_mask_alone_and_are_seeded():
    image, mask = disc_pair(32, np.random.default_rng(1))
    img = image.astype(np.float32) / 255
    cfg = AugmentConfig()
    a = augment_pair(img, mask, 32, cfg, np.random.default_rng(7))
    b = augment_pair(img, mask, 32, cfg, np.random.default_rng(7))
    c = augment_pair(img, mask, 32, cfg, np.random.default_rng(8))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    assert a[0].dtype == np.float32 and a[0].min() >= 0 and a[0].max() <= 1


def test_hed_round_trip_and_stain_jitter_changes_colour():
    rgb = np.random.default_rng(0).uniform(0.05, 1.0, (16, 16, 3))
    np.testing.assert_allclose(hed_to_rgb(rgb_to_hed(rgb)), rgb, atol=1e-6)
    same = stain_jitter(rgb.astype(np.float32), np.ones(3), np.zeros(3))
    np.testing.assert_allclose(same, rgb, atol=1e-5)
    more_haematoxylin = stain_jitter(rgb.astype(np.float32), np.array([1.3, 1, 1]), np.zeros(3))
    assert more_haematoxylin.mean() < same.mean()  # more stain = darker
    identity = colour_jitter(rgb.astype(np.float32), 0.0, 1.0, 1.0, 1.0)
    np.testing.assert_allclose(identity, rgb, atol=1e-6)


def test_disabled_augmentation_centre_crops_or_pads():
    image, mask = _marked(40)
    cfg = AugmentConfig(enabled=False, pad_value=0.5)
    out_img, out_mask = augment_pair(image, mask, 32, cfg, np.random.default_rng(0))
    np.testing.assert_array_equal(out_mask, mask[4:36, 4:36])
    out_img, out_mask = augment_pair(image, mask, 48, cfg, np.random.default_rng(0))
    np.testing.assert_array_equal(out_mask[4:44, 4:44], mask)
    assert (out_img[:4] == 0.5).all() and not out_mask[:4].any()


def _records(counts: dict[int, int]) -> list[PatchRecord]:
    out = []
    for task, n in counts.items():
        for i in range(n):
            stain = ("he", "pas")[i % 2]
            out.append(
                PatchRecord(Path(f"{task}_{i}.png"), Path(f"{task}_{i}_m.png"), task, 1, stain)
            )
    return out


def test_stratified_split_covers_every_task_and_stain_and_is_seeded():
    records = _records({0: 20, 1: 4, 2: 1})
    a = stratified_split(records, 0.25, seed=3)
    assert a == stratified_split(records, 0.25, seed=3)
    assert a != stratified_split(records, 0.25, seed=4)
    val = [r for r in a if r.split == "val"]
    assert {(r.task_id, r.stain) for r in val} == {(0, "he"), (0, "pas"), (1, "he"), (1, "pas")}
    records = _records({0: 40})  # two stain groups of 20: 5 val each
    val = [r for r in stratified_split(records, 0.25, seed=3) if r.split == "val"]
    assert Counter(r.stain for r in val) == {"he": 5, "pas": 5}
    assert [r.split for r in a if r.task_id == 2] == ["train"]  # a lone patch is never held out


def test_sampler_balances_tasks_and_shards_global_batches():
    tasks = [0] * 30 + [1] * 5 + [2] * 1
    full = TaskBalancedBatchSampler(tasks, 4, seed=0)
    keys = [k for batch in full for k in batch]
    counts = Counter(tasks[i] for i, _, _ in keys)
    assert max(counts.values()) - min(counts.values()) <= 1  # balanced despite 30:5:1
    assert len({(e, p) for _, e, p in keys}) == len(keys)  # unique augmentation seeds
    shards = [TaskBalancedBatchSampler(tasks, 2, seed=0, rank=r, world_size=2) for r in range(2)]
    for whole, half0, half1 in zip(full, *shards, strict=True):
        assert whole == half0 + half1  # rank r gets its slice of the same global batch
    resumed = TaskBalancedBatchSampler(tasks, 4, seed=0)
    resumed.set_epoch(0, start_batch=3)
    assert list(resumed) == list(full)[3:]
    full.set_epoch(1)
    assert list(full) != list(TaskBalancedBatchSampler(tasks, 4, seed=0))


def test_dataset_items_are_deterministic_per_key(tmp_path):
    manifest = make_patch_set(tmp_path, size=40, per_task=2)
    from omniseg.data import discover_patches

    ds = PatchDataset(discover_patches(manifest), 32, AugmentConfig(), seed=5)
    a, b, c = ds[(0, 0, 3)], ds[(0, 0, 3)], ds[(0, 1, 3)]
    assert a["image"].shape == (3, 32, 32) and a["mask"].shape == (32, 32)
    assert (a["image"] == b["image"]).all() and not (a["image"] == c["image"]).all()
    assert a["task_id"] == 0 and a["scale_id"] == 1


@pytest.mark.parametrize("seed", range(6))
def test_foreground_crops_always_contain_a_mask_pixel(seed):
    mask = np.zeros((64, 64), bool)
    mask[50:53, 3:6] = True  # one small object in a corner: random 16 px crops mostly miss it
    image = np.zeros((64, 64, 3), np.float32)
    image[mask] = 1.0
    cfg = AugmentConfig(
        flips=False, scale_prob=0.0, stain_prob=0.0, colour_prob=0.0, foreground_crop_prob=1.0
    )
    rng = np.random.default_rng(seed)
    for _ in range(20):
        out_img, out_mask = augment_pair(image, mask, 16, cfg, rng)
        assert out_mask.any()
        np.testing.assert_array_equal(out_img[..., 0] > 0.5, out_mask)  # still aligned


def test_foreground_crops_vary_and_plain_crops_often_miss():
    mask = np.zeros((64, 64), bool)
    mask[50:53, 3:6] = True
    image = np.zeros((64, 64, 3), np.float32)
    plain = AugmentConfig(flips=False, scale_prob=0.0, stain_prob=0.0, colour_prob=0.0)
    biased = dataclasses.replace(plain, foreground_crop_prob=1.0)
    rng = np.random.default_rng(0)
    hits = [augment_pair(image, mask, 16, plain, rng)[1].any() for _ in range(50)]
    assert sum(hits) < 25
    windows = {augment_pair(image, mask, 16, biased, rng)[1].tobytes() for _ in range(50)}
    assert len(windows) > 5  # the window is drawn among those containing the pixel
    empty = np.zeros_like(mask)  # no foreground: falls back to a plain random crop
    assert not augment_pair(image, empty, 16, biased, rng)[1].any()
