"""Generated slides with generated annotations (QuPath GeoJSON, ImageScope XML, label image)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Point, Polygon, box, mapping

from omniseg.data.synthetic import write_tiff

MPP = 0.25
SIDE = 1024
PINK, DARK, RED = (225, 150, 170), (90, 50, 120), (215, 90, 110)


def shapes(seed: int = 0) -> list[tuple[str, object]]:
    """(class, geometry in level-0 px): glomeruli, tubules with lumens (holes), a multipolygon,
    two touching tubules, objects crossing patch borders, a class nobody maps, and the region."""
    rng = np.random.default_rng(seed)
    out: list[tuple[str, object]] = [("Region", box(0, 0, 800, SIDE))]
    for cx, cy in ((260, 300), (560, 700)):
        out.append(("Glomerulus", Point(cx, cy).buffer(110 + rng.integers(0, 20), 32)))
    for cx, cy in ((120, 820), (700, 160), (930, 520)):  # the last one lies outside the region
        ring = Point(cx, cy).buffer(45, 24).difference(Point(cx, cy).buffer(18, 16))
        out.append(("Tubule", ring))
    out.append(("Tubule", MultiPolygon([box(380, 40, 440, 90), box(460, 40, 520, 90)])))
    out.append(("Tubule", box(40, 480, 100, 560)))  # touches the next one
    out.append(("Tubule", box(100, 480, 160, 560)))
    out.append(("Tubule", box(0, 960, 90, SIDE)))  # crosses the slide's border region
    out.append(("Artifact", box(600, 900, 640, 950)))
    return out


def paint(path: Path, annotated: list[tuple[str, object]]) -> Path:
    """A slide whose pixels show the annotated objects (so a trained model can learn them)."""
    img = np.full((SIDE, SIDE, 3), PINK, dtype=np.uint8)
    ys, xs = np.mgrid[:SIDE, :SIDE] + 0.5
    colours = {"Glomerulus": DARK, "Tubule": RED}
    for name, geometry in annotated:
        if name in colours:
            img[shapely.contains_xy(geometry, xs, ys)] = colours[name]
    img[:, 1000:] = 245  # a strip of glass
    return write_tiff(path, img, MPP)


def write_geojson(path: Path, annotated, *, as_list: bool = False) -> Path:
    features = [
        {
            "type": "Feature",
            "geometry": mapping(geometry),
            "properties": {"objectType": "annotation", "classification": {"name": name}},
        }
        for name, geometry in annotated
    ]
    data = features if as_list else {"type": "FeatureCollection", "features": features}
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def write_imagescope(path: Path, annotated) -> Path:
    """One layer per class; holes as negative regions."""
    layers: dict[str, list[str]] = {}
    for name, geometry in annotated:
        parts = getattr(geometry, "geoms", [geometry])
        for polygon in parts:
            regions = layers.setdefault(name, [])
            regions.append(_region(polygon.exterior.coords, negative=False))
            regions += [_region(hole.coords, negative=True) for hole in polygon.interiors]
    body = "".join(
        f'<Annotation Id="{i}" Name="{name}"><Regions>{"".join(regions)}</Regions></Annotation>'
        for i, (name, regions) in enumerate(layers.items(), start=1)
    )
    path.write_text(f"<Annotations>{body}</Annotations>", encoding="utf-8")
    return path


def _region(coords, *, negative: bool) -> str:
    vertices = "".join(f'<Vertex X="{x}" Y="{y}"/>' for x, y in list(coords)[:-1])
    return (
        f'<Region Type="0" NegativeROA="{int(negative)}"><Vertices>{vertices}</Vertices></Region>'
    )


def write_label_image(path: Path, annotated, values: dict[str, int]) -> Path:
    import tifffile

    labels = np.zeros((SIDE, SIDE), dtype=np.uint8)
    ys, xs = np.mgrid[:SIDE, :SIDE] + 0.5
    for name, geometry in annotated:
        if name in values:
            labels[shapely.contains_xy(geometry, xs, ys)] = values[name]
    tifffile.imwrite(path, labels)
    return path


def polygons_of(annotated, name: str):
    return shapely.union_all([g for n, g in annotated if n == name])


__all__ = ["Polygon", "paint", "polygons_of", "shapes", "write_geojson", "write_imagescope"]
