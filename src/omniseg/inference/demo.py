"""``omniseg demo``: segment a small SYNTHETIC kidney-like slide generated on the fly (see
:mod:`omniseg.data.synthetic.kidney`), offline and in about half a minute on a laptop CPU."""

from __future__ import annotations

from pathlib import Path

from omniseg.data.synthetic.kidney import DemoSlideSpec, write_demo_slide

DEMO_NAME = "synthetic-kidney-demo.tif"


def run_demo(out: str | Path, settings, model, *, model_source=None, spec=None):
    """Write the synthetic slide into ``out`` (kept if already there) and segment it."""
    from omniseg.inference.pipeline import segment_slide

    out = Path(out)
    slide = out / DEMO_NAME
    if not slide.is_file():
        write_demo_slide(slide, spec or DemoSlideSpec())
    return segment_slide(slide, out, settings, model, model_source=model_source)
