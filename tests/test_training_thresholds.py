"""Per-task thresholds chosen on rows held back from the train split, never on val."""

from __future__ import annotations

import json

import pytest

import omniseg.training.fit as trainer
import omniseg.training.thresholds as thresholds_module
from omniseg.cli.main import main as cli_main
from omniseg.data import discover_patches, select_split
from omniseg.errors import OmnisegError
from omniseg.training import load_train_config, train
from omniseg.training.holdout import hold_back
from tests._training_synth import FAST as SYNTH_FAST
from tests._training_synth import ONE_STAGE, make_patch_set, one_thread  # noqa: F401 - fixture

FAST = {**SYNTH_FAST, "run.max_steps": 2}
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
    _, expected_held = hold_back(pool, 0.25, cfg.data.split_seed)
    assert _names(spy.tuned) == _names(expected_held) and spy.tuned
    assert not set(_names(spy.trained)) & set(_names(spy.tuned))
    assert sorted(_names(spy.trained) + _names(spy.tuned)) == _names(pool)
    info = json.loads((result.model_dir / "config.json").read_text())["training"]
    assert info["threshold_source"] == "holdout"
    assert sum(t["n"] for t in info["threshold_search"].values()) == len(expected_held)
    assert info["threshold_rows"] == len(expected_held) == len(info["threshold_images"])
    assert all(name.count("/") == 2 for name in info["threshold_images"])


def test_rerunning_a_finished_run_tunes_from_neutral_again(manifest, tmp_path, monkeypatch):
    seen = []
    real = thresholds_module.tune_thresholds

    def tune(model, records, **kwargs):
        seen.append(model.inference.thresholds)
        return (0.3,) * 6, real(model, records, **kwargs)[1]

    monkeypatch.setattr(thresholds_module, "tune_thresholds", tune)
    cfg = config(manifest, tmp_path / "run", **{"data.threshold_holdout": 0.25})
    train(cfg)
    result = train(cfg, resume=True)  # a finished run: re-saves and re-tunes its final model
    assert seen == [(0.5,) * 6, (0.5,) * 6]
    assert (
        json.loads((result.model_dir / "config.json").read_text())["inference"]["thresholds"]
        == [0.3] * 6
    )


def test_resume_refuses_a_changed_holdout(manifest, tmp_path):
    train(config(manifest, tmp_path / "run", **{"data.threshold_holdout": 0.25}))
    changed = config(manifest, tmp_path / "run", **{"data.threshold_holdout": 0.5})
    with pytest.raises(OmnisegError, match="data.threshold_holdout"):
        train(changed, resume=True)


def test_nothing_to_hold_back_is_an_error_not_a_silent_fallback_to_val(tmp_path):
    one_per_group = make_patch_set(tmp_path / "p", per_task=2)  # 1 train row per task and stain
    with pytest.raises(OmnisegError, match="no row could be held back"):
        train(config(one_per_group, tmp_path / "run", **{"data.threshold_holdout": 0.25}))
    assert not (tmp_path / "run").exists()


def test_a_task_without_held_back_rows_is_named_in_a_warning(tmp_path):
    # task 0 keeps 2 train rows per stain (one can be held back); task 2 one (none can)
    manifest = make_patch_set(tmp_path / "p", per_task=5)
    lines = manifest.read_text().splitlines()
    dropped = ("2_0_t/he/im_2.png", "2_0_t/pas/im_3.png")
    manifest.write_text("\n".join(x for x in lines if not x.startswith(dropped)) + "\n")
    with pytest.warns(UserWarning, match="no held-back rows for capsule"):
        result = train(config(manifest, tmp_path / "run", **{"data.threshold_holdout": 0.25}))
    info = json.loads((result.model_dir / "config.json").read_text())["training"]
    assert set(info["threshold_search"]) == {"dt"}


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
    out, no_tuning = tmp_path / "run", tmp_path / "no-tuning.yaml"
    no_tuning.write_text("run:\n  tune_thresholds: false\n")
    args = ["train", "--config", str(no_tuning), "--data", str(manifest), "--out", str(out),
            "--model", "omniseg-tiny", "--max-steps", "1", "--batch-size", "2", "--patch-size",
            "32", "--no-progress", "--precision", "fp32"]  # fmt: skip
    assert cli_main(args) == 0
    info = json.loads((out / "model" / "config.json").read_text())["training"]
    assert "threshold_source" not in info  # the config file turned tuning off
    assert (
        cli_main(
            [
                *args,
                "--overwrite",
                "--set",
                "data.threshold_holdout=0.25",
                "--set",
                "run.tune_thresholds=true",
            ]
        )
        == 0
    )
    info = json.loads((out / "model" / "config.json").read_text())["training"]
    assert info["threshold_source"] == "holdout"


