"""Pyramidal, tiled, compressed OME-TIFF of class labels, streamed tile by tile.

Layout: level 0 in the first IFD, reduced levels in its SubIFDs (the OME-TIFF pyramid convention
that QuPath/Bio-Formats read); ImageDescription is OME-XML built here (tifffile's own OME writer
adds a random UUID, which would break byte-identical resume). X/YResolution tags carry the pixel
size for readers that ignore OME. Class names go into an OME MapAnnotation (key = label value).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from xml.sax.saxutils import quoteattr

import numpy as np
import tifffile

from omniseg.atomic import atomic_path

MICRONS_PER_CM = 10_000.0
OME_NAMESPACE = "http://www.openmicroscopy.org/Schemas/OME/2016-06"
CLASS_NAMES_NAMESPACE = "omniseg.org/class-names"  # MapAnnotation namespace (informational)
# Tiles read ahead per compression thread. tifffile's own default buffer (512 MB) held ~2,000
# 512² tiles at once: a 100k x 80k slide's label pyramid peaked ~500 MB above every other stage.
TILES_AHEAD_PER_THREAD = 4

ReadTile = Callable[[int, int, int, int, int], np.ndarray]


def pyramid_shapes(shape_hw: tuple[int, int], min_level_side: int) -> list[tuple[int, int]]:
    """Level shapes: level n is ceil(shape / 2**n); stop once the longest side <= min_level_side."""
    height, width = shape_hw
    shapes = [(height, width)]
    while max(shapes[-1]) > min_level_side:
        factor = 2 ** len(shapes)
        shapes.append((math.ceil(height / factor), math.ceil(width / factor)))
    return shapes


def ome_xml(
    shape_hw: tuple[int, int], mpp: float, class_names: dict[int, str], name: str = "labels"
) -> str:
    """Deterministic OME-XML for one uint8 YX image with physical size and class names."""
    height, width = shape_hw
    pairs = "".join(
        f"<M K={quoteattr(str(value))}>{_escape(class_names[value])}</M>"
        for value in sorted(class_names)
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<OME xmlns="{OME_NAMESPACE}" Creator="omniseg">'
        f'<Image ID="Image:0" Name={quoteattr(name)}>'
        f'<Pixels ID="Pixels:0" DimensionOrder="XYCZT" Type="uint8" SizeX="{width}" '
        f'SizeY="{height}" SizeC="1" SizeZ="1" SizeT="1" '
        f'PhysicalSizeX="{mpp!r}" PhysicalSizeXUnit="µm" '
        f'PhysicalSizeY="{mpp!r}" PhysicalSizeYUnit="µm">'
        '<Channel ID="Channel:0:0" SamplesPerPixel="1"/>'
        '<TiffData IFD="0" PlaneCount="1"/></Pixels>'
        '<AnnotationRef ID="Annotation:0"/></Image>'
        f'<StructuredAnnotations><MapAnnotation ID="Annotation:0" '
        f'Namespace="{CLASS_NAMES_NAMESPACE}"><Value>{pairs}</Value></MapAnnotation>'
        "</StructuredAnnotations></OME>"
    )


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _tiles(
    read_tile: ReadTile, level: int, shape_hw: tuple[int, int], tile: int
) -> Iterator[np.ndarray]:
    """Row-major tiles of one level; edge tiles are asked at their true size (tifffile pads)."""
    height, width = shape_hw
    for y in range(0, height, tile):
        for x in range(0, width, tile):
            h, w = min(tile, height - y), min(tile, width - x)
            values = np.asarray(read_tile(level, y, x, h, w))
            if values.shape != (h, w):
                raise ValueError(
                    f"read_tile(level={level}, y={y}, x={x}) returned {values.shape}, expected {(h, w)}"
                )
            yield values.astype(np.uint8, copy=False)


def write_label_ome_tiff(
    path: str | os.PathLike[str],
    shape_hw: tuple[int, int],
    read_tile: ReadTile,
    *,
    mpp: float,
    class_names: dict[int, str],
    tile: int = 512,
    min_level_side: int = 512,
    compression: str = "zlib",
    threads: int = 1,
) -> list[tuple[int, int]]:
    """Write a label pyramid; returns the level shapes (height, width).

    `read_tile(level, y, x, h, w)` returns the uint8 labels of rows y..y+h, columns x..x+w of
    pyramid level `level` (downsample 2**level); the writer never holds more than one tile.
    `class_names` maps label value -> name (0 = background). Same inputs give identical bytes.
    `threads` tiles are compressed at once (tifffile's own default is half the CPUs), with at
    most ``TILES_AHEAD_PER_THREAD`` tiles per thread read ahead.
    """
    shapes = pyramid_shapes(tuple(int(v) for v in shape_hw), min_level_side)
    common = {
        "dtype": np.uint8,
        "tile": (tile, tile),
        "compression": compression,
        "photometric": "minisblack",
        "resolutionunit": "CENTIMETER",
        "software": "omniseg",
        "metadata": None,
        "maxworkers": max(1, threads),
        "buffersize": TILES_AHEAD_PER_THREAD * max(1, threads) * tile * tile,  # uint8: 1 B/px
    }
    with atomic_path(path) as temp, tifffile.TiffWriter(temp, bigtiff=True, ome=False) as writer:
        for level, level_shape in enumerate(shapes):
            level_mpp = mpp * 2**level
            extra = (
                {
                    "subifds": len(shapes) - 1,
                    "description": ome_xml(shapes[0], mpp, class_names).encode("utf-8"),
                }
                if level == 0
                else {"subfiletype": 1}
            )
            writer.write(
                _tiles(read_tile, level, level_shape, tile),
                shape=level_shape,
                resolution=(MICRONS_PER_CM / level_mpp, MICRONS_PER_CM / level_mpp),
                **common,
                **extra,
            )
    return shapes
