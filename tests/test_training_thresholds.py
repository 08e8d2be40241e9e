"""Per-task thresholds chosen on rows held back from the train split, never on val."""

from __future__ import annotations

import json

import pytest

import omniseg.training.thresholds as thresholds_module
import omniseg.training.trainer as trainer
from omniseg.cli.main import main as cli_main
from omniseg.data import discover_patches, select_split
from omniseg.errors import OmnisegError
from omniseg.training import load_train_config, train
from omniseg.training.trainer import hold_back
from tests._training_synth import make_patch_set, one_thread  # noqa: F401 - fixture

FAST = {
    "run.model": "omniseg-tiny",
    "data.patch_size": 32,
    "data.batch_size": 2,
    "run.progress": False,
    "run.precision": "fp32",
    "run.channels_last": False,
    "augment.enabled": False,
    "run.max_steps": 2,
}
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    # per task: 6 train rows (3 he + 3 pas) + 1 val row
    return make_patch_set(tmp_path_factory.mktemp("patches"), per_task=7)


def config(manifest, out, **extra):
    return load_train_config(None, {**FAST, "data.path": str(manifest), "run.out": str(out),
                                    **extra})  # fmt: skip


def _names(records):
    return sorted(str(r.image) for r in records)


def test_hold_back_is_stratified_disjoint_and_seeded(manifest):
    rows = select_split(discover_patches(manifest), "train")
    fit, held = hold_back(rows, 0.25, seed=7)
    assert sorted(_names(fit) + _names(held)) == _names(rows)
    assert not set(_names(fit)) & set(_names(held))
    groups = {(r.task_id, r.stain) for r in rows}
    assert len(groups) == 4
    for group in groups:  # 3 rows per group: round(0.75) = 1 held back, 2 kept
        assert sum((r.task_id, r.stain) == group for r in held) == 1
        assert sum((r.task_id, r.stain) == group for r in fit) == 2
    assert all(r.split == "train" for r in held)  # rows keep their own split
    again_fit, again_held = hold_back(rows, 0.25, seed=7)
    assert _names(again_held) == _names(held) and _names(again_fit) == _names(fit)
    assert hold_back(rows, 0.0, seed=7) == (rows, [])


class Spy:
    """Record which rows training and threshold tuning were given."""

    def __init__(self, monkeypatch):
        self.trained, self.tuned = [], []
        real_dataset, real_tune = trainer.PatchDataset, thresholds_module.tune_thresholds

        def dataset(records, *args, **kwargs):
            self.trained = list(records)
            return real_dataset(records, *args, **kwargs)

        def tune(model, records, **kwargs):
            self.tuned = list(records)
            return real_tune(model, records, **kwargs)

        monkeypatch.setattr(trainer, "PatchDataset", dataset)
        monkeypatch.setattr(thresholds_module, "tune_thresholds", tune)


@pytest.mark.parametrize("val_split", ["val", "none"])
def test_thresholds_are_tuned_on_held_back_rows_never_on_val(manifest, tmp_path, monkeypatch,
                                                            val_split):  # fmt: skip
    spy = Spy(monkeypatch)
    cfg = config(manifest, tmp_path / "run", **{"data.threshold_holdout": 0.25,
                                                "data.val_split": val_split})  # fmt: skip
    result = train(cfg)
    records = discover_patches(manifest)
    pool = select_split(records, "train") if val_split == "val" else records
    _, expected_held = hold_back(pool, 0.25, cfg.run.seed)
    assert _names(spy.tuned) == _names(expected_held) and spy.tuned
    assert not set(_names(spy.trained)) & set(_names(spy.tuned))
    assert sorted(_names(spy.trained) + _names(spy.tuned)) == _names(pool)
    info = json.loads((result.model_dir / "config.json").read_text())["training"]
    assert info["threshold_source"] == "holdout"
    assert sum(t["n"] for t in info["threshold_search"].values()) == len(expected_held)


def test_without_holdout_thresholds_are_tuned_on_val_as_before(manifest, tmp_path, monkeypatch):
    spy = Spy(monkeypatch)
    result = train(config(manifest, tmp_path / "run"))
    val = select_split(discover_patches(manifest), "val")
    assert _names(spy.tuned) == _names(val)
    assert _names(spy.trained) == _names(select_split(discover_patches(manifest), "train"))
    info = json.loads((result.model_dir / "config.json").read_text())["training"]
    assert info["threshold_source"] == "val"


def test_bad_holdout_settings_are_clear_errors(manifest, tmp_path):
    with pytest.raises(OmnisegError, match="threshold_holdout=1.0: must lie in"):
        config(manifest, tmp_path / "a", **{"data.threshold_holdout": 1.0})
    with pytest.raises(OmnisegError, match="run.tune_thresholds: true"):
        config(manifest, tmp_path / "b", **{"data.threshold_holdout": 0.3,
                                            "run.tune_thresholds": False})  # fmt: skip


def test_cli_threshold_holdout_turns_tuning_on(manifest, tmp_path):
    out = tmp_path / "run"
    args = ["train", "--data", str(manifest), "--out", str(out), "--model", "omniseg-tiny",
            "--max-steps", "1", "--batch-size", "2", "--patch-size", "32", "--no-progress",
            "--precision", "fp32", "--threshold-holdout", "0.25"]  # fmt: skip
    assert cli_main(args) == 0
    info = json.loads((out / "model" / "config.json").read_text())["training"]
    assert info["threshold_source"] == "holdout"
