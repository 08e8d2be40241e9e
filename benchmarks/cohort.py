"""A cohort of generated slides on a Dask LocalCluster: wall time with 1 and 2 worker processes
(torch threads split so the total stays the machine's cores), and a run in which one worker is
killed mid-slide (its slide is re-run elsewhere; outputs must equal the undisturbed run's).
Prints JSON.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/cohort.py --slides 8 --side 2000 --json OUT.json
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

OUTPUTS = ("labels.ome.tif", "objects.geojson", "objects.csv", "overlay.png")


def digests(out: Path, names) -> dict:
    return {
        f"{n}/{f}": hashlib.sha256((out / n / f).read_bytes()).hexdigest()
        for n in names
        for f in OUTPUTS
    }


def cohort(jobs, out, settings, spec, cluster) -> dict:
    from omniseg.inference.cohort import run_cohort

    result = run_cohort(jobs, out, settings, spec, cluster, progress=False)
    return {
        "wall_s": round(result.wall_s, 2),
        "statuses": [r["status"] for r in result.rows],
        "workers_used": sorted({r.get("worker") for r in result.rows}),
    }


def killed_run(jobs, out, settings, spec) -> dict:
    """Two workers on a cluster of our own, so the first busy one can be killed mid-slide."""
    import dask
    from distributed import Client, LocalCluster

    from omniseg.inference.cohort import ClusterSettings

    env = {"distributed.nanny.pre-spawn-environ": {"OMP_NUM_THREADS": "1"}}
    killed: list[dict] = []
    with (
        dask.config.set(env),
        LocalCluster(n_workers=2, threads_per_worker=1) as cluster,
        Client(cluster) as client,
    ):
        pids = client.run(os.getpid)

        def kill() -> None:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline and not killed:
                busy = {w: k for w, k in client.processing().items() if k}
                started = [j.path.stem for j in jobs if (out / j.path.stem / ".work").exists()]
                if busy and started:
                    worker, keys = next(iter(busy.items()))
                    time.sleep(2.0)  # well inside the slide
                    os.kill(pids[worker], signal.SIGKILL)
                    killed.append({"pid": pids[worker], "task": str(keys[0])})
                time.sleep(0.05)

        killer = threading.Thread(target=kill)
        killer.start()
        numbers = cohort(
            jobs, out, settings, spec, ClusterSettings(scheduler=cluster.scheduler_address)
        )
        killer.join()
    return {**numbers, "killed": killed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slides", type=int, default=8)
    parser.add_argument("--side", type=int, default=2000, help="slide side, px at 0.25 µm/px")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from run import emit, machine

    from omniseg.data.synthetic import DemoSlideSpec, write_demo_slide
    from omniseg.inference import SegmentSettings
    from omniseg.inference.cohort import ClusterSettings, SlideJob
    from omniseg.inference.cohort.worker import ModelSpec

    spec = ModelSpec(None, allow_unverified=False, device="cpu", precision="fp32")
    settings = SegmentSettings(progress=False, device="cpu", precision="fp32")
    result: dict = {"command": " ".join(sys.argv), "machine": machine()}
    with tempfile.TemporaryDirectory(prefix="omniseg-cohort-") as tmp_name:
        tmp = Path(tmp_name)
        jobs = [
            SlideJob(write_demo_slide(tmp / f"s{i}.tif",
                                      DemoSlideSpec(width=args.side, height=args.side, seed=i)))
            for i in range(args.slides)
        ]  # fmt: skip
        names = [j.path.stem for j in jobs]
        result["slides"] = {"count": args.slides, "side_px": args.side, "mpp": 0.25}
        one = cohort(jobs, tmp / "w1", settings, spec, ClusterSettings(workers=1))
        two = cohort(jobs, tmp / "w2", settings, spec, ClusterSettings(workers=2))
        kill = killed_run(jobs, tmp / "kill", settings, spec)
        same_threads = digests(tmp / "w2", names) == digests(tmp / "kill", names)
        across = digests(tmp / "w1", names) == digests(tmp / "w2", names)
    result.update(
        {
            "one_worker_2_threads": one,
            "two_workers_1_thread_each": two,
            "speedup_2_vs_1_workers": round(one["wall_s"] / two["wall_s"], 2),
            "killed_worker_run": kill,
            "killed_run_outputs_identical_to_2_workers": same_threads,
            "outputs_identical_1_vs_2_workers": across,
        }
    )
    emit(result, args.json)


if __name__ == "__main__":
    main()
