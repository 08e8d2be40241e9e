"""``omniseg demo``: the main job on real tissue, offline.

By default it segments four real human PAS biopsy tiles that ship inside the package (AIDPATH,
CC BY 4.0: ``omniseg/demo/ATTRIBUTION.md``). Their pixel size (0.5 µm/px) comes from the
dataset's description, not from the files, so the demo passes it. ``synthetic=True`` segments
a generated kidney-like slide instead (:mod:`omniseg.data.synthetic.kidney`), which the pinned
regression test and the benchmarks use.
"""

from __future__ import annotations

import dataclasses
from importlib import resources
from pathlib import Path

from omniseg.data.synthetic.kidney import DemoSlideSpec, write_demo_slide

DEMO_NAME = "synthetic-kidney-demo.tif"
DEMO_TISSUE_MPP = 0.5  # AIDPATH: scanned at 20x, about 0.5 µm/px (dataset description)
ATTRIBUTION = "ATTRIBUTION.md"


def demo_tiles() -> list[Path]:
    """The bundled real tissue tiles, in name order."""
    folder = Path(str(resources.files("omniseg").joinpath("demo")))
    return sorted(folder.glob("*.jpg"))


def demo_attribution() -> Path:
    return Path(str(resources.files("omniseg").joinpath("demo", ATTRIBUTION)))


def run_demo(out: str | Path, settings, model, *, model_source=None, synthetic=False, spec=None):
    """Segment the demo input into ``out``: one result folder per tile (a list of results)."""
    from omniseg.inference.pipeline import segment_slide, segment_slides

    out = Path(out)
    if synthetic:
        slide = out / DEMO_NAME
        if not slide.is_file():
            write_demo_slide(slide, spec or DemoSlideSpec())
        return [segment_slide(slide, out, settings, model, model_source=model_source)]
    if settings.mpp is None and settings.magnification is None:
        settings = dataclasses.replace(settings, mpp=DEMO_TISSUE_MPP)
    return segment_slides(demo_tiles(), out, settings, model, model_source=model_source)
