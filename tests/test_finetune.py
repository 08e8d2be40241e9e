"""``omniseg finetune``: a lab's corrected patches adapt their tasks; the others stay put."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import shapely
import torch
from PIL import Image

from omniseg.catalogue import tissue
from omniseg.cli.main import main
from omniseg.data import discover_patches, load_labelled
from omniseg.errors import OmnisegError
from omniseg.models import load_pretrained
from omniseg.models.pretrained import sha256_of
from omniseg.runtime import TorchPredictor
from omniseg.training.adapt import AdaptSettings, finetune
from omniseg.training.config_loading import config_from_dict
from omniseg.training.trainer import train
from tests._annotated_slides import paint, polygons_of, shapes, write_geojson
from tests._training_synth import (
    FAST,
    make_patch_set,
    one_thread,  # noqa: F401 - fixture
)

SMALL = {"data.patch_size": "32", "data.batch_size": "2", "run.precision": "fp32",
         "run.channels_last": "false", "augment.enabled": "false"}  # fmt: skip
DT, CAPSULE = tissue("dt").id, tissue("capsule").id


@pytest.fixture(scope="module")
def start_model(tmp_path_factory):
    """A tiny model trained until confident on discs for dt (10x) and capsule (5x)."""
    root = tmp_path_factory.mktemp("start")
    data = make_patch_set(root / "data", per_task=4, tasks=((DT, 1), (CAPSULE, 0)))
    raw = {"data": {"path": str(data), "val_split": "none"}, "optim": {"lr": 0.01},
           "run": {"out": str(root / "run"), "max_steps": 60, "seed": 0, "tune_thresholds": False}}  # fmt: skip
    for key, value in FAST.items():
        section, name = key.split(".")
        raw.setdefault(section, {})[name] = value
    torch.manual_seed(0)
    return train(config_from_dict(raw)).model_dir


def _inverted_capsule_patches(root, n: int = 3):
    """Capsule patches whose corrected masks mark the background: a correction the start model
    disagrees with everywhere, so adapting it must move the shared network."""
    manifest = make_patch_set(root, per_task=n, tasks=((CAPSULE, 0),), seed=7, with_split=False)
    for record in discover_patches(manifest):
        mask = np.asarray(Image.open(record.mask))
        Image.fromarray((255 - mask).astype(np.uint8)).save(record.mask)
    return manifest


def _dt_probability(model_dir, images) -> np.ndarray:
    predictor = TorchPredictor(load_pretrained(model_dir).eval(), "fp32")
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0
    n = len(images)
    scale = tissue(DT).scale_id
    return predictor.predict_probability(x, [DT] * n, [scale] * n, tta=False).cpu().numpy()


@pytest.mark.usefixtures("one_thread")
def test_finetune_adapts_its_tasks_and_holds_the_others(start_model, tmp_path):
    data = _inverted_capsule_patches(tmp_path / "lab")
    dt_images = [load_labelled(r)[0] for r in discover_patches(
        make_patch_set(tmp_path / "probe", per_task=3, tasks=((DT, 1),), seed=11))]  # fmt: skip
    before = _dt_probability(start_model, dt_images)
    drift = {}
    for keep in (True, False):
        settings = AdaptSettings(weights=start_model, max_steps=25, lr=0.01, keep_others=keep, parts="all",
                                 config_overrides=SMALL, progress=False)  # fmt: skip
        result = finetune(data.parent, tmp_path / f"run-{keep}", settings)
        assert result.tasks == ("capsule",)
        after = _dt_probability(result.model_dir, dt_images)
        drift[keep] = float(np.abs(after - before).mean())
        record = json.loads((result.run_dir / "adapt.json").read_text(encoding="utf-8"))
        assert record["start_model_sha256"] == sha256_of(start_model / "model.safetensors")
        assert record["model_sha256"] == sha256_of(result.model_dir / "model.safetensors")
        assert record["tasks"] == ["capsule"] and record["steps"] == 25
    assert set(record["kept_by_distillation"]) == set()  # the plain run holds nothing
    # distillation on the user's own patches keeps dt where it was; a plain fine-tune does not
    assert drift[True] < 0.5 * drift[False], drift
    kept = json.loads((tmp_path / "run-True" / "adapt.json").read_text(encoding="utf-8"))
    assert "dt" in kept["kept_by_distillation"] and "capsule" not in kept["kept_by_distillation"]
    with open(tmp_path / "run-True" / "patches" / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    held = {int(r["task_id"]) for r in rows if r["source"] == "teacher"}
    # dt (where the start model is confident) is held; rows with no confident pixel are left out
    assert DT in held and held <= {0, 1, 3, 4, 5}
    for row in rows:
        if row["source"] == "teacher":
            assert (
                np.asarray(Image.open(data.parent.parent / "run-True" / "patches" / row["mask"]))
                != 128
            ).any()


@pytest.mark.usefixtures("one_thread")
def test_task_only_finetune_leaves_every_other_task_bit_identical(start_model, tmp_path):
    data = _inverted_capsule_patches(tmp_path / "lab").parent
    settings = AdaptSettings(weights=start_model, max_steps=8, lr=0.01, parts="task",
                             config_overrides=SMALL, progress=False)  # fmt: skip
    result = finetune(data, tmp_path / "run", settings)
    record = json.loads((result.run_dir / "adapt.json").read_text(encoding="utf-8"))
    assert record["train_parts"] == "task" and record["kept_by_distillation"] == []
    assert not (result.run_dir / "patches").exists()  # nothing to hold: no teacher labels made
    before, after = load_pretrained(start_model), load_pretrained(result.model_dir)
    changed = [
        n for n, p in after.state_dict().items() if not torch.equal(p, before.state_dict()[n])
    ]
    assert changed == ["controller_trilinear.linear.weight"]
    c = after.controller_trilinear
    shape = (-1, c.feat, c.num_tasks, c.num_scales)
    w_after = after.state_dict()[changed[0]].reshape(shape)
    w_before = before.state_dict()[changed[0]].reshape(shape)
    differs = (w_after != w_before).any(dim=(0, 1, 3))
    assert differs.tolist() == [t == CAPSULE for t in range(c.num_tasks)]


@pytest.mark.usefixtures("one_thread")
def test_resumed_finetune_equals_an_uninterrupted_one(start_model, tmp_path):
    data = _inverted_capsule_patches(tmp_path / "lab").parent
    settings = AdaptSettings(weights=start_model, max_steps=6, lr=0.01, config_overrides=SMALL,
                             progress=False)  # fmt: skip
    whole = finetune(data, tmp_path / "whole", settings)

    def stop_at_three(step, _metrics):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune(data, tmp_path / "cut", settings, callback=stop_at_three)
    assert not (tmp_path / "cut" / "model").exists()
    with pytest.raises(OmnisegError, match="--resume"):
        finetune(data, tmp_path / "cut", settings)
    resumed = finetune(
        data, tmp_path / "cut", AdaptSettings(**{**settings.__dict__, "resume": True})
    )
    assert sha256_of(resumed.model_dir / "model.safetensors") == sha256_of(
        whole.model_dir / "model.safetensors"
    )


def test_bad_patches_are_one_line_errors(start_model, tmp_path, capsys):
    data = make_patch_set(tmp_path / "lab", per_task=2, tasks=((CAPSULE, 0),), with_split=False)
    args = ["finetune", "--data", str(data.parent), "--weights", str(start_model), "--quiet"]
    assert main([*args, "--out", str(tmp_path / "a"), "--tasks", "vessel"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no patches labelled for vessel" in err and "capsule" in err
    with open(data, newline="") as fh:  # the lab exported its 40x slide as if it were 5x
        rows = list(csv.DictReader(fh))
    with open(data, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[*rows[0], "mpp"])
        writer.writeheader()
        writer.writerows({**r, "mpp": str(tissue(CAPSULE).mpp / 8)} for r in rows)
    assert main([*args, "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "µm/px" in err and "re-extract" in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_route_corrected_geojson_extract_finetune_segment(start_model, tmp_path, capsys):
    """QuPath route on a generated slide: a deleted glomerulus inside the checked Region becomes
    background, the rest of the slide stays unknown; finetune; segment with the new model."""
    found = shapes(0)
    slide = paint(tmp_path / "biopsy.tif", found)
    glomeruli = [g for name, g in found if name == "Glomerulus"]
    deleted = glomeruli[1]
    corrected = [(n, g) for n, g in found if g is not deleted]
    write_geojson(tmp_path / "biopsy.geojson", corrected)
    patches = tmp_path / "patches"
    assert main(["extract", str(slide), "--annotations", str(tmp_path / "biopsy.geojson"),
                 "-o", str(patches), "--classes", "Glomerulus=capsule", "--patch", "64",
                 "--per-class", "4", "--negatives", "1", "--quiet"]) == 0  # fmt: skip
    with open(patches / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    region = polygons_of(found, "Region")
    seen_deleted = 0
    for row in rows:  # every pixel of the deleted glomerulus inside the Region: known background
        f = float(row["mpp"]) / 0.25
        mask = np.asarray(Image.open(patches / row["mask"]))
        ys, xs = np.mgrid[: mask.shape[0], : mask.shape[1]] + 0.5
        px, py = (xs + int(row["x"]) / f) * f, (ys + int(row["y"]) / f) * f
        inside = shapely.contains_xy(deleted.intersection(region).buffer(-4), px, py)
        seen_deleted += int(inside.sum())
        assert np.all(mask[inside] == 0)
    assert seen_deleted > 0, "no patch showed the deleted glomerulus; the test checks nothing"
    run = tmp_path / "run"
    args = ["finetune", "--data", str(patches), "--out", str(run), "--weights", str(start_model),
            "--max-steps", "3", "--train-parts", "all", "--quiet", *[f"--set={k}={v}" for k, v in SMALL.items()]]  # fmt: skip
    args[args.index("--set=data.patch_size=32")] = "--set=data.patch_size=64"
    assert main(args) == 0
    assert "adapted capsule in 3 steps" in capsys.readouterr().out
    with open(run / "patches" / "manifest.csv", newline="") as fh:
        real = [r for r in csv.DictReader(fh) if r["source"] == "label"]
    unknown = [np.asarray(Image.open(patches / r["mask"])) == 127 for r in rows]  # extract's
    copied = [np.asarray(Image.open(run / "patches" / r["mask"])) == 128 for r in real]
    assert len(real) == len(rows)
    # what nobody checked stays unknown in the distillation set (never background)
    assert any(u.any() for u in unknown)
    assert all((r["ignore_value"] == "128") == u.any() for r, u in zip(real, unknown, strict=True))
    assert all(np.array_equal(u, c) for u, c in zip(unknown, copied, strict=True))
    out = tmp_path / "segmented"
    assert main(["segment", str(slide), "-o", str(out), "--weights", str(run / "model"),
                 "--quiet", "--precision", "fp32"]) == 0  # fmt: skip
    summary = json.loads((out / "biopsy" / "summary.json").read_text(encoding="utf-8"))
    assert summary["model"]["weights_sha256"] == sha256_of(run / "model" / "model.safetensors")
