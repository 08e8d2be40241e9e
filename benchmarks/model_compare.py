"""Training step time, inference speed and peak memory of several models, printed as JSON.

Each measurement runs in a child process so its peak RSS is its own. Per model:
- ``train``: ``omniseg train`` for STEPS steps of the default recipe (batch 8, 128 px crops,
  fp32, channels_last), median step seconds after the first and the child's peak RSS;
- ``forward``: 4 x 512² forward passes (fp32, channels_last) in eval mode;
- ``segment`` (with ``--weights NAME=DIR`` and ``--slide``): ``omniseg segment`` wall time and
  peak RSS on one slide.

    .venv/bin/python benchmarks/model_compare.py --models omniseg omniseg-lite0 \
        [--weights omniseg=src/omniseg/weights/omniseg-kidney-v3 --slide SLIDE] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "kidney-patches"
FORWARD_CHILD = """
import json, resource, statistics, sys, time, torch
from omniseg.models import create_model
torch.manual_seed(0)
model = create_model(sys.argv[1]).eval().to(memory_format=torch.channels_last)
x = torch.rand(4, 3, 512, 512).contiguous(memory_format=torch.channels_last)
times = []
with torch.inference_mode():
    for i in range(int(sys.argv[2]) + 1):
        t = time.perf_counter(); model.predict_tasks(x, [0, 1, 4], 1); times.append(time.perf_counter() - t)
print(json.dumps({"seconds_per_batch": statistics.median(times[1:]),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}))
"""


# Runs the omniseg CLI in this child and prints its own peak RSS last.
CLI_CHILD = """
import resource, sys
from omniseg.cli.main import run
sys.argv[0] = "omniseg"
code = 0
try:
    run()
except SystemExit as exc:
    code = exc.code or 0
print("PEAK", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
sys.exit(code)
"""


def run_child(cmd: list[str]) -> tuple[str, float]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout, wall


def run_cli(args: list[str]) -> tuple[float, int]:
    """(wall seconds, peak RSS MB) of one ``omniseg ...`` command in a fresh process."""
    text, wall = run_child([sys.executable, "-c", CLI_CHILD, *args])
    return wall, int(text.strip().splitlines()[-1].split()[-1])


def train_cost(model: str, steps: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        wall, peak = run_cli(["train", "--config", "src/omniseg/configs/train_default.yaml", "--model", model,
                              "--set", "semi.enabled=false", "--val-split", "none", "--max-steps", str(steps),
                              "--out", f"{tmp}/run", "--no-progress"])  # fmt: skip
        rows = (Path(tmp) / "run" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    col = header.index("step_seconds")
    secs = [float(r.split(",")[col]) for r in rows[1:] if r.split(",")[col]]
    return {"steps": steps, "wall_s": round(wall, 1), "peak_rss_mb": peak,
            "logged_step_seconds": secs}  # fmt: skip


def main() -> None:
    from omniseg.runtime.cpu import cpu_capabilities

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["omniseg", "omniseg-lite0"])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--forward-iters", type=int, default=3)
    ap.add_argument("--weights", nargs="*", default=[], help="NAME=MODEL_DIR for segment")
    ap.add_argument("--slide", type=Path, help="slide to segment with each --weights model")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    import torch

    out = {"cpu": cpu_capabilities(), "torch": torch.__version__,
           "threads": int(os.environ.get("OMP_NUM_THREADS", os.cpu_count())),
           "train": {}, "forward_4x512": {}, "segment": {}}  # fmt: skip
    for name in args.models:
        out["train"][name] = train_cost(name, args.steps)
        text, _ = run_child([sys.executable, "-c", FORWARD_CHILD, name, str(args.forward_iters)])
        out["forward_4x512"][name] = json.loads(text)
    for item in args.weights:
        name, folder = item.split("=", 1)
        with tempfile.TemporaryDirectory() as tmp:
            wall, peak = run_cli(["segment", str(args.slide), "-o", tmp, "--weights", folder])
        out["segment"][name] = {"slide": args.slide.name, "wall_s": round(wall, 1),
                                "peak_rss_mb": peak}  # fmt: skip
    text = json.dumps(out, indent=2)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
