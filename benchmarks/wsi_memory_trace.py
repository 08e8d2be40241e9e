"""Where whole-slide memory goes: tracemalloc peak and the largest allocations alive after merge.

Runs the stand-in pipeline of ``wsi_memory.py`` on one virtual slide under tracemalloc (3-5x
slower). Python/numpy allocations only: the gap between this peak and peak RSS is native memory
(torch, zarr/blosc, allocator fragmentation).

    .venv/bin/python benchmarks/wsi_memory_trace.py 30000x24000
"""

from __future__ import annotations

import argparse
import json
import tempfile
import tracemalloc
from pathlib import Path

import wsi_memory

import omniseg.inference.pipeline as pipeline
import omniseg.inference.stages as stages
from omniseg.inference import SegmentSettings
from omniseg.models import InferenceSettings
from omniseg.testing import PointwiseModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("size", help="WIDTHxHEIGHT of the virtual slide")
    parser.add_argument("--top", type=int, default=8)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    slide = wsi_memory.LazySyntheticSlide(width, height)
    pipeline.open_slide = lambda path, **_: slide
    after_merge = {}
    assemble = stages.assemble

    def traced_assemble(*a, **k):
        result = assemble(*a, **k)
        after_merge["snapshot"] = tracemalloc.take_snapshot()
        return result

    stages.assemble = traced_assemble
    tracemalloc.start(5)
    with tempfile.TemporaryDirectory(prefix="omniseg-wsi-trace-") as tmp:
        model = PointwiseModel(InferenceSettings())
        path = Path(tmp) / "v.tif"
        path.write_bytes(b"virtual")  # the result records the file's identity; pixels are virtual
        pipeline.segment_slide(path, tmp, SegmentSettings(progress=False), model)
    _, peak = tracemalloc.get_traced_memory()
    top = after_merge["snapshot"].statistics("lineno")[: args.top]
    print(json.dumps({
        "slide_wh": [width, height],
        "traced_peak_mb": round(peak / 1e6, 1),
        "alive_after_merge": [{"where": str(s.traceback), "mb": round(s.size / 1e6, 2)} for s in top],
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
