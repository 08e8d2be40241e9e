"""Result writers: label OME-TIFF pyramid, GeoJSON and CSV of objects, PNG overlay."""

from omniseg.export.label_tiff import pyramid_shapes, write_label_ome_tiff
from omniseg.export.objects import SlideObject
from omniseg.export.overlay import render_overlay
from omniseg.export.vectors import write_geojson, write_objects_csv

__all__ = [
    "SlideObject",
    "pyramid_shapes",
    "render_overlay",
    "write_geojson",
    "write_label_ome_tiff",
    "write_objects_csv",
]
