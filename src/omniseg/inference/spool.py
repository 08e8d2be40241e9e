"""An on-disk spool of SlideObjects, so a whole slide's polygons are never in memory together.

Objects are appended as they are traced, in any order (tracing follows the work store's chunks,
not the ids), one fixed-size binary header (id, class, measurements, box) plus the geometry as
WKB per object; iterating reads them back one at a time in id order, as often as needed (once
per output writer). Only each object's file offset is kept in memory. Floats are stored as float64 and
WKB keeps every coordinate exactly, so the outputs are byte-identical to writing the objects
straight from memory.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import shapely

from omniseg.export.objects import SlideObject

# id, class_id, area_um2, perimeter_um, centroid x/y, bbox (4), mean_probability, WKB length
RECORD = struct.Struct("<qiddddqqqqdI")
READ_BUFFER = 1 << 20  # bytes; reading is sequential


class ObjectSpool:
    """Append-then-replay store of SlideObjects in one file (removed by ``remove`` / ``with``);
    replayed in id order whatever order they were appended in."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.path, "wb")  # noqa: SIM115 - closed in remove()
        self._offsets: dict[int, int] = {}  # object id -> where its record starts

    @property
    def count(self) -> int:
        return len(self._offsets)

    def append(self, obj: SlideObject) -> None:
        if obj.id in self._offsets:
            raise ValueError(f"{self.path}: object id {obj.id} was already spooled")
        self._offsets[obj.id] = self._handle.tell()
        wkb = shapely.to_wkb(obj.geometry, byte_order=1)  # little-endian, like RECORD
        self._handle.write(
            RECORD.pack(
                obj.id,
                obj.class_id,
                obj.area_um2,
                obj.perimeter_um,
                *obj.centroid_xy,
                *obj.bbox_xyxy,
                obj.mean_probability,
                len(wkb),
            )
        )
        self._handle.write(wkb)

    def __iter__(self) -> Iterator[SlideObject]:
        """The appended objects in id order, read back lazily (records appended in id order
        are read sequentially: a seek inside the read buffer costs no system call)."""
        self._handle.flush()
        with open(self.path, "rb", buffering=READ_BUFFER) as handle:
            for object_id in sorted(self._offsets):
                handle.seek(self._offsets[object_id])
                header = handle.read(RECORD.size)
                if len(header) != RECORD.size:
                    raise OSError(f"{self.path}: object spool is truncated (disk full?)")
                (oid, cid, area, perimeter, cx, cy, x0, y0, x1, y1, prob, size) = RECORD.unpack(
                    header
                )
                wkb = handle.read(size)
                if len(wkb) != size:
                    raise OSError(f"{self.path}: object spool is truncated (disk full?)")
                yield SlideObject(
                    id=oid,
                    class_id=cid,
                    geometry=shapely.from_wkb(wkb),
                    area_um2=area,
                    perimeter_um=perimeter,
                    centroid_xy=(cx, cy),
                    bbox_xyxy=(x0, y0, x1, y1),
                    mean_probability=prob,
                )

    def remove(self) -> None:
        self._handle.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> ObjectSpool:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()
