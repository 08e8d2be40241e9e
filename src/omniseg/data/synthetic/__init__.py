"""Generated slides, the one source of them for the demo, the tests and the benchmarks:

- ``kidney``: the demo's kidney-like Aperio pyramid (``write_demo_slide``) and the Aperio
  writer the real-patch mosaic uses (``write_aperio_slide``);
- ``pyramids``: tiny lossless slides in scanner layouts (SVS, generic pyramid, OME SubIFDs) and
  a simple tissue image, for reader and pipeline tests;
- ``lazy``: a virtual slide of any size computed per region, for memory benchmarks.
"""

from omniseg.data.synthetic.kidney import DemoSlideSpec, write_aperio_slide, write_demo_slide
from omniseg.data.synthetic.lazy import LazySyntheticSlide
from omniseg.data.synthetic.pyramids import (
    SVS_MPP,
    SVS_POWER,
    pyramid,
    slide_array,
    synthetic_tissue,
    write_generic_pyramid,
    write_ome_subifds,
    write_svs,
    write_tiff,
)

__all__ = [
    "SVS_MPP",
    "SVS_POWER",
    "DemoSlideSpec",
    "LazySyntheticSlide",
    "pyramid",
    "slide_array",
    "synthetic_tissue",
    "write_aperio_slide",
    "write_demo_slide",
    "write_generic_pyramid",
    "write_ome_subifds",
    "write_svs",
    "write_tiff",
]
