"""Forward time of a model on this machine, several execution modes. Prints one JSON document.

    python benchmarks/forward_speed.py --model omniseg --batch 4 --size 512 [--compile]

``others_cpu`` is the share of all CPUs used by other processes during the timed loop
(from /proc/stat), so noisy rows can be recognised.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import time

import torch

from omniseg.models import create_model
from omniseg.runtime.memory import tune_allocator


def _cpu_times() -> tuple[float, float]:
    try:
        with open("/proc/stat") as fh:
            vals = [float(v) for v in fh.readline().split()[1:]]
    except OSError:
        return 0.0, 0.0
    busy = sum(vals) - vals[3] - vals[4]
    return busy / os.sysconf("SC_CLK_TCK"), sum(vals) / os.sysconf("SC_CLK_TCK")


def time_mode(model, x, tasks, scales, *, bf16: bool, iters: int, warmup: int) -> dict:
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    times = []
    with torch.no_grad(), ctx:
        for _ in range(warmup):
            model(x, tasks, scales)
        busy0, total0 = _cpu_times()
        self0 = time.process_time()
        for _ in range(iters):
            t0 = time.perf_counter()
            model(x, tasks, scales)
            times.append(time.perf_counter() - t0)
        busy1, total1 = _cpu_times()
        own = time.process_time() - self0
    others = max(0.0, (busy1 - busy0) - own) / max(total1 - total0, 1e-9)
    med = statistics.median(times)
    return {
        "median_s_per_batch": round(med, 4),
        "min_s": round(min(times), 4),
        "patches_per_s": round(x.shape[0] / med, 3),
        "others_cpu": round(others, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="omniseg")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (slow)")
    ap.add_argument(
        "--allocator",
        choices=("tuned", "glibc"),
        default="tuned",
        help="tuned = omniseg.runtime.memory.tune_allocator() as in segment/train; glibc = untouched",
    )
    args = ap.parse_args()
    allocator_tuned = args.allocator == "tuned" and tune_allocator()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model(args.model).eval()
    x = torch.rand(args.batch, 3, args.size, args.size)
    tasks = torch.arange(args.batch) % model.config.num_tasks
    scales = torch.ones(args.batch, dtype=torch.long)
    rows = {}
    rows["fp32_eager"] = time_mode(
        model, x, tasks, scales, bf16=False, iters=args.iters, warmup=args.warmup
    )
    cl_model = model.to(memory_format=torch.channels_last)
    x_cl = x.to(memory_format=torch.channels_last)
    rows["fp32_channels_last"] = time_mode(
        cl_model, x_cl, tasks, scales, bf16=False, iters=args.iters, warmup=args.warmup
    )
    rows["bf16_autocast_channels_last"] = time_mode(
        cl_model, x_cl, tasks, scales, bf16=True, iters=args.iters, warmup=args.warmup
    )
    if args.compile:
        compiled = torch.compile(cl_model)
        t0 = time.perf_counter()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            compiled(x_cl, tasks, scales)
        rows["compile_bf16_channels_last"] = time_mode(
            compiled, x_cl, tasks, scales, bf16=True, iters=args.iters, warmup=1
        )
        rows["compile_bf16_channels_last"]["compile_s"] = round(time.perf_counter() - t0, 1)
    print(
        json.dumps(
            {
                "model": args.model,
                "batch": args.batch,
                "size": args.size,
                "threads": args.threads,
                "allocator_tuned": allocator_tuned,
                "torch": torch.__version__,
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                "modes": rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
