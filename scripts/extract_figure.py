"""The figure of docs/training.md: a slide, its annotations, and the patches `omniseg extract`
cut from it (each at its task's own magnification; grey = unannotated, skipped by the loss).

    .venv/bin/python scripts/extract_figure.py docs/images/extract-route.png

The slide is the SYNTHETIC demo slide; its "annotations" are the bundled model's own objects
(as a user would start from them in QuPath and correct them) inside one Region.
"""

from __future__ import annotations

import csv
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from omniseg.catalogue import default_catalogue
from omniseg.cli.main import main as cli
from omniseg.data.extract.run import UNKNOWN

THUMB_WIDTH, TILE, COLUMNS = 900, 150, 4
REGION_SHARE = 0.6  # the Region covers the slide's left 60 %
NAMES = {"dt": "Distal tubule", "pt": "Proximal tubule", "glomerulus": "Glomerulus",
         "vessel": "Artery", "ptc": "Capillary"}  # fmt: skip
CLASSES = "Distal tubule=dt,Proximal tubule=pt,Glomerulus=capsule,Artery=vessel,Capillary=ptc"


def annotations(objects: Path, width: int, height: int) -> dict:
    data = json.loads(objects.read_text(encoding="utf-8"))
    features = []
    for feature in data["features"]:
        name = NAMES[feature["properties"]["classification"]["name"]]
        features.append({**feature, "properties": {"objectType": "annotation",
                                                   "classification": {"name": name}}})  # fmt: skip
    region = [
        [0, 0],
        [width * REGION_SHARE, 0],
        [width * REGION_SHARE, height],
        [0, height],
        [0, 0],
    ]
    features.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [region]},
                     "properties": {"objectType": "annotation",
                                    "classification": {"name": "Region"}}})  # fmt: skip
    return {"type": "FeatureCollection", "features": features}


def draw_thumbnail(slide: Path, notes: dict, rows: list[dict]) -> Image.Image:
    image = Image.open(slide).convert("RGB")
    scale = THUMB_WIDTH / image.width
    thumb = image.resize((THUMB_WIDTH, round(image.height * scale)))
    pen = ImageDraw.Draw(thumb)
    colours = {t.name: tuple(t.color) for t in default_catalogue().tissues}
    colours.update({"Distal tubule": colours["dt"], "Proximal tubule": colours["pt"],
                    "Glomerulus": colours["capsule"], "Artery": colours["vessel"],
                    "Capillary": colours["ptc"], "Region": (0, 0, 0)})  # fmt: skip
    for feature in notes["features"]:
        colour = colours[feature["properties"]["classification"]["name"]]
        geometry = feature["geometry"]
        polygons = (
            [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]
        )
        for polygon in polygons:
            ring = [(x * scale, y * scale) for x, y in polygon[0]]
            pen.line(ring, fill=colour, width=3 if colour == (0, 0, 0) else 2)
    for number, row in enumerate(rows[: COLUMNS * 3], start=1):
        side = 256 * float(row["mpp"]) / 0.25 * scale
        x, y = int(row["x"]) * scale, int(row["y"]) * scale
        pen.rectangle([x, y, x + side, y + side], outline=(255, 255, 255), width=2)
        pen.text((x + 3, y + 2), str(number), fill=(255, 255, 255))
    return thumb


def patch_tile(folder: Path, row: dict, number: int) -> Image.Image:
    tissue = default_catalogue().tissue(int(row["task_id"]))
    image = np.asarray(Image.open(folder / row["image"]).convert("RGB")).astype(np.float32)
    mask = np.asarray(Image.open(folder / row["mask"]))
    out = image.copy()
    fg = mask == 255
    out[fg] = 0.5 * image[fg] + 0.5 * np.array(tissue.color)
    unknown = mask == UNKNOWN
    out[unknown] = 0.35 * image[unknown] + 0.65 * 128
    tile = Image.fromarray(out.clip(0, 255).astype(np.uint8)).resize((TILE, TILE))
    pen = ImageDraw.Draw(tile)
    label = f"{number}: {tissue.name} {tissue.magnification}x {row['kind'][:3]}"
    pen.rectangle([0, 0, TILE, 14], fill=(0, 0, 0))
    pen.text((3, 1), label, fill=(255, 255, 255))
    return tile


def main() -> None:
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/images/extract-route.png")
    with tempfile.TemporaryDirectory(prefix="omniseg-figure-") as tmp_name:
        tmp = Path(tmp_name)
        assert cli(["demo", "-o", str(tmp), "--quiet"]) == 0
        slide = tmp / "synthetic-kidney-demo.tif"
        width, height = Image.open(slide).size
        notes = annotations(tmp / "synthetic-kidney-demo" / "objects.geojson", width, height)
        (tmp / "notes.geojson").write_text(json.dumps(notes), encoding="utf-8")
        patches = tmp / "patches"
        assert cli(["extract", str(slide), "--annotations", str(tmp / "notes.geojson"),
                    "-o", str(patches), "--classes", CLASSES, "--patch", "256",
                    "--per-class", "3", "--negatives", "0.5", "--quiet"]) == 0  # fmt: skip
        with open(patches / "manifest.csv", newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        picked = _spread(rows, COLUMNS * 3)
        thumb = draw_thumbnail(slide, notes, picked)
        tiles = [patch_tile(patches, row, i) for i, row in enumerate(picked, start=1)]
    grid_h = TILE * ((len(tiles) + COLUMNS - 1) // COLUMNS)
    canvas = Image.new(
        "RGB", (thumb.width + 10 + COLUMNS * TILE, max(thumb.height, grid_h)), "white"
    )
    canvas.paste(thumb, (0, 0))
    for i, tile in enumerate(tiles):
        canvas.paste(tile, (thumb.width + 10 + (i % COLUMNS) * TILE, (i // COLUMNS) * TILE))
    target.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(target, optimize=True)
    print(f"wrote {target} ({len(rows)} patches extracted, {len(tiles)} shown)")


def _spread(rows: list[dict], count: int) -> list[dict]:
    """Positives and negatives of every task, in turn."""
    by_key: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        by_key.setdefault((row["task_id"], row["kind"]), []).append(row)
    picked: list[dict] = []
    while len(picked) < count and any(by_key.values()):
        for key in sorted(by_key):
            if by_key[key] and len(picked) < count:
                picked.append(by_key[key].pop(0))
    return picked


if __name__ == "__main__":
    main()
