"""Peak memory of the whole-slide pipeline does not grow with slide size.

Drives ``omniseg.inference.segment_slide`` (every stage: tissue detection, tiling, native-scale
zarr stores, merge, components, objects, label OME-TIFF, GeoJSON/CSV, overlay) with the cheap
pointwise stand-in model on virtual slides whose pixels are generated per requested region, so no
huge file is needed. Each size runs in a fresh subprocess; peak RSS = VmHWM of that process
(``runtime.memory.peak_rss_mb``).

    .venv/bin/python benchmarks/wsi_memory.py                 # 10k x 8k and 100k x 80k
    .venv/bin/python benchmarks/wsi_memory.py --sizes 10000x8000

Prints one JSON object per size and a final comparison (criterion: peak RSS within 20 %).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import ClassVar

from omniseg.data.synthetic import LazySyntheticSlide
from omniseg.runtime.memory import current_rss_mb, peak_rss_mb


class StagePeaks:
    """Peak RSS per pipeline stage, sampled by a background thread (Linux /proc)."""

    STAGES: ClassVar[dict[tuple[str, str], str]] = {  # module attribute -> stage name
        ("stages", "thumbnail"): "tissue",
        ("stages", "run_scale"): "inference",
        ("stages", "assemble"): "merge",
        ("stages", "iter_objects"): "objects",
        ("outputs", "write_label_ome_tiff"): "labels.ome.tif",
        ("outputs", "write_geojson"): "objects.geojson",
        ("outputs", "write_objects_csv"): "objects.csv",
        ("outputs", "render_overlay"): "overlay.png",
    }

    def __init__(self, interval_s: float = 0.05, timeline_every_s: float = 10.0) -> None:
        self.stage = "open"
        self.peaks: dict[str, float] = {}
        self.timeline: list[tuple[float, str, float]] = []  # (seconds, stage, RSS MB)
        self._timeline_every = timeline_every_s
        self._started = time.perf_counter()
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self._interval):
            rss = current_rss_mb()
            self.peaks[self.stage] = max(self.peaks.get(self.stage, 0.0), rss)
            elapsed = time.perf_counter() - self._started
            if not self.timeline or elapsed - self.timeline[-1][0] >= self._timeline_every:
                self.timeline.append((round(elapsed, 1), self.stage, round(rss, 1)))

    def install(self, modules: dict) -> None:
        for (module, name), stage in self.STAGES.items():
            setattr(modules[module], name, self._wrap(getattr(modules[module], name), stage))
        self._thread.start()

    def _wrap(self, function, stage: str):
        def wrapped(*args, **kwargs):
            self.stage = stage
            result = function(*args, **kwargs)
            if stage == "objects":  # a generator: the stage lasts while it is consumed
                return self._tag_generator(result, stage)
            return result

        return wrapped

    def _tag_generator(self, iterator, stage: str):
        for item in iterator:
            self.stage = stage
            yield item

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        return {k: round(v, 1) for k, v in self.peaks.items()}


def run_one(width: int, height: int) -> dict:
    import omniseg.inference.outputs as outputs
    import omniseg.inference.pipeline as pipeline
    import omniseg.inference.stages as stages
    from omniseg.inference import SegmentSettings
    from omniseg.models import InferenceSettings
    from omniseg.testing import PointwiseModel

    slide = LazySyntheticSlide(width, height)
    pipeline.open_slide = lambda path, **_: slide  # the virtual slide instead of a file
    model = PointwiseModel(InferenceSettings())
    peaks = StagePeaks()
    peaks.install({"stages": stages, "outputs": outputs})
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="omniseg-wsi-mem-") as tmp:
        path = Path(tmp) / f"virtual-{width}x{height}.tif"
        path.write_bytes(b"virtual")  # the result records the file's identity; pixels are virtual
        result = pipeline.segment_slide(path, tmp, SegmentSettings(progress=False), model)
        sizes = {p.name: p.stat().st_size for p in result.out_dir.iterdir() if p.is_file()}
    wall = time.perf_counter() - started
    stage_peaks = peaks.stop()
    summary = result.summary
    return {
        "slide_wh": [width, height],
        "wall_s": round(wall, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "tiles_processed": summary["tiles_processed"],
        "tiles_skipped": summary["tiles_skipped"],
        "objects": summary["objects"],
        "tissue_area_mm2": summary["tissue_area_mm2"],
        "timings_s": summary["timings_s"],
        "stage_peak_rss_mb": stage_peaks,
        "rss_timeline": peaks.timeline,
        "output_bytes": sizes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["10000x8000", "100000x80000"])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        width, height = (int(v) for v in args.child.split("x"))
        print(json.dumps(run_one(width, height)))
        return
    rows = []
    for size in args.sizes:
        proc = subprocess.run(
            [sys.executable, __file__, "--child", size], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            raise SystemExit(f"size {size} failed")
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(json.dumps(row), flush=True)
    peaks = [r["peak_rss_mb"] for r in rows]
    ratio = max(peaks) / min(peaks)
    print(
        json.dumps(
            {"peak_rss_mb": peaks, "max_over_min": round(ratio, 3), "within_20pct": ratio <= 1.2}
        )
    )


if __name__ == "__main__":
    main()
