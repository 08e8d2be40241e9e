"""Cross-validation (``train --folds/--fold``), multi-stage recipes and label completion."""

from __future__ import annotations

import csv
import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from omniseg.catalogue import tissue
from omniseg.cli.main import main as cli_main
from omniseg.data import PatchRecord, discover_patches
from omniseg.data.folds import assign_folds, fold_split, source_group
from omniseg.data.provenance import pixel_sha256
from omniseg.errors import OmnisegError
from omniseg.evaluation.crossval import REPORT_CSV, REPORT_JSON, read_oof
from omniseg.models import load_pretrained
from omniseg.training import load_train_config
from omniseg.training.complete import (
    UNSURE,
    CompletionSettings,
    complete_labels,
    completed_mask,
    targets_for,
)
from omniseg.training.recipe import load_recipe
from tests._training_synth import FAST, make_patch_set, one_thread  # noqa: F401 - fixture


def _records(n_per: int, tasks=(0, 1, 2), stains=("he", "pas", "sil"), groups=None):
    out = []
    for t in tasks:
        for s in stains:
            for i in range(n_per):
                group = None if groups is None else groups(t, s, i)
                out.append(PatchRecord(Path(f"/d/{t}/{s}/p{i}.png"), Path("/m.png"), t,
                                       tissue(t).scale_id, s, group=group))  # fmt: skip
    return out


@pytest.mark.parametrize("folds", [2, 3, 5])
@pytest.mark.parametrize("seed", [0, 1234])
def test_folds_partition_and_are_stratified(folds, seed):
    records = _records(7)
    fold_of = assign_folds(records, folds, seed)
    assert set(fold_of) == set(range(folds))
    strata = defaultdict(Counter)
    for r, f in zip(records, fold_of, strict=True):
        strata[(r.task_id, r.stain)][f] += 1
    for counts in strata.values():  # every (task, stain) spread as evenly as 7 patches allow
        per_fold = [counts[f] for f in range(folds)]
        assert max(per_fold) - min(per_fold) <= 1
    for f in range(folds):
        train, held = fold_split(records, folds, f, seed)
        assert len(train) + len(held) == len(records)
        assert not {r.image for r in train} & {r.image for r in held}
    assert assign_folds(records, folds, seed) == fold_of  # a pure function of data and seed


def test_folds_never_split_a_group_or_an_roi():
    records = _records(6, groups=lambda t, s, i: f"slide{i % 4}")
    fold_of = assign_folds(records, 3, 7)
    sides = defaultdict(set)
    for r, f in zip(records, fold_of, strict=True):
        sides[r.group].add(f)
    assert all(len(f) == 1 for f in sides.values())
    # the original layout: im_<ROI>_<patch> of one stain share a source ROI
    a = PatchRecord(Path("/x/0_1_dt/he/im_77_0.png"), Path("/m"), 0, 1, "he")
    b = PatchRecord(Path("/x/1_1_pt/he/im_77_11.png"), Path("/m"), 1, 1, "he")
    c = PatchRecord(Path("/x/1_1_pt/pas/im_77_1.png"), Path("/m"), 1, 1, "pas")
    assert source_group(a) == source_group(b) != source_group(c)


def test_fold_errors_are_clear():
    records = _records(1, tasks=(0,), stains=("he",))
    with pytest.raises(OmnisegError, match="at least 2 folds"):
        assign_folds(records * 3, 1, 0)
    with pytest.raises(OmnisegError, match="source group"):
        assign_folds(records, 2, 0)
    with pytest.raises(OmnisegError, match="data.folds"):
        load_train_config(None, {"data.folds": 1})
    with pytest.raises(OmnisegError, match="data.fold"):
        load_train_config(None, {"data.folds": 3, "data.fold": 3})


@pytest.fixture
def patches(tmp_path):
    # three tasks x two stains x 3 patches, no split column (folds ignore it anyway)
    return make_patch_set(tmp_path / "p", per_task=3, tasks=((0, 1), (1, 1), (2, 0)),
                          with_split=False)  # fmt: skip


