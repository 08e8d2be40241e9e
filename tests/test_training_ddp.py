"""DDP: 2 gloo processes under torchrun == 1 process with the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from omniseg.models import create_model
from omniseg.training import load_train_config, train
from tests._training_synth import make_patch_set, one_thread  # noqa: F401 - fixture

TOLERANCE = 1e-4  # max |w_ddp - w_single| after 3 AdamW steps (all-reduce sums in another order)


def _overrides(manifest: Path, out: Path, batch: int) -> dict:
    return {
        "data.path": str(manifest), "run.out": str(out), "run.model": "omniseg-tiny",
        "data.patch_size": 32, "data.batch_size": batch, "run.max_steps": 3,
        "run.progress": False, "run.precision": "fp32", "data.val_split": "none",
        "semi.enabled": False, "run.device": "cpu", "optim.lr": 0.01,
        "optim.warmup_fraction": 0.0,
    }  # fmt: skip


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_two_process_gloo_matches_single_process(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.is_file():
        pytest.skip("torchrun not installed beside the interpreter")
    manifest = make_patch_set(tmp_path / "p", per_task=4)
    train(load_train_config(None, _overrides(manifest, tmp_path / "single", 4)))
    script = tmp_path / "ddp_train.py"
    script.write_text(
        textwrap.dedent(f"""
        import torch
        torch.set_num_threads(1)
        from omniseg.training import load_train_config, train
        train(load_train_config(None, {_overrides(manifest, tmp_path / "ddp", 2)!r}))
    """)
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", str(script)],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = torch.load(tmp_path / "single/last/state.pt", weights_only=True)
    b = torch.load(tmp_path / "ddp/last/state.pt", weights_only=True)
    assert a["step"] == b["step"] == 3
    worst = max((a["model"][k] - b["model"][k]).abs().max().item() for k in a["model"])
    assert worst < TOLERANCE, worst
    torch.manual_seed(1234)  # the run's seed: rebuild the initial weights
    initial = create_model("omniseg-tiny").state_dict()
    moved = max((a["model"][k] - initial[k]).abs().max().item() for k in initial)
    assert moved > 50 * TOLERANCE  # training moved the weights far more than the tolerance
