"""The correction route of docs/adapt.md, run on the demo's real PAS tiles (issue 32): segment,
correct the GeoJSON (here scripted: the false glomerulus at the bottom right of aidpath-10177,
clear-cell tubules, is deleted; a Region marks what was checked, leaving out an area a
pathologist should judge), extract, finetune, segment again; prints JSON and writes a
before/after picture.

    OMP_NUM_THREADS=2 .venv/bin/python scripts/route_demo.py --out /tmp/route \\
        --json docs/results/adapt/route-demo.json --picture docs/images/route-demo.jpg

Every step is the CLI command a user would run (printed). The tiles ship in the package
(AIDPATH, CC BY 4.0: src/omniseg/demo/ATTRIBUTION.md).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image, ImageDraw
from shapely.geometry import box, mapping, shape

ROOT = Path(__file__).resolve().parents[1]
TILE = ROOT / "src" / "omniseg" / "demo" / "aidpath-10177.jpg"
SIDE = 1024
FALSE_GLOMERULI = box(860, 780, SIDE, SIDE)  # delete glomerulus objects centred here
NOT_CHECKED = box(540, 700, 860, SIDE)  # left out of the Region: unknown, not background
OMNISEG = [sys.executable, "-m", "omniseg"]
UNSEEN = "aidpath-10150"  # a demo tile the fine-tune never saw
GAP, TITLE = 16, 36  # px between the pictures, and above each for its title


def run(*args: str) -> float:
    print("$ omniseg " + " ".join(shlex.quote(a) for a in args), file=sys.stderr, flush=True)
    began = time.perf_counter()
    subprocess.run([*OMNISEG, *args, "--quiet"], check=True, stdout=subprocess.DEVNULL)
    return round(time.perf_counter() - began, 1)


def corrected(objects: Path, target: Path) -> dict:
    """Keep the glomeruli judged real, delete the false ones, add the Region."""
    features = json.loads(objects.read_text(encoding="utf-8"))["features"]
    glomeruli = [f for f in features if f["properties"]["classification"]["name"] == "glomerulus"]
    kept = [f for f in glomeruli if not FALSE_GLOMERULI.contains(shape(f["geometry"]).centroid)]
    region = box(0, 0, SIDE, SIDE).difference(NOT_CHECKED)
    kept.append({"type": "Feature", "geometry": mapping(region),
                 "properties": {"objectType": "annotation", "classification": {"name": "Region"}}})  # fmt: skip
    target.write_text(json.dumps({"type": "FeatureCollection", "features": kept}), "utf-8")
    return {"glomeruli_found": len(glomeruli), "deleted": len(glomeruli) + 1 - len(kept)}


def counts(out: Path) -> dict:
    return {d.name: json.loads((d / "summary.json").read_text())["classes"]["glomerulus"]["count"]
            for d in sorted(out.iterdir()) if (d / "summary.json").is_file()}  # fmt: skip


def picture(before: Path, after: Path, target: Path) -> None:
    """Overlays before | after, half size: the corrected tile (the area left out of the Region
    framed) and a tile the fine-tune never saw."""
    rows = []
    for tile in (TILE.stem, UNSEEN):
        pair = [Image.open(p / tile / "overlay.png").convert("RGB") for p in (before, after)]
        if tile == TILE.stem:
            for im in pair:
                ImageDraw.Draw(im).rectangle(NOT_CHECKED.bounds, outline=(0, 0, 0), width=3)
        rows.append(pair)
    width, height = rows[0][0].size
    canvas = Image.new("RGB", (2 * width + GAP, len(rows) * (height + TITLE)), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (tile, pair) in enumerate(zip((TILE.stem, UNSEEN), rows, strict=True)):
        y = r * (height + TITLE)
        for c, (im, when) in enumerate(
            zip(pair, ("before: bundled model", "after: fine-tuned"), strict=True)
        ):
            canvas.paste(im, (c * (width + GAP), y + TITLE))
            draw.text((c * (width + GAP) + 8, y + 8), f"{tile}, {when}", fill="black")
    canvas.resize((canvas.width // 2, canvas.height // 2), Image.LANCZOS).save(
        target, optimize=True
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--picture", type=Path)
    args = ap.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    seconds = {"demo_before": run("demo", "-o", str(out / "before"))}
    edit = corrected(out / "before" / TILE.stem / "objects.geojson", out / "corrected.geojson")
    seconds["extract"] = run("extract", str(TILE), "--annotations", str(out / "corrected.geojson"),
                             "--mpp", "0.5", "--stain", "pas", "--classes", "glomerulus=capsule",
                             "--val-fraction", "0", "-o", str(out / "patches"))  # fmt: skip
    seconds["finetune"] = run("finetune", "--data", str(out / "patches"), "-o", str(out / "run"))
    seconds["demo_after"] = run(
        "demo", "-o", str(out / "after"), "--weights", str(out / "run" / "model")
    )
    from omniseg.evaluation.evaluate import evaluate_path

    patches = ROOT.parent / "shared" / "data" / "kidney-patches"
    forgetting = {}
    if patches.is_dir():
        for name, model in (("before", None), ("after", out / "run" / "model")):
            result = evaluate_path(patches, model, precision="fp32")
            forgetting[name] = {t: round(r["dice"], 4) for t, r in result.summary["tasks"].items()}
    report = {"tile": TILE.name, "correction": edit, "seconds": seconds,
              "glomeruli_before": counts(out / "before"), "glomeruli_after": counts(out / "after"),
              "dice_on_88_kidney_patches": forgetting}  # fmt: skip
    if args.picture:
        picture(out / "before", out / "after", args.picture)
    text = json.dumps(report, indent=2)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
