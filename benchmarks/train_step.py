"""Seconds per training step (forward + losses + backward + AdamW + EMA), printed as JSON.

Runs ``omniseg.training.train`` for a few steps per setting (fp32 / bf16, with and without the
semi-supervised cross-scale terms) on real patches and reports the median step time after the
first (warm-up) step. The semi terms are switched on from step 0 (no ramp) so every step pays
their full cost.

    .venv/bin/python benchmarks/train_step.py [--data PATH] [--model omniseg] [--batch-size 8]
        [--patch-size 256] [--steps 4] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from omniseg.training import load_train_config, train

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "kidney-patches"


def measure(args: argparse.Namespace, precision: str, semi: bool) -> dict:
    times: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        config = load_train_config(
            None,
            {
                "data.path": str(args.data),
                "run.out": str(Path(tmp) / "run"),
                "run.model": args.model,
                "data.batch_size": args.batch_size,
                "data.patch_size": args.patch_size,
                "run.max_steps": args.steps,
                "run.precision": precision,
                "run.device": args.device,
                "data.val_split": "none",
                "semi.enabled": semi,
                "semi.rampup_fraction": 0.0,
                "run.progress": False,
            },
        )
        start = time.perf_counter()
        result = train(config, callback=lambda step, m: times.append(m["step_seconds"]))
        wall = time.perf_counter() - start
    timed = times[1:] if len(times) > 1 else times
    return {
        "precision": precision,
        "semi": semi,
        "steps": result.steps,
        "median_s_per_step": statistics.median(timed),
        "min_s_per_step": min(timed),
        "first_step_s": times[0],
        "step_times_s": times,
        "run_wall_s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--model", default="omniseg")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--patch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--semi", nargs="+", default=["off", "on"], choices=["off", "on"])
    args = parser.parse_args()
    rows = []
    for precision in args.precision:
        for semi in args.semi:
            rows.append(measure(args, precision, semi == "on"))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)  # survives an interrupted run
    by_key = {(r["precision"], r["semi"]): r["median_s_per_step"] for r in rows}
    overhead = {
        p: by_key[(p, True)] / by_key[(p, False)]
        for p in args.precision
        if (p, True) in by_key and (p, False) in by_key
    }
    print(
        json.dumps(
            {
                "benchmark": "train_step",
                "model": args.model,
                "batch_size": args.batch_size,
                "patch_size": args.patch_size,
                "device": args.device,
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "machine": platform.machine(),
                "results": rows,
                "semi_cost_ratio": overhead,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
