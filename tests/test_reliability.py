"""No crash below us: the oneDNN AVX-512 strided 1x1 conv, and every registered model run through
the real CLI in a subprocess (a signal there fails the test instead of killing pytest)."""

from __future__ import annotations

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

from omniseg.models import create_model
from omniseg.models.blocks import SubsampledPointwiseConv
from omniseg.models.registry import list_models
from tests._training_synth import make_patch_set


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
    train = ["train", "--data", str(manifest), "--out", str(run), "--model", name]
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
            "--quiet", "--batch-size", "1", "--workers", "0"]  # fmt: skip
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
