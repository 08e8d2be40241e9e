"""`open_slide`: pick the reader by file content (never by extension).

Order: OpenSlide for the vendor formats it recognises (SVS, NDPI, MRXS, ...); for Aperio SVS the
pixels are then decoded by tifffile when it sees the same pyramid (exact level pixels, see
_prefer_tifffile_pixels), with OpenSlide's metadata. For TIFFs that
OpenSlide only knows as "generic-tiff" the reader that sees more pyramid levels wins, tifffile on
a tie (it sees SubIFD/OME pyramids OpenSlide flattens to one level, decodes faster, and scales
deep 16-bit data by the slide's own maximum). Else tifffile for any other TIFF, else Pillow.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import openslide

from omniseg.errors import OmnisegError
from omniseg.io.base import SlideReader
from omniseg.io.memory_readers import PillowReader
from omniseg.io.openslide_reader import OPENSLIDE_ERRORS, OpenSlideReader
from omniseg.io.resolution import check_overrides
from omniseg.io.tiff_reader import TiffReader, UnreadableTiffError

GENERIC_TIFF_VENDOR = "generic-tiff"
APERIO_VENDOR = "aperio"
SUPPORTED = "SVS, NDPI, MRXS, SCN, Philips/Ventana TIFF, OME-TIFF, pyramidal TIFF, PNG, JPEG"
# Suffixes taken when a FOLDER is given as a slide (readers still choose by content).
SLIDE_SUFFIXES = frozenset(
    {".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide", ".tif", ".tiff"}
)


BOOLEAN_WORDS = ("true", "false", "yes", "no", "on", "off", "1", "0")


def expand_slide_paths(paths) -> list[Path]:
    """Slide arguments with each folder replaced by the slide files directly inside it (sorted).

    A folder without such files stays as it is, so opening it reports a folder, not a slide.
    Every argument must exist, checked before any work starts (``--resume true`` would otherwise
    make ``true`` a second slide, found missing only after the first slide's whole run).
    """
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            flag_value = str(raw).lower() in BOOLEAN_WORDS
            fix = (
                "flags such as --resume and --overwrite take no value: drop it"
                if flag_value
                else "check the slide path"
            )
            raise OmnisegError(f"{raw}: no such file; {fix}")
        inside = (
            sorted(
                p
                for p in path.iterdir()
                if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in SLIDE_SUFFIXES
            )
            if path.is_dir()
            else []
        )
        out.extend(inside or [path])
    return out


def open_slide(
    path: str | os.PathLike[str],
    *,
    mpp: float | None = None,
    magnification: float | None = None,
    require_mpp: bool = True,
) -> SlideReader:
    """Open a slide or region image; the caller must `close()` it.

    `mpp` / `magnification` override the metadata. With `require_mpp` (default) a slide whose
    resolution stays unknown is an OmnisegError that suggests `--mpp`.
    """
    check_overrides(mpp, magnification)
    slide_path = Path(path)
    if slide_path.is_dir():
        raise OmnisegError(
            f"{slide_path}: is a folder without slide files ({', '.join(sorted(SLIDE_SUFFIXES))}); "
            "pass slide files, or a folder that holds them"
        )
    if slide_path.is_symlink() and not slide_path.exists():
        raise OmnisegError(
            f"{slide_path}: a broken symbolic link or a link loop; point it at the slide file"
        )
    if not slide_path.is_file():
        raise OmnisegError(f"{slide_path}: no such file; check the slide path")
    reader = _open_by_content(slide_path, mpp, magnification)
    try:
        _probe(reader)
    except OmnisegError:
        reader.close()
        raise
    if require_mpp and reader.info.mpp is None:
        reader.close()
        raise OmnisegError(
            f"{slide_path}: the resolution (µm/px) is unknown: no valid MPP or objective power in "
            "its metadata; pass --mpp (e.g. --mpp 0.25 for a 40x scan) or --magnification"
        )
    return reader


def _open_by_content(path: Path, mpp: float | None, magnification: float | None) -> SlideReader:
    failures: list[str] = []
    via_openslide = via_tiff = None
    try:
        vendor = openslide.OpenSlide.detect_format(str(path))
    except OPENSLIDE_ERRORS:
        vendor = None
    if vendor is not None:
        try:
            via_openslide = OpenSlideReader(path, mpp=mpp, magnification=magnification)
        except OmnisegError as exc:
            failures.append(str(exc))
        else:
            if vendor == APERIO_VENDOR:
                return _prefer_tifffile_pixels(via_openslide, path, mpp, magnification)
            if vendor != GENERIC_TIFF_VENDOR:
                return via_openslide
    try:
        via_tiff = TiffReader(path, mpp=mpp, magnification=magnification)
    except UnreadableTiffError:  # corrupt means corrupt, whichever reader noticed
        if via_openslide is not None:
            via_openslide.close()
        raise
    except OmnisegError as exc:
        failures.append(str(exc))
    if via_tiff is not None and via_openslide is not None:
        if via_openslide.info.level_count > via_tiff.info.level_count:
            via_tiff.close()
            return via_openslide
        via_openslide.close()
        return via_tiff
    if via_tiff is not None or via_openslide is not None:
        return via_tiff or via_openslide
    try:
        return PillowReader(path, mpp=mpp, magnification=magnification)
    except OmnisegError as exc:
        failures.append(str(exc))
    raise OmnisegError(
        f"{path}: cannot be read as a slide or image; it may be corrupt, truncated or of an "
        f"unsupported format (supported: {SUPPORTED}). Details: " + " | ".join(failures)
    )


def _prefer_tifffile_pixels(
    via_openslide: OpenSlideReader, path: Path, mpp: float | None, magnification: float | None
) -> SlideReader:
    """Aperio SVS: decode with tifffile when it sees the same pyramid, keep OpenSlide's metadata.

    OpenSlide maps level coordinates through level 0 and, for non-integer downsamples
    (2.0005, 4.0003, ...), resamples by a sub-pixel offset (a measured 2.5 grey-level mean
    blur on a TCGA slide); tifffile returns the stored level pixels exactly and 2-4x faster.
    """
    try:
        via_tiff = TiffReader(path, mpp=mpp, magnification=magnification)
    except UnreadableTiffError:
        via_openslide.close()
        raise
    except OmnisegError:
        return via_openslide
    if via_tiff.info.level_dimensions != via_openslide.info.level_dimensions:
        via_tiff.close()
        return via_openslide
    via_tiff.info = replace(
        via_openslide.info,
        reader=via_tiff.info.reader,
        level_downsamples=via_openslide.info.level_downsamples,
    )
    via_openslide.close()
    return via_tiff


def _probe(reader: SlideReader) -> None:
    """Decode one pixel at the far corner of level 0 and of the coarsest level.

    Writers put level 0's last tiles near the end of the file, so a truncated file fails here, at
    open time, instead of hours into a run.
    """
    for level in (0, reader.info.level_count - 1):
        width, height = reader.info.level_dimensions[level]
        reader.read_region(level, width - 1, height - 1, 1, 1)
