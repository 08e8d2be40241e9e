"""Where a slide's µm/px comes from: metadata, objective power, or the user's override.

Rules (docs/wsi.md "Resolution"): an override (`--mpp`, else `--magnification`) wins; else the
metadata mpp if it lies in MPP_VALID_RANGE (a 72-dpi default tag gives 352.8 µm/px and counts as
missing); else the objective power (mpp = 10 / power, so 40x -> 0.25); else unknown.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET

from omniseg.errors import OmnisegError
from omniseg.io.base import MPP_VALID_RANGE

MICRONS_AT_1X = 10.0  # µm/px of a 1x objective: the usual convention 40x = 0.25 µm/px
MICRONS_PER_UNIT = {2: 25400.0, 3: 10000.0}  # TIFF ResolutionUnit: 2 inch, 3 centimetre
OME_UNIT_TO_MICRONS = {"µm": 1.0, "um": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6, "Å": 1e-4}
_APERIO_FIELD = re.compile(r"\|\s*(MPP|AppMag)\s*=\s*([0-9.eE+-]+)")


def valid_mpp(value: float | None) -> float | None:
    """The value when it is a plausible microscope µm/px, else None (treated as missing)."""
    if value is None or not math.isfinite(value):
        return None
    low, high = MPP_VALID_RANGE
    return float(value) if low <= value <= high else None


def valid_power(value: float | None) -> float | None:
    """A plausible objective power (> 0 and finite), else None."""
    if value is None or not math.isfinite(value) or value <= 0:
        return None
    return float(value)


def parse_float(text: object) -> float | None:
    try:
        return float(str(text).strip())
    except (TypeError, ValueError):
        return None


def aperio_fields(description: str) -> tuple[float | None, float | None]:
    """(mpp, objective power) from an Aperio ImageDescription (`|MPP = 0.2520|AppMag = 40`)."""
    fields = {name: parse_float(value) for name, value in _APERIO_FIELD.findall(description)}
    return valid_mpp(fields.get("MPP")), valid_power(fields.get("AppMag"))


def tiff_tag_mpp(x_resolution, y_resolution, unit) -> float | None:
    """µm/px from TIFF X/YResolution (rational, px per unit) and ResolutionUnit (inch or cm)."""
    unit_code = int(getattr(unit, "value", unit) or 0)
    if unit_code not in MICRONS_PER_UNIT or x_resolution is None:
        return None
    values = []
    for resolution in (x_resolution, y_resolution or x_resolution):
        numerator, denominator = resolution if isinstance(resolution, tuple) else (resolution, 1)
        if not numerator or not denominator:
            return None
        values.append(MICRONS_PER_UNIT[unit_code] * denominator / numerator)
    return valid_mpp(sum(values) / len(values))


def ome_mpp(ome_xml: str) -> float | None:
    """µm/px from the first OME Pixels element's PhysicalSizeX/Y (default unit µm)."""
    try:
        root = ET.fromstring(ome_xml)
    except ET.ParseError:
        return None
    for element in root.iter():
        if element.tag.rsplit("}", 1)[-1] != "Pixels":
            continue
        sizes = []
        for axis in ("X", "Y"):
            size = parse_float(element.get(f"PhysicalSize{axis}"))
            unit = OME_UNIT_TO_MICRONS.get(element.get(f"PhysicalSize{axis}Unit", "µm"))
            if size is not None and unit is not None:
                sizes.append(size * unit)
        return valid_mpp(sum(sizes) / len(sizes)) if sizes else None
    return None


def check_overrides(mpp: float | None, magnification: float | None) -> None:
    """Reject a non-positive or NaN `--mpp` / `--magnification` with a message naming the option."""
    for option, value in (("--mpp", mpp), ("--magnification", magnification)):
        if value is None:
            continue
        number = parse_float(value)
        if number is None or not math.isfinite(number) or number <= 0:
            raise OmnisegError(
                f"{option} must be a positive number, got {value!r}; "
                f"e.g. {option} {0.25 if option == '--mpp' else 40}"
            )


def resolve_mpp(
    metadata_mpp: float | None,
    objective_power: float | None,
    *,
    mpp: float | None = None,
    magnification: float | None = None,
) -> tuple[float | None, str]:
    """(µm/px at level 0, source) following the rules in the module docstring."""
    check_overrides(mpp, magnification)
    if mpp is not None:
        return float(mpp), "override"
    if magnification is not None:
        return MICRONS_AT_1X / float(magnification), "override"
    if valid_mpp(metadata_mpp) is not None:
        return float(metadata_mpp), "metadata"
    power = valid_power(objective_power)
    if power is not None and valid_mpp(MICRONS_AT_1X / power) is not None:
        return MICRONS_AT_1X / power, "objective"
    return None, "unknown"
