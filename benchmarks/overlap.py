"""Can post-processing overlap the network on this machine? Prints one JSON document.

Times the bundled model's 40x batches alone, the merge rule on 1024² chunks (numpy, releases
the GIL) alone, then both at once on two Python threads, and the network on one thread.
``overlap_speedup`` is the time the same amount of both kinds of work takes one after the other
divided by the time it took at once: above 1 overlapping pays, below 1 it costs.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/overlap.py --json docs/results/overlap.json
    OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=2 .venv/bin/python benchmarks/overlap.py --json ...
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import SCALE_TASKS, TILE, emit, load_model, machine, predictor_for

from omniseg.inference.merge import merge_labels, threshold_code
from omniseg.runtime.memory import tune_allocator

CHUNK = 1024  # the default merge chunk side
TASKS = 6


def merge_worker(stop: threading.Event, done: list[int]) -> None:
    """Merge-rule passes on one chunk of random codes until ``stop``."""
    rng = np.random.default_rng(0)
    codes = {t: rng.integers(0, 256, (CHUNK, CHUNK), dtype=np.uint8) for t in range(TASKS)}
    cuts = {t: threshold_code(0.5) for t in range(TASKS)}
    while not stop.is_set():
        merge_labels(codes, cuts)
        done[0] += 1


def network(predictor, batch: torch.Tensor, batches: int) -> tuple[int, float]:
    tasks, scale_id = SCALE_TASKS["40x"]
    clock = time.perf_counter()
    for _ in range(batches):
        predictor.predict_tasks(batch, tasks, scale_id, tta=False)
    return batches * len(batch), time.perf_counter() - clock


def merge_alone(seconds: float) -> float:
    stop, done = threading.Event(), [0]
    worker = threading.Thread(target=merge_worker, args=(stop, done))
    clock = time.perf_counter()
    worker.start()
    time.sleep(seconds)
    stop.set()
    worker.join()
    return done[0] / (time.perf_counter() - clock)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=8, help="4 x 512² 40x batches per timing")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    tune_allocator()
    model, folder, sha = load_model()
    predictor = predictor_for("torch-fp32", model, folder, sha)
    batch = torch.rand(4, 3, TILE, TILE, generator=torch.Generator().manual_seed(0))
    network(predictor, batch, 1)  # warm-up
    tiles, seconds = network(predictor, batch, args.batches)
    net_alone = tiles / seconds
    merge_rate = merge_alone(seconds)

    stop, done = threading.Event(), [0]
    worker = threading.Thread(target=merge_worker, args=(stop, done))
    worker.start()
    tiles_both, seconds_both = network(predictor, batch, args.batches)
    stop.set()
    worker.join()
    net_both, merge_both = tiles_both / seconds_both, done[0] / seconds_both

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    tiles_one, seconds_one = network(predictor, batch, max(2, args.batches // 2))
    torch.set_num_threads(threads)

    one_after_other = tiles_both / net_alone + done[0] / merge_rate
    emit(
        {
            "command": " ".join(sys.argv),
            "machine": machine(),
            "torch_threads": threads,
            # libgomp spins its idle threads unless told otherwise; spinning takes CPU from the
            # merge thread (PASSIVE: 1.48-1.92x overlap against 1.07-1.18x by default, in three
            # runs each; see docs/performance.md for what it costs the network alone)
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "network_alone_tiles_per_s": round(net_alone, 3),
            "merge_alone_chunks_per_s": round(merge_rate, 2),
            "network_during_merge_tiles_per_s": round(net_both, 3),
            "merge_during_network_chunks_per_s": round(merge_both, 2),
            "network_one_thread_tiles_per_s": round(tiles_one / seconds_one, 3),
            "overlap_speedup": round(one_after_other / seconds_both, 3),
        },
        args.json,
    )


if __name__ == "__main__":
    main()