def test_a_fine_tuning_stage_with_another_seed_tunes_on_rows_no_stage_saw(manifest, tmp_path,
                                                                          monkeypatch):  # fmt: skip
    """The two-stage recipe: stage 2 (--init stage 1, fresh run.seed) must hold back the rows
    stage 1 held back, or its thresholds are chosen on rows stage 1 learned from."""
    spy = Spy(monkeypatch)
    holdout = {"data.threshold_holdout": 0.25}
    first = train(config(manifest, tmp_path / "stage1", **holdout, **{"run.seed": 11}))
    stage1_trained, stage1_held = _names(spy.trained), _names(spy.tuned)
    spy.trained, spy.tuned = [], []
    second = train(config(manifest, tmp_path / "stage2", **holdout,
                          **{"run.seed": 4321, "run.init": str(first.model_dir)}))  # fmt: skip
    info = json.loads((second.model_dir / "config.json").read_text())["training"]
    assert info["threshold_source"] == "holdout"
    assert _names(spy.tuned) == stage1_held and not set(stage1_held) & set(stage1_trained)
    assert _names(spy.trained) == stage1_trained
    # The split has its own seed: another data.split_seed holds back other rows.
    pool = select_split(discover_patches(manifest), "train")
    assert _names(hold_back(pool, 0.25, 99)[1]) != stage1_held


def test_split_seed_flag_is_recorded_apart_from_the_run_seed(manifest, tmp_path):
    out = tmp_path / "run"
    args = ["train", *ONE_STAGE, "--data", str(manifest), "--out", str(out), "--model", "omniseg-tiny",
            "--max-steps", "1", "--batch-size", "2", "--patch-size", "32", "--no-progress",
            "--precision", "fp32", "--set", "data.split_seed=7", "--seed", "8"]  # fmt: skip
    assert cli_main(args) == 0
    saved = load_train_config(out / "config.yaml")
    assert saved.data.split_seed == 7 and saved.run.seed == 8


def test_a_run_saved_before_split_seed_resumes_with_its_own_seed(manifest, tmp_path, capsys):
    """Its config.yaml has no data.split_seed: its rows were held back by run.seed."""
    out, saved, empty = tmp_path / "old", tmp_path / "old" / "config.yaml", tmp_path / "e.yaml"
    settings = ["--data", str(manifest), "--model", "omniseg-tiny", "--batch-size", "2",
                "--patch-size", "32", "--no-progress", "--precision", "fp32",
                "--set", "data.threshold_holdout=0.25", "--set", "run.tune_thresholds=true",
                "--seed", "4321"]  # fmt: skip
    first = ["train", *ONE_STAGE, "--out", str(out), "--max-steps", "1", *settings,
             "--set", "data.split_seed=4321"]  # fmt: skip
    assert cli_main(first) == 0
    legacy = saved.read_text().replace("  split_seed: 4321\n", "")
    assert "split_seed" not in legacy
    saved.write_text(legacy)
    assert cli_main(["train", "--out", str(out), "--resume", "--max-steps", "2"]) == 0
    assert load_train_config(saved).data.split_seed == 4321  # rewritten with the seed it used
    saved.write_text(legacy)
    empty.write_text("{}\n")  # a config file without split_seed: the new default, 1234
    resumed = ["train", "--config", str(empty), "--out", str(out), "--resume", "--max-steps", "2"]
    assert cli_main([*resumed, *settings]) == 2
    assert "data.split_seed: 4321 -> 1234" in capsys.readouterr().err