def _stage_yaml(tmp_path: Path, name: str, steps: int, seed: int) -> Path:
    raw = defaultdict(dict)
    for key, value in FAST.items():
        section, field = key.split(".")
        raw[section][field] = value
    raw["run"].update(max_steps=steps, seed=seed, tune_thresholds=False, select_best=False)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(dict(raw)))
    return path


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.usefixtures("one_thread")
def test_cli_folds_train_every_fold_and_report_out_of_fold(patches, tmp_path):
    cfg = _stage_yaml(tmp_path, "s.yaml", 2, 1)
    run = tmp_path / "cv"
    args = ["train", "--data", str(patches), "--out", str(run), "--config", str(cfg),
            "--folds", "3"]  # fmt: skip
    assert cli_main(args) == 0
    report = json.loads((run / REPORT_JSON).read_text())
    rows = _read_csv(run / REPORT_CSV)
    assert report["n_images"] == len(rows) == 9  # every patch scored exactly once
    assert sorted(r["image"] for r in rows) == sorted(
        str(r.image) for r in discover_patches(patches)
    )
    assigned = {r["image"]: int(r["fold"]) for r in _read_csv(run / "folds.csv")}
    for row in rows:  # scored by the one model that never trained on it
        fold = int(row["fold"])
        assert assigned[row["image"]] == fold
        load_pretrained(run / f"fold-{fold}" / "model")  # a whole, checksummed model folder
        config = json.loads((run / f"fold-{fold}" / "model" / "config.json").read_text())
        learned = set(config["training"]["data"]["image_sha256"])
        assert pixel_sha256(Path(row["image"])) not in learned  # it never trained on the patch
        saved = load_train_config(run / f"fold-{fold}" / "config.yaml", saved_run=True)
        assert (saved.data.folds, saved.data.fold) == (3, fold)
    assert "dice_ci" in report["mean"] and set(report["tasks"]) == {"dt", "pt", "capsule"}
    before = (run / REPORT_CSV).read_bytes()
    assert cli_main([*args, "--resume"]) == 0  # finished folds resume to the same scores
    assert (run / REPORT_CSV).read_bytes() == before
    assert cli_main(args) == 2  # an existing fold folder is never silently replaced


@pytest.mark.usefixtures("one_thread")
def test_cli_single_folds_in_turn_write_the_report_last(patches, tmp_path, capsys):
    cfg = _stage_yaml(tmp_path, "s.yaml", 1, 1)
    run = tmp_path / "cv"
    base = [
        "train",
        "--data",
        str(patches),
        "--out",
        str(run),
        "--config",
        str(cfg),
        "--folds",
        "2",
    ]
    assert cli_main([*base, "--fold", "1"]) == 0
    assert not (run / REPORT_JSON).exists()
    assert "report is written once every fold is" in capsys.readouterr().out
    assert cli_main([*base, "--fold", "0"]) == 0
    assert json.loads((run / REPORT_JSON).read_text())["n_images"] == 9
    # a fold retrained with another recipe is never pooled with the others
    other = _stage_yaml(tmp_path, "o.yaml", 2, 1)
    changed = ["train", "--data", str(patches), "--out", str(run), "--config", str(other),
               "--folds", "2", "--fold", "0", "--overwrite"]  # fmt: skip
    assert cli_main(changed) == 2
    assert "another recipe" in capsys.readouterr().err
    with pytest.raises(OmnisegError, match="another recipe"):
        read_oof(run, 2, json.loads((run / "fold-1" / "oof.json").read_text())["recipe_sha256"])


def test_fold_needs_folds(patches, tmp_path, capsys):
    assert (
        cli_main(["train", "--data", str(patches), "--out", str(tmp_path / "r"), "--fold", "0"])
        == 2
    )
    assert "--folds" in capsys.readouterr().err


@pytest.mark.usefixtures("one_thread")
def test_two_stage_recipe_chains_stages_and_resumes_from_out_alone(patches, tmp_path):
    first, second = _stage_yaml(tmp_path, "a.yaml", 2, 10), _stage_yaml(tmp_path, "b.yaml", 1, 20)
    run = tmp_path / "run"
    args = ["train", "--data", str(patches), "--out", str(run), "--config", str(first),
            "--config", str(second), "--val-split", "none"]  # fmt: skip
    assert cli_main(args) == 0
    stage2 = load_train_config(run / "stage-2" / "config.yaml", saved_run=True)
    assert Path(stage2.run.init) == run / "stage-1" / "model"
    final = (run / "model" / "model.safetensors").read_bytes()
    assert final == (run / "stage-2" / "model" / "model.safetensors").read_bytes()
    assert cli_main(["train", "--out", str(run), "--resume", "--max-steps", "3"]) == 0
    assert (run / "model" / "model.safetensors").read_bytes() != final  # both stages extended
    assert cli_main(args) == 2  # refused without --resume/--overwrite
    assert cli_main([*args, "--overwrite"]) == 0


def test_bare_train_is_the_shipped_two_stage_recipe():
    stages = load_recipe(None, {"run.seed": 1})
    assert [s.run.model for s in stages] == ["omniseg-lite0", "omniseg-lite0"]
    assert stages[0].augment.foreground_crop_prob == 0.0 < stages[1].augment.foreground_crop_prob
    assert stages[0].run.seed == 1 and stages[1].run.seed == 1 + 4321 - 1234  # offsets kept
    assert not any(s.run.select_best or s.run.tune_thresholds for s in stages)


