"""Dead-head check: hidden-unit activity of each task's generated head.

    .venv/bin/python scripts/head_health.py MODEL_DIR [MODEL_DIR ...] [--fresh omniseg] \
        [--data ../shared/data/kidney-patches] [--split val] [--json OUT]

MODEL_DIR is a model folder (e.g. runs/ablation/omniseg-no-semi/model or src/omniseg/weights/...);
``--fresh NAME`` adds untrained NAME models with both head initialisations (``default`` =
PyTorch's, as the original; ``head`` = ours) for comparison. Prints a markdown table: per task,
dead hidden units per layer / units, the share of active (unit, pixel) pairs, and the shares of
pixels predicted foreground (0 for a dead head) and labelled foreground.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from omniseg.data import discover_patches, select_split
from omniseg.evaluation.head_health import head_health
from omniseg.models import create_model, load_pretrained


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("models", nargs="*", type=Path)
    ap.add_argument("--fresh", action="append", default=[], help="untrained registry model")
    ap.add_argument("--data", default="../shared/data/kidney-patches")
    ap.add_argument("--split", default=None, help="train/val; default: all patches")
    ap.add_argument("--seed", type=int, default=0, help="init seed of --fresh models")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    records = select_split(discover_patches(args.data), args.split)
    models = {str(path): load_pretrained(path) for path in args.models}
    for name in args.fresh:
        for init in ("default", "head"):
            torch.manual_seed(args.seed)
            models[f"{name} untrained, head_init={init}"] = create_model(name, head_init=init)
    print("| model | task | dead units / layer | active (unit, pixel) | predicted fg | true fg |")
    print("|---|---|---|---|---|---|")
    report = {}
    for label, model in models.items():
        rows = head_health(model.eval(), records)
        report[label] = [r.to_dict() for r in rows]
        for r in rows:
            dead = " + ".join(f"{d}/{u}" for d, u in zip(r.dead, r.units, strict=True))
            active = " / ".join(f"{a:.2f}" for a in r.active_fraction)
            fg = f"{r.predicted_foreground:.3f} | {r.true_foreground:.3f}"
            print(f"| {label} | {r.task} | {dead} | {active} | {fg} |")
    if args.json:
        args.json.write_text(json.dumps({"split": args.split, "models": report}, indent=2) + "\n")


if __name__ == "__main__":
    main()
