"""Slide readers, resolution handling, tissue detection and ROI parsing (the input side of WSI runs)."""

from omniseg.io.base import MPP_VALID_RANGE, SlideInfo, SlideReader
from omniseg.io.levels import LevelPlan, plan_level, read_at_mpp, target_shape, thumbnail
from omniseg.io.memory_readers import ArraySlide, PillowReader
from omniseg.io.opener import open_slide
from omniseg.io.openslide_reader import OpenSlideReader
from omniseg.io.roi import load_roi
from omniseg.io.tiff_reader import TiffReader
from omniseg.io.tissue import TissueSettings, detect_tissue

__all__ = [
    "MPP_VALID_RANGE",
    "ArraySlide",
    "LevelPlan",
    "OpenSlideReader",
    "PillowReader",
    "SlideInfo",
    "SlideReader",
    "TiffReader",
    "TissueSettings",
    "detect_tissue",
    "load_roi",
    "open_slide",
    "plan_level",
    "read_at_mpp",
    "target_shape",
    "thumbnail",
]
