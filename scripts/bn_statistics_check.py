"""Why omniseg-lite0 re-estimates its BatchNorm statistics: a measurement, printed as JSON.

For three ways of handling the encoder's BatchNorm, on real train patches: the mean |activation|
of each encoder feature map on one batch (ReLU6 saturates at 6), and the loss after fitting one
fixed batch of 4 patches (128 px, one per task) for STEPS AdamW steps (lr 1e-3, encoder 0.1x):
  imagenet_frozen   ImageNet statistics, kept frozen
  recalibrated      statistics re-estimated on every train patch (AdaBN), then frozen (default)
  batch_statistics  BatchNorm in training mode (statistics from each batch of 4)

    OMP_NUM_THREADS=2 .venv/bin/python scripts/bn_statistics_check.py [--steps 40] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from omniseg.data import discover_patches, load_pair, select_split
from omniseg.data.augment import AugmentConfig
from omniseg.data.dataset import PatchDataset
from omniseg.models import create_model
from omniseg.training.config import OptimConfig
from omniseg.training.finetune import recalibrate_norm_stats
from omniseg.training.losses import supervised_loss
from omniseg.training.optim import build_optimizer

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "kidney-patches"


def fixed_batch(records):
    picked = {}
    for r in records:
        picked.setdefault(r.task_id, r)
    chosen = [picked[t] for t in sorted(picked)][:4]
    xs, ms = [], []
    for r in chosen:
        img, m = load_pair(r)
        xs.append(torch.from_numpy(img[:128, :128]).permute(2, 0, 1).float() / 255)
        ms.append(torch.from_numpy(m[:128, :128]).float())
    tasks = torch.tensor([r.task_id for r in chosen])
    scales = torch.tensor([r.scale_id for r in chosen])
    return torch.stack(xs), torch.stack(ms), tasks, scales


def run(mode: str, records, batch, steps: int, seed: int) -> dict:
    torch.manual_seed(seed)
    model = create_model("omniseg-lite0")
    if mode == "recalibrated":
        ds = PatchDataset(records, 256, AugmentConfig(enabled=False), 0)
        chunks = [torch.stack([ds[i]["image"] for i in range(j, min(j + 8, len(ds)))])
                  for j in range(0, len(ds), 8)]  # fmt: skip
        recalibrate_norm_stats(model, chunks)
    model.frozen_norm_stats = mode != "batch_statistics"
    x, mask, tasks, scales = batch
    model.eval()
    with torch.no_grad():
        feats = model.backbone.encoder((x - 0.5) / 0.5)
    activation = [round(float(f.abs().mean()), 2) for f in feats]
    model.train()
    opt = build_optimizer(model, OptimConfig(lr=1e-3), 0.1)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = supervised_loss(model(x, tasks, scales), mask, edge_weight=1.2)
        loss.backward()
        opt.step()
        losses.append(round(float(loss.detach()), 4))
    return {"encoder_mean_abs_activation": activation, "loss_first": losses[0],
            "loss_last5_mean": round(sum(losses[-5:]) / 5, 4)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    records = select_split(discover_patches(args.data), "train")
    batch = fixed_batch(records)
    modes = ("imagenet_frozen", "recalibrated", "batch_statistics")
    out = {"steps": args.steps, "seed": args.seed, "threads": torch.get_num_threads(),
           "modes": {m: run(m, records, batch, args.steps, args.seed) for m in modes}}  # fmt: skip
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