def test_completion_targets_and_masks():
    s = CompletionSettings(tau_lo=0.2, tau_hi=0.8)
    dt = PatchRecord(Path("/a.png"), Path("/m"), 0, 1, "he")
    capsule = PatchRecord(Path("/a.png"), Path("/m"), 2, 0, "he")
    ptc = PatchRecord(Path("/a.png"), Path("/m"), 5, 3, "pas")
    names = lambda r: {tissue(t).name for t in targets_for(r, s)}  # noqa: E731
    assert names(dt) == {"pt", "vessel", "capsule", "tuft"}  # same scale and 10x -> 5x
    assert names(capsule) == {"tuft"}  # never upsampled to 10x
    assert names(ptc) == set()
    prob = np.array([[0.1, 0.5], [0.9, 0.95]], dtype=np.float32)
    negative = np.array([[False, False], [False, True]])
    mask = completed_mask(prob, negative, s)
    assert mask.tolist() == [[0, UNSURE], [255, 0]]  # anatomy overrides a confident teacher


def test_complete_labels_writes_a_trainable_patch_folder(patches, tmp_path):
    from omniseg.testing import PointwiseModel

    records = discover_patches(patches)
    out = complete_labels(records, [PointwiseModel()], tmp_path / "done")
    rows = _read_csv(out)
    completed = discover_patches(out)  # readable as an ordinary manifest
    assert len(completed) == len(rows)
    teacher = [r for r in rows if r["source"] == "teacher"]
    real = [r for r in rows if r["source"] == "label"]
    # dt<->pt at 10x; both -> vessel at 10x and capsule/tuft at 5x (all six heads are kept)
    assert {r["task_id"] for r in teacher} == {"0", "1", "2", "3", "4"}
    for row in teacher:
        mask = np.asarray(Image.open(out.parent / row["mask"]))
        assert set(np.unique(mask)) <= {0, UNSURE, 255}
    for task in ("0", "1", "2"):  # real rows repeated to about the teacher rows' count
        n_real = len({r["image"] for r in real if r["task_id"] == task})
        n_rep = sum(1 for r in real if r["task_id"] == task)
        n_teacher = sum(1 for r in teacher if r["task_id"] == task)
        assert n_rep == n_real * max(1, round(n_teacher / n_real))


@pytest.mark.usefixtures("one_thread")
def test_ema_weights_are_saved_and_resume_exactly(patches, tmp_path):
    from safetensors.torch import load_file

    from omniseg.training import train

    def stop_after_two(step: int, metrics: dict) -> None:
        if step == 2:
            raise KeyboardInterrupt

    def run(out: Path, ema: float, resume: bool = False, callback=None) -> dict:
        overrides = {**FAST, "data.path": str(patches), "data.val_split": "none",
                     "run.out": str(out), "run.max_steps": 3, "run.ema_decay": ema}  # fmt: skip
        train(load_train_config(None, overrides), resume=resume, callback=callback)
        return load_file(out / "model" / "model.safetensors")

    plain, ema = run(tmp_path / "plain", 0.0), run(tmp_path / "ema", 0.5)
    assert any(not torch.equal(plain[k], ema[k]) for k in plain)  # the average, not the last
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "split", 0.5, callback=stop_after_two)
    resumed = run(tmp_path / "split", 0.5, resume=True)
    assert all(torch.equal(resumed[k], ema[k]) for k in ema)  # resume == uninterrupted


def test_tversky_is_dice_at_one_half_and_charges_misses_more_above():
    from omniseg.training.losses import soft_dice_loss

    target = torch.zeros(1, 4, 4)
    target[0, :2] = 1.0
    weight = torch.ones_like(target)
    missed = target.clone()
    missed[0, 1] = 0.0  # half the object missed
    extra = target.clone()
    extra[0, 2] = 1.0  # as many pixels marked outside it
    dice = soft_dice_loss(missed, target, weight, 0.0)
    general = soft_dice_loss(missed, target, weight, 0.0, fn_weight=0.5 + 1e-9)
    assert torch.allclose(dice, general) and torch.allclose(dice, torch.tensor([1 - 2 * 4 / 12]))
    recall_first = dict(fn_weight=0.7)
    assert soft_dice_loss(missed, target, weight, 0.0, **recall_first) > soft_dice_loss(
        extra, target, weight, 0.0, **recall_first
    )


