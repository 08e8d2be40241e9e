"""Wall time and peak RSS of ``omniseg segment`` with the real network on a generated slide.

Writes a synthetic Aperio-style pyramidal TIFF (default 20000 x 20000 px at 0.25 µm/px, the demo
generator scaled up; ~1.2 GB of RAM while generating, in a separate subprocess so it does not
count towards the pipeline's peak RSS), then runs the full pipeline in a fresh subprocess with the
full-size Omni-Seg network (random weights unless --weights) and prints one JSON object.

    .venv/bin/python benchmarks/wsi_real_model.py                      # ~1 h or more on 2 cores
    .venv/bin/python benchmarks/wsi_real_model.py --size 8000 --precision bf16
    .venv/bin/python benchmarks/wsi_real_model.py --size 31000 \
        --weights src/omniseg/weights/omniseg-kidney-v4     # ~30 mm² of tissue, bundled model
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make_slide(path: Path, size: int) -> None:
    from omniseg.data.synthetic import DemoSlideSpec, write_demo_slide

    write_demo_slide(path, DemoSlideSpec(width=size, height=size, downsamples=(4, 16, 64)))


def run(
    path: Path,
    out: Path,
    weights: str | None,
    precision: str,
    batch_size: int,
    tasks: str,
    backend: str = "torch",
) -> dict:
    import torch

    from omniseg.catalogue import parse_tasks
    from omniseg.inference import ModelSource, SegmentSettings, segment_slide
    from omniseg.inference.loading import load_segment_model
    from omniseg.models import create_model
    from omniseg.runtime.memory import peak_rss_mb

    if weights:
        model, source = load_segment_model(weights, "auto", precision)
    else:
        model, source = create_model("omniseg").eval(), ModelSource(None, None)
        if precision == "bf16":
            model = model.to(memory_format=torch.channels_last)
    settings = SegmentSettings(
        tasks=tuple(t.id for t in parse_tasks(tasks)),
        precision=precision,
        batch_size=batch_size,
        progress=True,
        backend=backend,
    )
    started = time.perf_counter()
    result = segment_slide(path, out, settings, model, model_source=source)
    wall = time.perf_counter() - started
    return {
        "slide_wh": result.summary["dimensions_wh"],
        "weights": weights or "random omniseg",
        "backend": backend,
        "precision": precision,
        "batch_size": batch_size,
        "tasks": tasks,
        "torch_threads": torch.get_num_threads(),
        "wall_s": round(wall, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "tiles_processed": result.summary["tiles_processed"],
        "tiles_skipped": result.summary["tiles_skipped"],
        "objects": result.summary["objects"],
        "timings_s": result.summary["timings_s"],
        "tissue_area_mm2": result.summary["tissue_area_mm2"],
        "seconds_per_mm2_tissue": round(wall / result.summary["tissue_area_mm2"], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=20000)
    parser.add_argument("--weights", default=None)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--tasks", default="all", help="e.g. dt,pt,capsule,tuft,vessel")
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--keep", type=Path, help="keep the slide and result here")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        row = run(
            Path(args.child[0]),
            Path(args.child[1]),
            args.weights,
            args.precision,
            args.batch_size,
            args.tasks,
            args.backend,
        )
        print(json.dumps(row))
        return
    with tempfile.TemporaryDirectory(prefix="omniseg-wsi-real-") as scratch:
        tmp = args.keep or Path(scratch)
        tmp.mkdir(parents=True, exist_ok=True)
        slide = Path(tmp) / f"synthetic-{args.size}.tif"
        code = (
            f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            f"import wsi_real_model as m; m.make_slide(__import__('pathlib').Path({str(slide)!r}), {args.size})"
        )
        if not slide.exists():  # a kept slide is reused
            subprocess.run([sys.executable, "-c", code], check=True)
        cmd = [
            sys.executable,
            __file__,
            "--child",
            str(slide),
            str(Path(tmp) / f"out-{Path(args.weights).name if args.weights else 'random'}"),
            "--precision",
            args.precision,
            "--batch-size",
            str(args.batch_size),
            "--tasks",
            args.tasks,
            "--backend",
            args.backend,
        ]
        if args.weights:
            cmd += ["--weights", args.weights]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
        print(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
