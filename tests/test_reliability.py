"""No crash below us: the oneDNN AVX-512 strided 1x1 conv, and every registered model run through
the real CLI in a subprocess (a signal there fails the test instead of killing pytest)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from torch import nn

from omniseg.data.synthetic import synthetic_tissue, write_tiff
from omniseg.models import create_model
from omniseg.models.blocks import SubsampledPointwiseConv
from omniseg.models.registry import list_models
from tests._training_synth import ONE_STAGE, make_patch_set


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(("cin", "size"), [(8, 32), (12, 33), (24, 17)])
def test_subsampled_shortcut_equals_the_strided_conv_with_gradients(channels_last, cin, size):
    """The rewrite runs everywhere (also where the CPU lacks AVX-512, like most CI machines)."""
    torch.manual_seed(0)
    strided = nn.Conv2d(cin, 16, 1, stride=2, bias=False).double()
    rewritten = SubsampledPointwiseConv(cin, 16, 2).double()
    rewritten.load_state_dict(strided.state_dict())
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(3, cin, size, size, dtype=torch.float64).contiguous(memory_format=fmt)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = strided(xa), rewritten(xb)
    torch.testing.assert_close(ya, yb)
    (ya**2).sum().backward()
    (yb**2).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad)
    torch.testing.assert_close(strided.weight.grad, rewritten.weight.grad)


@pytest.mark.parametrize("name", list_models())
def test_no_registered_model_has_a_strided_pointwise_conv(name):
    """The crashing kernel is a 1x1 conv with stride > 1: no model may build one, at any width."""
    model = create_model(name, **({"pretrained_encoder": False} if "lite0" in name else {}))
    for module_name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and not isinstance(module, SubsampledPointwiseConv):
            strided_pointwise = module.kernel_size == (1, 1) and max(module.stride) > 1
            assert not strided_pointwise, f"{name}: {module_name} is a strided 1x1 conv"


def _cli(args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "omniseg", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode < 0:  # killed by a signal (SIGSEGV, SIGABRT from a double free, ...)
        pytest.fail(
            f"omniseg {args[0]} died of {signal.Signals(-proc.returncode).name}:\n"
            f"{proc.stderr[-3000:]}"
        )
    assert proc.returncode == 0, f"omniseg {' '.join(args)} -> {proc.returncode}:\n{proc.stderr}"
    return proc


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models())
def test_train_segment_evaluate_every_registered_model_in_a_subprocess(tmp_path, name):
    """`omniseg train` with the CLI's defaults (channels_last, precision auto, AdamW, ...) for 2
    steps, then `segment` and `evaluate` with the result. Full-size models get smaller batches and
    patches to keep the suite fast; the tiny ones (whose shortcuts crashed) run the defaults."""
    manifest = make_patch_set(tmp_path / "data", size=256, per_task=2)
    run = tmp_path / "run"
    train = ["train", *ONE_STAGE, "--data", str(manifest), "--out", str(run), "--model", name]
    train += ["--max-steps", "2", "--no-progress"]
    if "tiny" not in name:
        train += ["--batch-size", "2", "--patch-size", "64"]
    _cli(train, tmp_path)
    model_dir = run / "model"
    assert (model_dir / "model.safetensors").is_file()
    slide = tmp_path / "s.tif"
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
    tifffile.imwrite(slide, image, resolution=(1e4, 1e4), resolutionunit="CENTIMETER")
    _cli(["segment", str(slide), "-o", str(tmp_path / "seg"), "--weights", str(model_dir),
          "--tasks", "dt,pt", "--quiet"], tmp_path)  # fmt: skip
    assert (tmp_path / "seg" / "s" / "summary.json").is_file()
    _cli(["evaluate", str(manifest), "--weights", str(model_dir), "--json",
          str(tmp_path / "e.json")], tmp_path)  # fmt: skip
    assert (tmp_path / "e.json").is_file()


def _wait_for(path: Path, proc: subprocess.Popen, seconds: float = 120) -> None:
    import time

    deadline = time.monotonic() + seconds
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{path} never appeared (exit {proc.returncode})")
        time.sleep(0.05)


INTERRUPTED_IN_ZARR = """
import asyncio, os, signal, sys, threading
import omniseg.cli.app
from omniseg.cli.main import main
from zarr.core.sync import sync

