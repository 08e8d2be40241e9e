"""Bar chart of seconds per mm² of tissue by backend, from benchmarks/run.py JSON (Pillow only).

.venv/bin/python benchmarks/plot_performance.py RUN.json OUT.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from PIL import Image, ImageDraw

WIDTH, BAR_HEIGHT, GAP, LEFT, RIGHT, TOP = 760, 34, 14, 190, 120, 48
COLOURS = [(70, 110, 180), (220, 120, 50), (80, 160, 90), (170, 80, 160)]


def plot(result: dict, out: Path) -> Path:
    rows = [(name, p["seconds_per_mm2_tissue"]) for name, p in result["pipeline"].items()]
    height = TOP + len(rows) * (BAR_HEIGHT + GAP) + 40
    image = Image.new("RGB", (WIDTH, height), "white")
    draw = ImageDraw.Draw(image)
    cpu = result["machine"]["cpu"]
    title = f"segment, seconds per mm2 of tissue (lower is better); {cpu['model']}, "
    draw.text((10, 12), title + f"{cpu['threads']} threads", fill="black")
    scale = (WIDTH - LEFT - RIGHT) / max(v for _, v in rows)
    for i, (name, value) in enumerate(rows):
        y = TOP + i * (BAR_HEIGHT + GAP)
        draw.text((10, y + BAR_HEIGHT // 3), name, fill="black")
        draw.rectangle([LEFT, y, LEFT + value * scale, y + BAR_HEIGHT], fill=COLOURS[i % 4])
        draw.text(
            (LEFT + value * scale + 8, y + BAR_HEIGHT // 3), f"{value:.1f} s/mm2", fill="black"
        )
    image.save(out)
    return out


if __name__ == "__main__":
    print(plot(json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2])))
