"""Copy a trained model folder into the package as the bundled default model (fp16 storage).

    .venv/bin/python scripts/bundle_default.py runs/default/model [--tta] [--out DIR]

The weights are stored in float16 (half the size) and loaded back in float32; the config keeps
the run's thresholds, patch size and training record, plus a SHA-256 checked on every load.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from omniseg.models import load_pretrained, save_pretrained
from omniseg.models.bundled import DEFAULT_MODEL_NAME

PACKAGE_WEIGHTS = Path(__file__).resolve().parents[1] / "src" / "omniseg" / "weights"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("--tta", action="store_true", help="make dihedral TTA the model's default")
    ap.add_argument(
        "--reset-thresholds",
        action="store_true",
        help="ship 0.5 for every task (use when the run tuned its thresholds on val)",
    )
    ap.add_argument(
        "--out",
        type=Path,
        default=PACKAGE_WEIGHTS / DEFAULT_MODEL_NAME,
        help="where to write (default: the package's bundled model; another folder is useful to "
        "compare a rerun with the shipped model in the same fp16 storage)",
    )
    args = ap.parse_args()
    side_folder = args.out.resolve() != (PACKAGE_WEIGHTS / DEFAULT_MODEL_NAME).resolve()
    if side_folder and args.out.exists() and not (args.out / "config.json").is_file():
        ap.error(f"{args.out}: exists and is not a model folder; choose another --out")
    model = load_pretrained(args.model_dir)
    model.inference = dataclasses.replace(model.inference, tta=args.tta)
    if args.reset_thresholds:
        neutral = (0.5,) * len(model.inference.thresholds)
        model.inference = dataclasses.replace(model.inference, thresholds=neutral)
    source = json.loads((args.model_dir / "config.json").read_text())
    extra = {k: source[k] for k in ("training",) if k in source}
    extra["name"] = (
        f"{args.out.name} (bundled like {DEFAULT_MODEL_NAME})"
        if side_folder
        else DEFAULT_MODEL_NAME
    )
    out = save_pretrained(model, args.out, storage_dtype=torch.float16, extra=extra)
    size = (out / "model.safetensors").stat().st_size
    print(json.dumps({"bundled": str(out), "bytes": size}))


if __name__ == "__main__":
    main()
