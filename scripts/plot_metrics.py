"""Draw a run's loss curve and validation Dice (RUN_DIR/metrics.csv) as a PNG, without matplotlib.

.venv/bin/python scripts/plot_metrics.py runs/all-ft/metrics.csv docs/default-model-curve.png
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import cv2
import numpy as np

SIZE = (900, 420)  # width, height of the figure in px
MARGIN = 60
BLACK, BLUE, RED, GREY = (0,) * 3, (200, 80, 30), (40, 40, 220), (200,) * 3  # BGR


def _series(rows: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    pts = [(float(r["step"]), float(r[key])) for r in rows if r.get(key) not in (None, "")]
    arr = np.array(pts, dtype=float).reshape(-1, 2)
    return arr[:, 0], arr[:, 1]


def _to_px(x, y, x_max, y_max):
    w, h = SIZE
    px = MARGIN + x / max(x_max, 1) * (w - 2 * MARGIN)
    py = h - MARGIN - y / max(y_max, 1e-9) * (h - 2 * MARGIN)
    return np.stack([px, py], axis=1).round().astype(np.int32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("metrics", type=Path)
    ap.add_argument("png", type=Path)
    args = ap.parse_args()
    with open(args.metrics, newline="") as fh:
        rows = list(csv.DictReader(fh))
    steps, loss = _series(rows, "loss")
    vsteps, vdice = _series(rows, "val_dice")
    img = np.full((SIZE[1], SIZE[0], 3), 255, np.uint8)
    x_max, y_max = float(steps.max()), max(1.0, float(loss.max()))
    for frac in (0.25, 0.5, 0.75, 1.0):
        y = int(SIZE[1] - MARGIN - frac * (SIZE[1] - 2 * MARGIN))
        cv2.line(img, (MARGIN, y), (SIZE[0] - MARGIN, y), GREY, 1)
        cv2.putText(img, f"{frac * y_max:.2f}", (5, y + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, BLUE)
        cv2.putText(
            img, f"{frac:.2f}", (SIZE[0] - MARGIN + 5, y + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, RED
        )
    cv2.rectangle(img, (MARGIN, MARGIN), (SIZE[0] - MARGIN, SIZE[1] - MARGIN), BLACK, 1)
    cv2.polylines(img, [_to_px(steps, loss, x_max, y_max)], False, BLUE, 1, cv2.LINE_AA)
    if len(vsteps):
        pts = _to_px(vsteps, vdice, x_max, 1.0)  # right axis: Dice 0..1
        cv2.polylines(img, [pts], False, RED, 2, cv2.LINE_AA)
        for p in pts:
            cv2.circle(img, tuple(int(v) for v in p), 3, RED, -1)
    cv2.putText(img, f"step (0..{int(x_max)})", (SIZE[0] // 2 - 40, SIZE[1] - 20),
                cv2.FONT_HERSHEY_SIMPLEX, 0.5, BLACK)  # fmt: skip
    cv2.putText(
        img, "train loss (Dice+BCE)", (MARGIN + 10, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.5, BLUE
    )
    cv2.putText(img, "val mean fg Dice (right axis)", (MARGIN + 260, 30),
                cv2.FONT_HERSHEY_SIMPLEX, 0.5, RED)  # fmt: skip
    args.png.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.png), img)  # colours above are given in OpenCV's BGR order
    print(args.png)


if __name__ == "__main__":
    main()
