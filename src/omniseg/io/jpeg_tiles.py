"""JPEG tiles whose data end early are corrupt, not grey.

libjpeg (through imagecodecs) decodes a tile whose second half was overwritten or cut off as
grey, with only a warning that never reaches us (a real SVS with half of one tile zeroed gave
27,476 grey px and changed 195,641 labels, exit 0, in the issue-36 audit). A complete JPEG stream ends with the EOI
marker (FF D9): each tile's last bytes, less zero padding, are checked for it the first time a
read touches the tile (one small read per tile, next to a decode of the whole tile), through
tifffile's own file handle under its lock (the one its zarr store reads tiles with)."""

from __future__ import annotations

import numpy as np
import tifffile

from omniseg.errors import OmnisegError

END_OF_IMAGE = b"\xff\xd9"
TAIL_BYTES = 4096  # read from a tile's end: its EOI, after any zero padding a writer added


class JpegTileCheck:
    """The EOI check of one JPEG-compressed pyramid level (tiled or in strips)."""

    def __init__(self, path: str, page: tifffile.TiffPage, level: int) -> None:
        self.path, self.level = path, level
        self._file = page.parent.filehandle
        self.offsets = np.asarray(page.dataoffsets, dtype=np.int64)
        self.counts = np.asarray(page.databytecounts, dtype=np.int64)
        if page.is_tiled:
            self.tile_hw = (int(page.tilelength), int(page.tilewidth))
        else:
            self.tile_hw = (int(page.rowsperstrip or page.imagelength), int(page.imagewidth))
        self.across = -(-int(page.imagewidth) // self.tile_hw[1])
        self.per_plane = self.across * -(-int(page.imagelength) // self.tile_hw[0])
        self.checked = np.zeros(len(self.offsets), dtype=bool)

    @classmethod
    def of(cls, path: str, page: tifffile.TiffPage, level: int) -> JpegTileCheck | None:
        if page.compression != tifffile.COMPRESSION.JPEG:
            return None
        return cls(path, page, level)

    def check(self, x0: int, y0: int, x1: int, y1: int) -> None:
        """OmnisegError if a tile meeting the level window [x0, x1) x [y0, y1) ends early."""
        rows = range(y0 // self.tile_hw[0], -(-y1 // self.tile_hw[0]))
        cols = range(x0 // self.tile_hw[1], -(-x1 // self.tile_hw[1]))
        for plane in range(0, len(self.offsets), self.per_plane):
            for row in rows:
                for col in cols:
                    index = plane + row * self.across + col
                    if index < len(self.offsets) and not self.checked[index]:
                        self._check_tile(index, row, col)
                        self.checked[index] = True

    def _check_tile(self, index: int, row: int, col: int) -> None:
        count = int(self.counts[index])
        if count == 0:
            return  # a sparse tile, never written: read as the fill value
        with self._file.lock:
            self._file.seek(int(self.offsets[index]) + max(0, count - TAIL_BYTES))
            tail = self._file.read(min(count, TAIL_BYTES))
        if not tail.rstrip(b"\x00").endswith(END_OF_IMAGE):
            y, x = row * self.tile_hw[0], col * self.tile_hw[1]
            raise OmnisegError(
                f"{self.path}: corrupt JPEG tile at level {self.level}, pixels ({x}, {y}) to "
                f"({x + self.tile_hw[1]}, {y + self.tile_hw[0]}): its data end without the "
                "end-of-image marker (cut off or overwritten), so it would decode partly grey; "
                "the file is damaged: copy or export the slide again"
            )
