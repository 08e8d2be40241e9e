"""Fine-tuning a pretrained encoder and known-negative samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omniseg.data import discover_patches
from omniseg.data.augment import AugmentConfig
from omniseg.data.dataset import PatchDataset
from omniseg.data.negatives import IGNORE, NEGATIVE_SOURCES, negative_target, to_negative
from omniseg.models import create_model, load_pretrained
from omniseg.training import load_train_config, train
from omniseg.training.config import OptimConfig
from omniseg.training.losses import supervised_loss
from omniseg.training.optim import ENCODER_PREFIX, build_optimizer
from tests._training_synth import FAST, ONE_STAGE, make_patch_set, one_thread  # noqa: F401 - fixture

pytestmark = pytest.mark.usefixtures("one_thread")

LITE_FAST = {**FAST, "run.model": "omniseg-lite0-tiny", "semi.enabled": False}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    # dt (10x) and pt (10x) and capsule (5x): every negative pair kind is present
    return make_patch_set(
        tmp_path_factory.mktemp("patches"), per_task=3, tasks=((0, 1), (1, 1), (2, 0))
    )


def test_encoder_learns_at_the_scaled_rate():
    model = create_model("omniseg-lite0-tiny")
    optimizer = build_optimizer(model, OptimConfig(lr=1e-3), encoder_lr_scale=0.1)
    encoder_ids = {id(p) for n, p in model.named_parameters() if n.startswith(ENCODER_PREFIX)}
    for group in optimizer.param_groups:
        is_encoder = {id(p) in encoder_ids for p in group["params"]}
        assert len(is_encoder) == 1
        assert group["lr"] == pytest.approx(1e-4 if is_encoder.pop() else 1e-3)
    counted = sum(len(g["params"]) for g in optimizer.param_groups)
    assert counted == len(list(model.parameters()))
    # A model without an encoder keeps its two groups (decay / no decay) at the base rate.
    plain = build_optimizer(create_model("omniseg-tiny"), OptimConfig(lr=1e-3), 0.1)
    assert [g["lr"] for g in plain.param_groups] == [1e-3, 1e-3]


def _run(manifest, out, **extra):
    cfg = load_train_config(
        None, {**LITE_FAST, "data.path": str(manifest), "run.out": str(out), **extra}
    )
    return train(cfg)


def test_frozen_encoder_steps_leave_the_encoder_untouched(manifest, tmp_path):
    result = _run(manifest, tmp_path / "run", **{
        "run.max_steps": 2, "finetune.freeze_encoder_steps": 2, "run.seed": 7,
        "data.val_split": "none",
    })  # fmt: skip
    torch.manual_seed(7)
    start = create_model("omniseg-lite0-tiny").state_dict()
    trained = load_pretrained(result.model_dir).state_dict()
    params = {n for n, _ in create_model("omniseg-lite0-tiny").named_parameters()}
    enc = [k for k in start if k.startswith(ENCODER_PREFIX) and k in params]  # not BN stats
    rest = [k for k in start if not k.startswith(ENCODER_PREFIX)]
    assert enc and all(torch.equal(start[k], trained[k]) for k in enc)
    assert any(not torch.equal(start[k], trained[k]) for k in rest)


def _stats(state):
    return {k: v for k, v in state.items() if k.endswith(("running_mean", "running_var"))}


def test_lite_training_with_negatives_runs_and_keeps_bn_statistics(manifest, tmp_path):
    common = {"run.seed": 3, "data.val_split": "none", "data.negatives": 0.5}
    torch.manual_seed(3)
    start = _stats(create_model("omniseg-lite0-tiny").state_dict())
    # Recalibrated once on the training patches, then frozen: 1 and 3 steps share statistics.
    one = _stats(load_pretrained(_run(manifest, tmp_path / "a", **common,
                                      **{"run.max_steps": 1}).model_dir).state_dict())  # fmt: skip
    three = _stats(load_pretrained(_run(manifest, tmp_path / "b", **common,
                                        **{"run.max_steps": 3}).model_dir).state_dict())  # fmt: skip
    assert start and all(torch.equal(one[k], three[k]) for k in start)
    assert any(not torch.equal(one[k], start[k]) for k in start)
    # Without recalibration they stay exactly as built; with --train-norm-stats they move.
    kept = _run(manifest, tmp_path / "c", **common, **{
        "run.max_steps": 3, "finetune.recalibrate_norm_stats": False,
    })  # fmt: skip
    kept_stats = _stats(load_pretrained(kept.model_dir).state_dict())
    assert all(torch.equal(start[k], kept_stats[k]) for k in start)
    moved = _run(manifest, tmp_path / "d", **common, **{
        "run.max_steps": 3, "finetune.freeze_norm_stats": False,
    })  # fmt: skip
    moved_stats = _stats(load_pretrained(moved.model_dir).state_dict())
    assert any(not torch.equal(start[k], moved_stats[k]) for k in start)
    assert any(not torch.equal(one[k], moved_stats[k]) for k in start)


def test_recalibration_gives_the_exact_mean_over_all_batches():
    from omniseg.training.finetune import recalibrate_norm_stats

    torch.manual_seed(0)
    model = create_model("omniseg-lite0-tiny")
    batches = [torch.rand(2, 3, 32, 32) for _ in range(3)]
    stem = model.backbone.encoder.stem
    captured = []
    stem[0].register_forward_hook(lambda m, a, out: captured.append(out.detach()))
    model.train()
    assert recalibrate_norm_stats(model, batches) == 3
    assert model.training  # mode restored
    expected = torch.stack([c.mean(dim=(0, 2, 3)) for c in captured]).mean(0)
    torch.testing.assert_close(stem[1].running_mean, expected, rtol=1e-5, atol=1e-6)
    assert stem[1].momentum == pytest.approx(0.01)  # restored
    plain = create_model("omniseg-tiny")
    assert recalibrate_norm_stats(plain, iter(batches)) == 0  # no BatchNorm: nothing run


def test_ignored_pixels_get_no_gradient_and_all_ignored_is_finite():
    logits = torch.randn(2, 2, 8, 8, requires_grad=True)
    mask = torch.zeros(2, 8, 8)
    mask[0, :4] = IGNORE
    mask[1] = IGNORE
    mask[0, 6, 6] = 1.0
    loss = supervised_loss(logits, mask, edge_weight=1.2)
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.all(logits.grad[0, :, :4] == 0)
    assert torch.all(logits.grad[1] == 0)
    assert torch.any(logits.grad[0, :, 4:] != 0)
    # Without ignored pixels the loss is exactly Dice + BCE with the edge weights, as before.
    from omniseg.training.losses import edge_weight_map, margin, soft_dice_loss, weighted_bce

    clean = torch.zeros(1, 8, 8)
    clean[0, 2:5, 2:5] = 1
    plain = logits[:1].detach()
    weight = edge_weight_map(clean, 1.2, 2)
    d = margin(plain)
    expected = soft_dice_loss(torch.sigmoid(d), clean, weight, 1.0) + weighted_bce(d, clean, weight)
    torch.testing.assert_close(supervised_loss(plain, clean, edge_weight=1.2), expected.mean())


def test_negative_samples_are_known_negative_only_and_rate_zero_is_unchanged(manifest):
    records = [r for r in discover_patches(manifest) if r.split == "train"]
    aug = AugmentConfig()
    plain = PatchDataset(records, 32, aug, seed=5)
    zero = PatchDataset(records, 32, aug, seed=5, negative_rate=0.0)
    for pos in range(6):
        a, b = plain[(pos % len(records), 0, pos)], zero[(pos % len(records), 0, pos)]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    mixed = PatchDataset(records, 32, aug, seed=5, negative_rate=0.9)
    negatives = 0
    for pos in range(40):
        index = pos % len(records)
        sample = mixed[(index, 0, pos)]
        assert sample["task_id"] == records[index].task_id
        values = set(torch.unique(sample["mask"]).tolist())
        if IGNORE in values:
            negatives += 1
            assert values <= {0.0, float(IGNORE)}
            assert 0.0 in values  # the crop holds known-negative pixels
            assert records[index].task_id in NEGATIVE_SOURCES
        else:
            assert values <= {0.0, 1.0}
    assert negatives > 10


def test_negative_resampling_follows_the_scales():
    image = np.random.default_rng(0).random((64, 64, 3)).astype(np.float32)
    mask = np.zeros((64, 64), bool)
    mask[10:30, 10:30] = True
    img, known = to_negative(image, mask, source_scale=1, target_scale=0)  # 10x -> 5x
    assert img.shape == (32, 32, 3) and known.shape == (32, 32)
    assert known.sum() == pytest.approx(100, abs=12)
    target = negative_target(known)
    assert set(np.unique(target).tolist()) == {0.0, float(IGNORE)}
    assert (target == 0).sum() == known.sum()


def test_cross_task_report_counts_known_negatives(manifest):
    from omniseg.evaluation.cross_task import cross_task_rates

    records = discover_patches(manifest)
    model = create_model("omniseg-tiny").eval()
    with torch.no_grad():  # a head that marks everything: every share is 1
        model.controller_trilinear.linear.weight.zero_()
        model.controller_trilinear.linear.bias.zero_()
        model.controller_trilinear.linear.bias[-1] = 10.0  # last bias = foreground logit
    report = cross_task_rates(model, records)
    # dt and pt are 10x, capsule 5x: each is scored on the other two tasks' patches
    assert set(report) >= {"dt", "pt", "capsule"}
    assert report["dt"]["patches"] == 6 and report["capsule"]["patches"] == 6
    assert report["dt"]["known_negative_patches"] == 3  # pt pixels are dt negatives
    for row in report.values():
        assert row["marked_share"] == pytest.approx(1.0)
        if row["known_negative_patches"]:
            assert row["known_negative_marked"] == pytest.approx(1.0)


def test_cli_fine_tuning_flags_reach_the_run_config(manifest, tmp_path):
    import yaml

    from omniseg.cli.main import main as cli_main

    out = tmp_path / "run"
    args = ["train", *ONE_STAGE, "--data", str(manifest), "--out", str(out), "--model", "omniseg-lite0-tiny",
            "--max-steps", "2", "--batch-size", "2", "--patch-size", "32", "--no-progress",
            "--val-split", "none", "--precision", "fp32", "--set", "semi.enabled=false",
            "--set", "run.pretrained_encoder=false", "--set", "finetune.encoder_lr_scale=0.5",
            "--set", "finetune.freeze_encoder_steps=1", "--set", "finetune.freeze_norm_stats=false",
            "--set", "data.negatives=0.2"]  # fmt: skip
    assert cli_main(args) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["run"]["pretrained_encoder"] is False
    assert saved["data"]["negatives"] == 0.2
    assert saved["finetune"] == {
        "encoder_lr_scale": 0.5, "freeze_encoder_steps": 1, "freeze_norm_stats": False,
        "recalibrate_norm_stats": True, "train_parts": "all",
    }  # fmt: skip
    assert cli_main(["train", "--out", str(out), "--resume", "--max-steps", "3"]) == 0
    bad = [*args[:-2], "--set", "data.negatives=1.5", "--overwrite"]
    assert cli_main(bad) == 2


def test_known_negative_samples_get_bce_only():
    from omniseg.training.losses import margin, weighted_bce

    torch.manual_seed(0)
    logits = torch.randn(1, 2, 8, 8)
    mask = torch.full((1, 8, 8), float(IGNORE))
    mask[0, 2:6, 2:6] = 0.0  # known negatives, no positive pixel
    loss = supervised_loss(logits, mask, edge_weight=1.0)
    valid = (mask != IGNORE).float()
    expected = weighted_bce(margin(logits), torch.zeros_like(mask), valid)
    torch.testing.assert_close(loss, expected.mean())