def app(args, prog_name, **kwargs):
    threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start()
    sync(asyncio.sleep(30))  # the main thread waits on zarr's I/O loop, as in a chunk read

omniseg.cli.app.app = app
sys.exit(main(["segment", "s.tif", "-o", "out"]))
"""


def test_an_interrupt_inside_a_zarr_call_still_ends_with_the_resume_command(tmp_path):
    """SIGTERM landing while zarr waits on its event loop left that task pending, and at exit
    asyncio printed 'Task was destroyed but it is pending!' after the resume command."""
    proc = subprocess.run(
        [sys.executable, "-c", INTERRUPTED_IN_ZARR], cwd=tmp_path, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].strip().endswith("--resume"), proc.stderr
    assert "Task was destroyed" not in proc.stderr


@pytest.mark.slow
def test_sigterm_during_segment_prints_the_resume_command_and_resume_finishes_it(tmp_path):
    from omniseg.models import save_pretrained

    torch.manual_seed(0)
    weights = tmp_path / "m"
    save_pretrained(create_model("omniseg-tiny"), weights)
    slide = tmp_path / "s.tif"
    image = np.random.default_rng(0).integers(0, 255, (600, 800, 3), dtype=np.uint8)
    tifffile.imwrite(slide, image, resolution=(4e4, 4e4), resolutionunit="CENTIMETER")
    args = ["segment", str(slide), "-o", str(tmp_path / "out"), "--weights", str(weights),
            "--quiet", "--batch-size", "1", "--reader-threads", "0"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "omniseg", *args], env=env, stderr=subprocess.PIPE, text=True
    )
    _wait_for(tmp_path / "out" / "s" / ".work" / "work.zarr", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1].strip().endswith("--resume")
    assert not (tmp_path / "out" / "s" / "summary.json").exists()
    _cli([*args, "--resume"], tmp_path)
    _cli([*args[:3], str(tmp_path / "ref"), *args[4:]], tmp_path)
    for name in ("labels.ome.tif", "objects.geojson", "objects.csv"):
        ours = (tmp_path / "out" / "s" / name).read_bytes()
        assert ours == (tmp_path / "ref" / "s" / name).read_bytes(), name


@pytest.mark.slow
@pytest.mark.parametrize("after_s", [0.5, 2.0, 4.0])
def test_kill_9_during_evaluate_never_leaves_a_partial_report(tmp_path, after_s):
    import time

    from omniseg.models import save_pretrained

    manifest = make_patch_set(tmp_path / "data", size=128, per_task=6)
    weights = tmp_path / "m"
    save_pretrained(create_model("omniseg-tiny"), weights)
    report = tmp_path / "e.json"
    args = ["evaluate", str(manifest), "--weights", str(weights), "--json", str(report)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "omniseg", *args], env=env)
    time.sleep(after_s)
    proc.kill()
    proc.wait(timeout=60)
    killed = report.read_bytes() if report.exists() else None
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".e.")]  # no temp kept
    _cli(args, tmp_path)
    if killed is not None:  # it finished before the kill: the file is whole
        assert killed == report.read_bytes()


def _wait_until(predicate, proc: subprocess.Popen, timeout: float = 120) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"the point to kill at never came (exit {proc.poll()})")
        time.sleep(0.01)


def _checkpoint_step(run: Path) -> int:
    import json

    try:
        return json.loads((run / "last" / "meta.json").read_text())["step"]
    except (OSError, ValueError, KeyError):
        return -1


KILLED_TRAIN_STEPS = 24


@pytest.fixture(scope="module")
def uninterrupted_train(tmp_path_factory):
    """(train arguments, the uninterrupted run folder) shared by the kill -9 cases."""
    root = tmp_path_factory.mktemp("train-ref")
    manifest = make_patch_set(root / "data", size=64, per_task=3)
    args = ["train", *ONE_STAGE, "--data", str(manifest), "--model", "omniseg-tiny",
            "--max-steps", str(KILLED_TRAIN_STEPS), "--batch-size", "2", "--patch-size", "64",
            "--device", "cpu", "--val-split", "none", "--set", "data.num_workers=0", "--no-progress",
            "--set", "run.checkpoint_minutes=1e-9"]  # fmt: skip
    _cli([*args, "--out", str(root / "ref")], root)
    return args, root / "ref"


@pytest.mark.slow
@pytest.mark.parametrize("point", ["run folder created", "first checkpoint", "mid-run"])
def test_kill_9_during_train_then_resume_equals_the_uninterrupted_run(
    tmp_path, uninterrupted_train, point
):
    """SQLite's standard: whenever the process dies, the rerun loses nothing and gains nothing."""
    import csv

    args, ref = uninterrupted_train
    steps = KILLED_TRAIN_STEPS
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "omniseg", *args, "--out", str(run)], env=env)
    ready = {
        "run folder created": lambda: (run / "config.yaml").exists(),
        "first checkpoint": lambda: _checkpoint_step(run) >= 1,
        "mid-run": lambda: _checkpoint_step(run) >= steps // 2,
    }[point]
    _wait_until(ready, proc)
    proc.kill()
    assert proc.wait(timeout=60) == -signal.SIGKILL, "it finished before the kill: a wasted case"
    _cli([*args, "--out", str(run), "--resume"], tmp_path)
    assert (run / "model/model.safetensors").read_bytes() == (
        ref / "model/model.safetensors"
    ).read_bytes()
    ours, theirs = ((d / "model/config.json").read_text() for d in (run, ref))
    assert (
        ours.replace(str(run), str(ref)) == theirs
    )  # the run folder's own path is all that differs
    with open(run / "metrics.csv", newline="", encoding="utf-8") as fh:
        logged = [int(row["step"]) for row in csv.DictReader(fh)]
    assert logged == sorted(set(logged)) and logged[-1] == steps  # no duplicated or torn rows


