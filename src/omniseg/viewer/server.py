"""``omniseg view``: a local, read-only web viewer of segmentation results.

Tornado serves it: it is already installed with omniseg (dask.distributed's web layer), is a
mature, maintained server with a static-file handler that refuses paths outside its root, and
needs no second web stack. Every route is fixed; a result is chosen by its index in the list
found at start, never by a path from the request, so nothing outside the result folders (and
the slides their summary.json names) can be reached. Tiles carry cache headers (and ETags, so a
revisit answers 304).
"""

from __future__ import annotations

import csv
import dataclasses
import json
from importlib import resources
from pathlib import Path

import tornado.web

from omniseg.viewer.sources import ResultSource, find_results
from omniseg.viewer.tiles import TILE, max_level

CACHE_SECONDS = 3600
COHORT_CSV = "cohort.csv"
MAX_HIDDEN = 64  # class values in ?hide=: more is not a real request


def static_dir() -> Path:
    return Path(str(resources.files("omniseg").joinpath("viewer", "static")))


class Viewer:
    """The results behind one ``omniseg view`` (and, in compare mode, their counterparts)."""

    def __init__(self, folder: Path, compare: Path | None = None) -> None:
        self.sources = [ResultSource(p) for p in find_results(folder)]
        self.cohort = cohort_rows(folder, self.sources)
        self.compare = [ResultSource(p) for p in find_results(compare)] if compare else []
        if self.compare and len(self.compare) != len(self.sources):
            raise_mismatch(folder, compare, len(self.sources), len(self.compare))

    def source(self, side: str, index: str) -> ResultSource:
        group = self.compare if side == "b" else self.sources
        i = int(index)
        if not 0 <= i < len(group):
            raise tornado.web.HTTPError(404)
        return group[i]

    def close(self) -> None:
        for s in (*self.sources, *self.compare):
            s.close()


def cohort_rows(folder: Path, sources: list[ResultSource]) -> list[dict]:
    """Rows of a cohort's cohort.csv (slide, status, error), each with the index of its result
    in ``sources`` (None for a slide that failed or has not run)."""
    path = folder / COHORT_CSV
    if not path.is_file() or not path.resolve().is_relative_to(folder.resolve()):
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    by_dir = {s.folder.resolve(): i for i, s in enumerate(sources)}
    out = []
    for row in rows:
        result = Path(row.get("result_dir") or "")
        index = by_dir.get((result if result.is_absolute() else folder / result).resolve())
        out.append({"slide": Path(row.get("slide", "")).name, "status": row.get("status", ""),
                    "error": row.get("error", ""), "index": index})  # fmt: skip
    return out


def raise_mismatch(a: Path, b: Path, na: int, nb: int) -> None:
    from omniseg.errors import OmnisegError

    raise OmnisegError(
        f"--compare {b}: {nb} results, but {a} has {na}; compare results of the same slides"
    )


class _Base(tornado.web.RequestHandler):
    def initialize(self, viewer: Viewer) -> None:
        self.viewer = viewer

    def set_default_headers(self) -> None:
        self.set_header("X-Content-Type-Options", "nosniff")

    def write_json(self, data) -> None:
        self.set_header("Content-Type", "application/json")
        self.write(json.dumps(data))


class IndexHandler(_Base):
    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.write((static_dir() / "index.html").read_bytes())


class ResultsHandler(_Base):
    def get(self) -> None:
        def describe(i, s: ResultSource, side):
            return {"index": i, "side": side, "name": s.name, "slide": Path(s.summary["slide"]).name,
                    "width": s.width, "height": s.height, "mpp": s.summary.get("mpp"),
                    "tile": TILE, "max_level": max_level(s.width, s.height),
                    "legend": [dataclasses.asdict(e) for e in s.legend()],
                    "objects": s.summary.get("objects"), "tissue_area_mm2": s.summary.get("tissue_area_mm2"),
                    "model": (s.summary.get("model") or {}).get("weights")}  # fmt: skip

        v = self.viewer
        self.write_json({
            "results": [describe(i, s, "a") for i, s in enumerate(v.sources)],
            "compare": [describe(i, s, "b") for i, s in enumerate(v.compare)],
            "cohort": v.cohort,
        })  # fmt: skip


class ObjectsHandler(_Base):
    def get(self, side: str, index: str) -> None:
        self.write_json(self.viewer.source(side, index).objects())


class TileHandler(_Base):
    def get(self, side: str, index: str, kind: str, level: str, col: str, row: str) -> None:
        source = self.viewer.source(side, index)
        try:
            if kind == "slide":
                data, mime = source.slide_tile(int(level), int(col), int(row)), "image/jpeg"
            else:
                data, mime = (
                    source.label_tile(int(level), int(col), int(row), self._hidden()),
                    "image/png",
                )
        except ValueError as exc:
            raise tornado.web.HTTPError(404, reason="no such tile") from exc
        self.set_header("Content-Type", mime)
        self.set_header("Cache-Control", f"public, max-age={CACHE_SECONDS}")
        self.write(data)

    def _hidden(self) -> frozenset[int]:
        raw = self.get_argument("hide", "")
        values = [v for v in raw.split(",") if v]
        if len(values) > MAX_HIDDEN or not all(v.isdigit() and len(v) <= 3 for v in values):
            raise tornado.web.HTTPError(400, reason="hide: class values, comma-separated")
        return frozenset(int(v) for v in values)


def make_app(viewer: Viewer) -> tornado.web.Application:
    args = {"viewer": viewer}
    number = r"(\d{1,9})"
    return tornado.web.Application([
        (r"/", IndexHandler, args),
        (r"/api/results", ResultsHandler, args),
        (rf"/api/objects/([ab])/{number}", ObjectsHandler, args),
        (rf"/tiles/([ab])/{number}/(slide|labels)/{number}/{number}_{number}\.(?:jpeg|png)", TileHandler, args),
        (r"/static/(.*)", tornado.web.StaticFileHandler, {"path": str(static_dir())}),
    ], compress_response=False)  # fmt: skip
