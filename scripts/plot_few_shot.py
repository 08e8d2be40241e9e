"""Few-shot curve (scripts/few_shot.py JSON) as a PNG, Pillow only: glomerulus Dice on the
held-out images against k, per stain, before (dotted) and after fine-tuning (solid, mean of
the draws), for the capsule task itself and for segment's output.

.venv/bin/python scripts/plot_few_shot.py docs/results/adapt/few-shot-task.json docs/images/few-shot.png
"""

from __future__ import annotations

import itertools
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

from PIL import Image, ImageDraw

PANEL_W, PANEL_H, MARGIN = 420, 300, 50
COLOURS = {"silver": (60, 60, 60), "trichrome": (40, 110, 200), "pas": (200, 60, 140)}
VARIANTS = (("raw", "capsule task"), ("as_segment", "segment's glomerulus"))


def curves(report: dict, variant: str) -> dict[str, dict[int, tuple[float, float]]]:
    """stain -> k -> (mean before, mean after) over the draws."""
    groups = defaultdict(list)
    for run in report["runs"]:
        groups[run["stain"], run["k"]].append(run)
    out: dict[str, dict[int, tuple[float, float]]] = defaultdict(dict)
    for (stain, k), runs in groups.items():
        before = sum(r["before"][variant]["dice"] for r in runs) / len(runs)
        after = sum(r["after"][variant]["dice"] for r in runs) / len(runs)
        out[stain][k] = (before, after)
    return out


def panel(draw: ImageDraw.ImageDraw, x0: int, title: str, data, ks: list[int]) -> None:
    left, top, right, bottom = x0 + MARGIN, MARGIN, x0 + PANEL_W - 10, PANEL_H - 30
    draw.rectangle([left, top, right, bottom], outline=(0, 0, 0))
    draw.text((left, 10), title, fill=(0, 0, 0))
    span = math.log2(max(ks)) or 1.0

    def xy(k: int, dice: float) -> tuple[float, float]:
        return (left + (right - left) * math.log2(k) / span, bottom - (bottom - top) * dice)

    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = xy(1, tick)[1]
        draw.line([left - 4, y, left, y], fill=(0, 0, 0))
        draw.text((x0 + 8, y - 6), f"{tick:.2f}", fill=(0, 0, 0))
    for k in ks:
        x = xy(k, 0)[0]
        draw.text((x - 3, bottom + 6), str(k), fill=(0, 0, 0))
    for stain, by_k in data.items():
        colour = COLOURS.get(stain, (0, 150, 0))
        points = sorted(by_k.items())
        after = [xy(k, a) for k, (_, a) in points]
        draw.line(after, fill=colour, width=2)
        for p in after:
            draw.ellipse([p[0] - 3, p[1] - 3, p[0] + 3, p[1] + 3], fill=colour)
        before = [xy(k, b) for k, (b, _) in points]
        for a, b in itertools.pairwise(before):
            draw.line([a, b], fill=colour, width=1)
        draw.text((before[-1][0] - 60, before[-1][1] + 4), f"{stain} before", fill=colour)


def main() -> int:
    report = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    ks = sorted({r["k"] for r in report["runs"]})
    image = Image.new("RGB", (PANEL_W * len(VARIANTS), PANEL_H + 20), "white")
    draw = ImageDraw.Draw(image)
    for i, (variant, title) in enumerate(VARIANTS):
        panel(
            draw,
            i * PANEL_W,
            f"{title}: Dice vs k images (thin: before)",
            curves(report, variant),
            ks,
        )
    draw.text((MARGIN, PANEL_H), "k (training images of that stain)", fill=(0, 0, 0))
    image.save(sys.argv[2])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