@pytest.mark.usefixtures("one_thread")
def test_student_folds_never_see_their_held_out_patches(patches, tmp_path):
    from omniseg.data.provenance import pixel_sha256

    cfg = _stage_yaml(tmp_path, "s.yaml", 1, 1)
    teacher, student = tmp_path / "teacher", tmp_path / "student"
    base = ["train", "--data", str(patches), "--config", str(cfg), "--folds", "2"]
    assert cli_main([*base, "--out", str(teacher)]) == 0
    args = [*base, "--out", str(student), "--teacher-folds", str(teacher),
            "--teacher-confidence", "0.3,0.9", "--teacher-tasks", "dt,capsule"]  # fmt: skip
    assert cli_main(args) == 0
    assert cli_main([*args, "--resume"]) == 0  # the same settings resume (tuples read back)
    assert json.loads((student / REPORT_JSON).read_text())["n_images"] == 9
    assigned = {r["image"]: int(r["fold"]) for r in _read_csv(student / "folds.csv")}
    assert assigned == {r["image"]: int(r["fold"]) for r in _read_csv(teacher / "folds.csv")}
    for fold in (0, 1):
        held = {pixel_sha256(Path(i)) for i, f in assigned.items() if f == fold}
        learned = {
            pixel_sha256(r.image) for r in discover_patches(student / f"fold-{fold}-patches")
        }
        assert held and not held & learned  # neither its real rows nor its teacher's
        made = json.loads((student / f"fold-{fold}-patches" / "completion.json").read_text())
        assert made["settings"]["tau_hi"] == 0.9
    other = [*args[:-3], "0.2,0.8", *args[-2:], "--resume"]
    assert cli_main(other) == 2  # other settings: never pooled


@pytest.mark.usefixtures("one_thread")
def test_evaluate_says_when_it_scores_patches_the_model_learned_from(patches, tmp_path, capsys):
    from omniseg.evaluation.evaluate import evaluate_path

    cfg = _stage_yaml(tmp_path, "s.yaml", 1, 1)
    run = tmp_path / "run"
    args = ["train", "--data", str(patches), "--out", str(run), "--config", str(cfg),
            "--val-split", "val"]  # fmt: skip
    assert cli_main(args) == 0
    model = run / "model"
    data = json.loads((model / "config.json").read_text())["training"]["data"]
    assert data["rows"] == len(data["image_sha256"]) == 6  # 9 patches, a val patch per task
    assert evaluate_path(patches, model).summary["seen_in_training"] == {"seen": 6, "of": 9}
    assert cli_main(["evaluate", str(patches), "--weights", str(model)]) == 0
    assert (
        "WARNING: 6 of these 9 patches were in this model's training data"
        in capsys.readouterr().out
    )
    # the out-of-fold report of a cross-validation prints through evaluate too
    assert cli_main(["evaluate", str(tmp_path / "nowhere"), "--crossval"]) == 2


def test_cli_complete_labels_writes_once_and_overwrites_only_its_own(patches, tmp_path, capsys):
    from omniseg.models import create_model, save_pretrained

    teacher = save_pretrained(create_model("omniseg-tiny"), tmp_path / "teacher")
    out = tmp_path / "done"
    args = ["complete-labels", str(patches), "--teacher", str(teacher), "--teacher", str(teacher),
            "-o", str(out), "--confidence", "0.1,0.9"]  # fmt: skip
    assert cli_main(args) == 0
    record = json.loads((out / "completion.json").read_text())
    assert len(record["teachers"]) == 2 and record["settings"]["tau_lo"] == 0.1
    assert len(discover_patches(out)) > len(discover_patches(patches))
    assert cli_main(args) == 2 and "--overwrite" in capsys.readouterr().err
    assert cli_main([*args, "--overwrite"]) == 0
    (out / "notes.txt").write_text("mine")
    assert cli_main([*args, "--overwrite"]) == 2  # a folder with files of the user's: never
    assert (out / "notes.txt").is_file()


def test_completion_can_be_limited_to_some_tasks():
    only_glomeruli = CompletionSettings(tasks=(tissue("capsule").id, tissue("tuft").id))
    dt = PatchRecord(Path("/a.png"), Path("/m"), 0, 1, "he")
    assert {tissue(t).name for t in targets_for(dt, only_glomeruli)} == {"capsule", "tuft"}


def test_recipe_digest_ignores_a_later_key_at_its_default():
    """Folds trained before finetune.train_parts existed pool with folds trained after it, as
    long as it keeps the old behaviour ("all"); another value is another recipe."""
    from omniseg.evaluation.crossval import recipe_digest
    from omniseg.training.config import TrainConfig
    from omniseg.training.config_loading import replace_config

    base = TrainConfig()
    assert recipe_digest([base]) == recipe_digest(
        [replace_config(base, {"finetune.train_parts": "all"})]
    )
    no_decay = replace_config(base, {"optim.weight_decay": 0.0})  # task mode needs none
    task = replace_config(no_decay, {"finetune.train_parts": "task"})
    assert recipe_digest([no_decay]) != recipe_digest([task])
