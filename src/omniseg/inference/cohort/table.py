"""``OUT/cohort.csv`` (one row per slide, rewritten atomically as slides finish, so a crash at
any moment leaves the previous complete table) and ``OUT/cohort.json`` (the totals).

Rewriting the whole table per slide costs O(slides) each time, O(slides²) for a cohort: 10,000
slides that fail at once took 401 s in the issue-36 audit. So a rewrite is skipped while the time since the last one
is shorter than ``WRITE_COST_RATIO`` times what that one took (the table's I/O stays below ~10%
of the run); a cohort of up to ``ALWAYS_WRITTEN_ROWS`` slides is still written after every slide.
``close`` writes whatever is left."""

from __future__ import annotations

import csv
import io
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from omniseg.atomic import atomic_write_json, atomic_write_text

CSV_NAME = "cohort.csv"
JSON_NAME = "cohort.json"
BASE_COLUMNS = ("slide", "status", "error", "result_dir", "worker", "wall_s", "tissue_area_mm2")
PENDING, DONE, KEPT, FAILED = "pending", "done", "kept", "failed"  # kept: finished earlier
WRITE_COST_RATIO = 10  # wait at least this many times the last rewrite's duration between two
ALWAYS_WRITTEN_ROWS = 500  # a table this small is rewritten after every slide (~1 ms each)


def slide_row(slide: Path, status: str, **values) -> dict:
    return {"slide": str(slide), "status": status, **values}


def summary_values(summary: dict | None) -> dict:
    """The cohort columns a finished slide's summary.json fills."""
    if not summary:
        return {}
    values = {"tissue_area_mm2": summary.get("tissue_area_mm2")}
    for name, entry in summary.get("classes", {}).items():
        values[f"{name}_count"] = entry["count"]
        values[f"{name}_area_mm2"] = entry["area_mm2"]
    return values


class CohortTable:
    """The rows of one cohort in slide order; ``update`` rewrites the CSV atomically (at most as
    often as the rewrite's cost allows), ``close`` writes the final table."""

    def __init__(self, out: Path, slides: Sequence[Path], class_names: Sequence[str]) -> None:
        self.path = Path(out) / CSV_NAME
        per_class = [f"{n}_{k}" for n in class_names for k in ("count", "area_mm2")]
        self.columns = (*BASE_COLUMNS, *per_class)
        earlier = self._earlier_rows()  # a rerun starts from what the last run recorded
        self.rows = {str(s): earlier.get(str(s)) or slide_row(s, PENDING) for s in slides}
        self._status = Counter(r["status"] for r in self.rows.values())
        self._next_write = 0.0  # time.monotonic() before which update() does not rewrite
        self._unwritten = False
        self._write()

    def _earlier_rows(self) -> dict[str, dict]:
        try:
            with open(self.path, newline="", encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
        except (OSError, UnicodeDecodeError, csv.Error):
            return {}
        statuses = (PENDING, DONE, KEPT, FAILED)
        return {r["slide"]: r for r in rows if r.get("slide") and r.get("status") in statuses}

    def update(self, row: dict) -> None:
        previous = self.rows.get(row["slide"])
        if previous is not None:
            self._status[previous["status"]] -= 1
        self._status[row["status"]] += 1
        self.rows[row["slide"]] = row
        self._unwritten = True
        if len(self.rows) <= ALWAYS_WRITTEN_ROWS or time.monotonic() >= self._next_write:
            self._write()

    def close(self) -> None:
        """Write the rows that ``update`` held back."""
        if self._unwritten:
            self._write()

    def counts(self) -> dict[str, int]:
        return {s: self._status[s] for s in (DONE, KEPT, FAILED, PENDING)}

    def write_summary(self, extra: dict) -> Path:
        """cohort.json: status counts, summed objects and areas, and ``extra`` (timing, cluster)."""
        finished = [r for r in self.rows.values() if r["status"] in (DONE, KEPT)]
        totals: dict[str, float] = {}
        for row in finished:
            for column in self.columns[len(BASE_COLUMNS) :]:
                totals[column] = totals.get(column, 0) + _number(row.get(column))
        data = {
            "slides": len(self.rows),
            **self.counts(),
            "tissue_area_mm2": round(sum(_number(r.get("tissue_area_mm2")) for r in finished), 6),
            "totals": {k: round(v, 6) for k, v in totals.items()},
            "failed_slides": {
                r["slide"]: r.get("error") for r in self.rows.values() if r["status"] == FAILED
            },
            **extra,
        }
        return atomic_write_json(self.path.with_name(JSON_NAME), data)

    def _write(self) -> None:
        began = time.monotonic()
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.rows.values())
        atomic_write_text(self.path, buffer.getvalue())
        finished = time.monotonic()
        self._next_write = finished + WRITE_COST_RATIO * (finished - began)
        self._unwritten = False


def _number(value) -> float:
    """A cell as a number: rows carried over from an earlier cohort.csv hold strings."""
    return float(value) if value not in (None, "") else 0.0