@pytest.fixture
def small_disk(tmp_path):
    """A real 8 MB file system (tmpfs) that fills up: skipped where mounting is not allowed."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)],
                             capture_output=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip("mounting a small tmpfs needs root (CAP_SYS_ADMIN) on Linux")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(disk: Path, leave_bytes: int) -> Path:
    """A ballast file that leaves about `leave_bytes` free."""
    stats = os.statvfs(disk)
    ballast = disk / "ballast"
    with open(ballast, "wb") as fh:
        fh.write(b"\0" * max(stats.f_bavail * stats.f_frsize - leave_bytes, 0))
    return ballast


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "omniseg", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip


@pytest.mark.slow
def test_a_full_disk_during_segment_keeps_earlier_results_and_resumes_to_the_same_bytes(
    tmp_path, small_disk
):
    from omniseg.data.synthetic import pyramid, slide_array, write_svs
    from omniseg.models import save_pretrained

    for name, seed in (("a", 0), ("b", 1)):
        write_svs(tmp_path / f"{name}.svs", pyramid(slide_array(seed=seed)))
    save_pretrained(create_model("omniseg-tiny"), tmp_path / "m")
    common = ["--weights", "m", "--device", "cpu"]
    _cli(["segment", "b.svs", "-o", "ref", *common], tmp_path)
    _cli(["segment", "a.svs", "-o", "disk/out", *common], tmp_path)
    earlier = {p.name: p.read_bytes() for p in (small_disk / "out/a").iterdir() if p.is_file()}

    ballast = _fill(small_disk, 256 * 1024)
    full = _run(["segment", "b.svs", "-o", "disk/out", *common], tmp_path)
    assert full.returncode == 2, full.stderr
    error = full.stderr.strip().splitlines()[-1]
    assert "disk is full" in error and "--resume" in error and "Traceback" not in full.stderr
    now = {p.name: p.read_bytes() for p in (small_disk / "out/a").iterdir() if p.is_file()}
    assert now == earlier  # the finished result is untouched
    assert not list((small_disk / "out").rglob("*.tmp*"))  # no half-written file anywhere
    assert not (small_disk / "out/b/summary.json").exists()

    ballast.unlink()
    _cli(["segment", "b.svs", "-o", "disk/out", *common, "--resume"], tmp_path)
    for name in ("labels.ome.tif", "objects.geojson", "objects.csv", "overlay.png"):
        assert (small_disk / "out/b" / name).read_bytes() == (
            tmp_path / "ref/b" / name
        ).read_bytes()


@pytest.mark.slow
def test_a_full_disk_during_train_keeps_the_last_checkpoint_and_resumes(tmp_path, small_disk):
    manifest = make_patch_set(tmp_path / "data", size=64, per_task=3)
    args = ["train", *ONE_STAGE, "--data", str(manifest), "--model", "omniseg-tiny", "--max-steps", "4",
            "--batch-size", "2", "--patch-size", "64", "--device", "cpu", "--val-split", "none",
            "--set", "data.num_workers=0", "--no-progress", "--set", "run.checkpoint_minutes=1e-9"]  # fmt: skip
    _cli([*args, "--out", "ref"], tmp_path)
    checkpoint = (tmp_path / "ref/last/state.pt").stat().st_size
    run = small_disk / "run"
    ballast = _fill(small_disk, int(1.5 * checkpoint))  # room for one checkpoint, not a second
    full = _run([*args, "--out", str(run)], tmp_path)
    assert full.returncode == 2, full.stderr
    assert "disk is full" in full.stderr and "--resume" in full.stderr
    assert str(run / "last" / "state.pt") in full.stderr  # names the file, not a temp folder
    assert "Traceback" not in full.stderr
    assert _checkpoint_step(run) == 1  # step 1 survived the failed save of step 2
    assert not [p for p in run.iterdir() if p.name.startswith(".last")]  # no half-written state
    ballast.unlink()
    _cli([*args, "--out", str(run), "--resume"], tmp_path)
    ours = (run / "model/model.safetensors").read_bytes()
    assert ours == (tmp_path / "ref/model/model.safetensors").read_bytes()


@pytest.mark.parametrize("command", ["train", "extract"])
def test_a_read_only_parent_of_out_is_one_clear_line(tmp_path, monkeypatch, capsys, command):
    """Issue 36 point 8: /scratch/$USER writable, its parent not. The lock and staging folder
    live beside OUT, so this is said before any work (it was 'internal error: OSError 30')."""
    import errno
    import tempfile as real_tempfile

    from omniseg.cli.main import main

    parent = tmp_path / "readonly"
    parent.mkdir()

    def refuse(*args, dir=None, **kwargs):
        if dir is not None and Path(dir) == parent:
            raise OSError(errno.EROFS, "Read-only file system", str(dir))
        return real_tempfile.NamedTemporaryFile(*args, dir=dir, **kwargs)

    monkeypatch.setattr("omniseg.locks.tempfile.NamedTemporaryFile", refuse)
    manifest = make_patch_set(tmp_path / "data", size=64, per_task=2)
    out = parent / "run"
    if command == "train":
        args = ["train", *ONE_STAGE, "--data", str(manifest), "--out", str(out), "--model",
                "omniseg-tiny", "--max-steps", "1", "--quiet"]  # fmt: skip
    else:
        slide = tmp_path / "s.tif"
        write_tiff(slide, synthetic_tissue(64, 64), 0.25)
        annotations = tmp_path / "s.geojson"
        annotations.write_text('{"type": "FeatureCollection", "features": []}')
        args = ["extract", str(slide), "--annotations", str(annotations), "-o", str(out), "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not writable" in err and str(parent) in err
    assert "internal error" not in err and not out.exists()


@pytest.mark.parametrize("dtype", [torch.int8, torch.bool])
def test_weights_cast_to_integers_or_bool_are_refused(tmp_path, dtype):
    """Issue 36 point 10: int8 or bool weights loaded and predicted nothing."""
    from safetensors.torch import load_file, save_file

    from omniseg.errors import OmnisegError
    from omniseg.models import load_pretrained, save_pretrained

    folder = tmp_path / "m"
    save_pretrained(create_model("omniseg-tiny"), folder)
    weights = folder / "model.safetensors"
    tensors = load_file(str(weights))
    name = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[name] = tensors[name].to(dtype)
    save_file(tensors, str(weights))
    config = json.loads((folder / "config.json").read_text())
    del config["sha256"]  # a hand-made folder: loaded with --allow-unverified
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(OmnisegError, match=f"{name} is stored as .*not floating point"):
        load_pretrained(folder, verify=False)
