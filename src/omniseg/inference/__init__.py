"""Whole-slide inference: tiling, native-scale stores, merge, objects, outputs (``omniseg segment``)."""

from omniseg.inference.outputs import ModelSource
from omniseg.inference.pipeline import SlideResult, segment_slide, segment_slides
from omniseg.inference.scale import plan_scales
from omniseg.inference.settings import SegmentSettings
from omniseg.inference.tiling import Tile, tile_grid
from omniseg.io.raster import Window

__all__ = [
    "ModelSource",
    "SegmentSettings",
    "SlideResult",
    "Tile",
    "Window",
    "plan_scales",
    "segment_slide",
    "segment_slides",
    "tile_grid",
]
