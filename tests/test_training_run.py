"""End-to-end training runs on tiny synthetic data: outputs, refusal, resume, overfitting, CLI."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap

import pytest
import torch
import yaml

from omniseg.cli.main import main as cli_main
from omniseg.data import discover_patches, load_pair
from omniseg.errors import OmnisegError
from omniseg.models import create_model, load_pretrained
from omniseg.training import load_train_config, train
from omniseg.training.losses import hard_dice
from tests._training_synth import FAST, ONE_STAGE, make_patch_set, one_thread  # noqa: F401 - fixture

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    # 3 train + 1 val patches per task: 3 batches of 2 per epoch
    return make_patch_set(tmp_path_factory.mktemp("patches"), per_task=4)


def config(manifest, out, **extra):
    return load_train_config(
        None, {**FAST, "data.path": str(manifest), "run.out": str(out), **extra}
    )


def test_max_steps_run_writes_loadable_model_and_last(manifest, tmp_path):
    cfg = config(manifest, tmp_path / "run", **{"run.max_steps": 2})
    result = train(cfg)
    assert result.steps == 2
    model = load_pretrained(result.model_dir)
    assert model.inference.patch_size == 32
    assert model.config.architecture == "omniseg-tiny"
    assert result.best_metric is not None  # the manifest has a val split
    state = torch.load(tmp_path / "run" / "last" / "state.pt", weights_only=True)
    assert state["step"] == 2 and state["epoch"] == 0
    assert {"model", "teacher", "optimizer", "scheduler", "rng", "sampler"} <= set(state)
    folder_config = json.loads((result.model_dir / "config.json").read_text())
    assert len(folder_config["inference"]["thresholds"]) == 6
    assert set(folder_config["training"]["threshold_search"]) == {"dt", "capsule"}
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["run"]["max_steps"] == 2 and saved["data"]["patch_size"] == 32


@pytest.mark.parametrize("select_best", [True, False])
def test_select_best_false_saves_the_final_weights_not_the_best_on_val(
    manifest, tmp_path, monkeypatch, select_best
):
    import omniseg.training.fit as fit

    scores = iter([0.9, 0.1, 0.1])  # the first validation (step 3) is the best one
    monkeypatch.setattr(fit, "validation_score", lambda *args: (next(scores), {}))
    extra = {"run.max_steps": 6, "run.val_every_epochs": 1, "run.tune_thresholds": False}
    result = train(config(manifest, tmp_path / "run", **extra, **{"run.select_best": select_best}))
    info = json.loads((result.model_dir / "config.json").read_text())["training"]
    assert result.best_metric == 0.9 and result.best_step == 3
    if select_best:
        assert info["step"] == 3
        return
    final = torch.load(tmp_path / "run" / "last" / "state.pt", weights_only=True)["model"]
    saved = load_pretrained(result.model_dir).state_dict()
    for key, value in final.items():
        assert torch.equal(saved[key].float(), value.float()), key
    assert info["step"] == 6


def test_existing_run_dir_is_refused_without_resume_or_overwrite(manifest, tmp_path):
    cfg = config(manifest, tmp_path / "run", **{"run.max_steps": 1, "data.val_split": "none"})
    train(cfg)
    with pytest.raises(OmnisegError, match="--resume.*--overwrite"):
        train(cfg)
    train(cfg, overwrite=True)  # replaces it
    unrelated = tmp_path / "not-a-run"
    unrelated.mkdir()
    (unrelated / "precious.txt").write_text("x")
    with pytest.raises(OmnisegError, match="not an omniseg run folder"):
        train(config(manifest, unrelated, **{"run.max_steps": 1}), overwrite=True)
    assert (unrelated / "precious.txt").is_file()


@pytest.mark.parametrize("semi", [False, True])
def test_resume_equals_uninterrupted(manifest, tmp_path, semi):
    extra = {"run.max_steps": 4, "semi.enabled": semi, "semi.rampup_fraction": 0.0,
             "data.val_split": "none", "augment.enabled": True}  # fmt: skip
    train(config(manifest, tmp_path / "a", **extra))

    def stop_at_two(step, metrics):
        if step == 2:
            raise KeyboardInterrupt

    cfg_b = config(manifest, tmp_path / "b", **extra)
    with pytest.raises(KeyboardInterrupt):
        train(cfg_b, callback=stop_at_two)
    assert torch.load(tmp_path / "b/last/state.pt", weights_only=True)["step"] == 2
    train(cfg_b, resume=True)
    a = torch.load(tmp_path / "a/last/state.pt", weights_only=True)
    b = torch.load(tmp_path / "b/last/state.pt", weights_only=True)
    assert b["step"] == 4
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    if semi:
        for key in a["teacher"]:
            assert torch.equal(a["teacher"][key], b["teacher"][key]), key


def test_loader_workers_do_not_change_the_result(manifest, tmp_path):
    extra = {"run.max_steps": 2, "data.val_split": "none", "augment.enabled": True}
    train(config(manifest, tmp_path / "a", **extra, **{"data.num_workers": 0}))
    train(config(manifest, tmp_path / "b", **extra, **{"data.num_workers": 2}))
    a = torch.load(tmp_path / "a/last/state.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b/last/state.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_from_periodic_checkpoint_after_hard_stop(manifest, tmp_path):
    extra = {"run.max_steps": 3, "data.val_split": "none", "run.checkpoint_minutes": 1e-9}
    train(config(manifest, tmp_path / "a", **extra))

    def crash(step, metrics):
        if step == 2:
            raise RuntimeError("power cut")  # no graceful save: the periodic one must suffice

    cfg = config(manifest, tmp_path / "b", **extra)
    with pytest.raises(RuntimeError):
        train(cfg, callback=crash)
    train(cfg, resume=True)
    a = torch.load(tmp_path / "a/last/state.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b/last/state.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_a_changed_configuration(manifest, tmp_path):
    cfg = config(manifest, tmp_path / "run", **{"run.max_steps": 1, "data.val_split": "none"})
    train(cfg)
    changed = config(manifest, tmp_path / "run", **{"run.max_steps": 2, "optim.lr": 0.5,
                                                    "data.val_split": "none"})  # fmt: skip
    with pytest.raises(OmnisegError, match="optim.lr"):
        train(changed, resume=True)


def test_tiny_model_overfits_four_patches(tmp_path):
    manifest = make_patch_set(tmp_path / "p", per_task=4, tasks=((0, 1),), with_split=False)
    cfg = config(manifest, tmp_path / "run", **{
        "run.max_steps": 60, "data.batch_size": 4, "data.val_split": "none", "optim.lr": 0.01,
        "optim.warmup_fraction": 0.0, "optim.schedule": "constant", "semi.enabled": False,
        "loss.edge_weight": 1.0,
    })  # fmt: skip
    train(cfg)
    model = load_pretrained(tmp_path / "run" / "model")
    records = discover_patches(manifest)
    pairs = [load_pair(r) for r in records]
    x = torch.stack([torch.from_numpy(i).permute(2, 0, 1).float() / 255 for i, _ in pairs])
    y = torch.stack([torch.from_numpy(m) for _, m in pairs])
    with torch.no_grad():
        logits = model(x, [r.task_id for r in records], [r.scale_id for r in records])
    assert float(hard_dice(logits, y).mean()) > 0.9


def test_init_model_thresholds_are_not_inherited(manifest, tmp_path):
    from omniseg.models import save_pretrained

    first = train(
        config(manifest, tmp_path / "a", **{"run.max_steps": 1, "data.val_split": "none"})
    )
    tuned = load_pretrained(first.model_dir)
    tuned.inference = dataclasses.replace(tuned.inference, thresholds=(0.3,) * 6)
    save_pretrained(tuned, tmp_path / "tuned")
    cfg = config(manifest, tmp_path / "b", **{"run.max_steps": 1, "data.val_split": "none",
                                              "run.init": str(tmp_path / "tuned")})  # fmt: skip
    second = load_pretrained(train(cfg).model_dir)
    assert second.inference.thresholds == (0.5,) * 6


def test_init_from_model_folder_and_missing_bundled_model(manifest, tmp_path, monkeypatch):
    first = train(
        config(manifest, tmp_path / "a", **{"run.max_steps": 1, "data.val_split": "none"})
    )
    cfg = config(manifest, tmp_path / "b", **{"run.max_steps": 1, "data.val_split": "none",
                                              "run.init": str(first.model_dir), "optim.lr": 0.0,
                                              "semi.enabled": False})  # fmt: skip
    second = train(cfg)
    a, b = load_pretrained(first.model_dir), load_pretrained(second.model_dir)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name  # lr 0: fine-tuning kept the initial weights
    import omniseg.models.bundled as bundled

    monkeypatch.setattr(bundled, "default_model_dir", lambda: None)
    with pytest.raises(OmnisegError, match="--init default"):
        train(config(manifest, tmp_path / "c", **{"run.max_steps": 1, "run.init": "default"}))


def test_split_is_made_when_data_have_none(tmp_path):
    manifest = make_patch_set(tmp_path / "p", per_task=5, with_split=False)
    from omniseg.training.trainer import split_records

    cfg = config(manifest, tmp_path / "run", **{"data.val_fraction": 0.4})
    train_records, val_records = split_records(cfg)
    assert len(train_records) + len(val_records) == 10
    assert {r.task_id for r in val_records} == {0, 2}
    assert not {r.image for r in train_records} & {r.image for r in val_records}
    # The split follows data.split_seed, not run.seed (a fine-tuning stage's fresh seed).
    reseeded = config(manifest, tmp_path / "run", **{"data.val_fraction": 0.4, "run.seed": 5})
    assert split_records(reseeded) == (train_records, val_records)
    moved = [config(manifest, tmp_path / "run", **{"data.val_fraction": 0.4,
                                                   "data.split_seed": seed}) for seed in range(5)]  # fmt: skip
    assert any(split_records(c)[1] != val_records for c in moved)


def test_cli_train_runs_and_resumes(manifest, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", *ONE_STAGE, "--data", str(manifest), "--out", str(out), "--model", "omniseg-tiny",
            "--max-steps", "1", "--batch-size", "2", "--patch-size", "32", "--no-progress",
            "--val-split", "none", "--precision", "fp32"]  # fmt: skip
    assert cli_main(args) == 0
    assert (out / "model" / "config.json").is_file()
    assert cli_main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    # --resume needs only --out (settings come from RUN_DIR/config.yaml); extend the run
    assert cli_main(["train", "--out", str(out), "--resume", "--max-steps", "2"]) == 0
    assert torch.load(out / "last" / "state.pt", weights_only=True)["step"] == 2


def test_head_init_setting_reaches_the_freshly_built_model(manifest, tmp_path):
    """run.head_init picks the start of the generated heads (the ablation of the dead-head fix)."""
    from omniseg.training.trainer import build_model

    for init in ("default", "head"):
        torch.manual_seed(0)
        built = build_model(config(manifest, tmp_path / init, **{"run.head_init": init}))
        assert built.config.head_init == init
        torch.manual_seed(0)
        expected = create_model("omniseg-tiny", head_init=init)
        bias = built.head_generator.linear.bias
        assert torch.equal(bias, expected.head_generator.linear.bias)
    with pytest.raises(OmnisegError, match="run.head_init"):
        config(manifest, tmp_path, **{"run.head_init": "zeros"})


def test_bad_config_values_are_clear_errors(manifest, tmp_path):
    with pytest.raises(OmnisegError, match="optim.name"):
        config(manifest, tmp_path, **{"optim.name": "adam9"})
    with pytest.raises(OmnisegError, match="unknown key"):
        config(manifest, tmp_path, **{"optim.learning_rate": 1})
    bad = tmp_path / "c.yaml"
    bad.write_text("data: [1, 2]\n")
    with pytest.raises(OmnisegError, match="c.yaml"):
        load_train_config(bad)
    with pytest.raises(OmnisegError, match="patch_size"):
        train(config(manifest, tmp_path / "r", **{"data.patch_size": 36, "run.max_steps": 1}))
    assert not (tmp_path / "r").exists()  # no partial output for a bad configuration
    with pytest.raises(OmnisegError, match="not found"):
        train(config(tmp_path / "missing.csv", tmp_path / "r2", **{"run.max_steps": 1}))
    assert not (tmp_path / "r2").exists()


def test_training_runs_without_slide_io_packages(manifest, tmp_path):
    """A bare GPU box may lack openslide/tifffile/zarr/shapely/cv2: training must not need them."""
    blocked = ("openslide", "tifffile", "zarr", "shapely", "cv2")
    code = textwrap.dedent(f"""
        import sys
        for name in {blocked!r}:
            sys.modules[name] = None  # any import of it now raises ImportError
        import torch
        torch.set_num_threads(1)
        from omniseg.training import load_train_config, train
        overrides = {{**{FAST!r}, "data.path": {str(manifest)!r}, "run.out": {str(tmp_path / "r")!r},
                     "run.max_steps": 1}}
        result = train(load_train_config(None, overrides))
        assert result.best_metric is not None  # validation ran too
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("ok")


def test_sigterm_saves_last_before_stopping(manifest, tmp_path):
    import os
    import signal

    cfg = config(manifest, tmp_path / "run", **{"run.max_steps": 5, "data.val_split": "none"})

    def terminate_at_two(step, metrics):
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, callback=terminate_at_two)
    assert signal.getsignal(signal.SIGTERM) == before  # handler restored
    assert torch.load(tmp_path / "run/last/state.pt", weights_only=True)["step"] == 2
    assert train(cfg, resume=True).steps == 5
