"""Tissue and scale catalogue: the one table of task ids, names, scales and colours.

The table itself is data (``catalogue.json``); this module only gives it types. Everything in
omniseg that needs a task id, a magnification or a display colour asks here.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np

from omniseg.errors import OmnisegError


@dataclass(frozen=True)
class Scale:
    """One magnification slot of the scale-aware controller."""

    id: int
    magnification: int
    mpp: float  # nominal micrometres per pixel


@dataclass(frozen=True)
class Tissue:
    """One tissue type = one task of the partially labelled problem."""

    id: int
    name: str
    full_name: str
    scale_id: int
    color: tuple[int, int, int]
    mask_suffix: str

    @property
    def label_value(self) -> int:
        """Value of this class in any single label map written by omniseg (0 = background)."""
        return self.id + 1

    @property
    def scale(self) -> Scale:
        return scales()[self.scale_id]

    @property
    def mpp(self) -> float:
        return self.scale.mpp

    @property
    def magnification(self) -> int:
        return self.scale.magnification


# Words a pathologist types for --tasks -> the catalogue's task names
TASK_ALIASES = {
    "glomerulus": ("capsule", "tuft"), "glomeruli": ("capsule", "tuft"),
    "bowman": ("capsule",), "bowmans": ("capsule",), "bowman's capsule": ("capsule",),
    "glomerular tuft": ("tuft",), "artery": ("vessel",), "arteries": ("vessel",),
}  # fmt: skip


@dataclass(frozen=True)
class Catalogue:
    """The classes of one model (saved in its config.json) and the scale slots."""

    tissues: tuple[Tissue, ...]
    scales: tuple[Scale, ...]

    def scale_of(self, t: Tissue) -> Scale:
        return self.scales[t.scale_id]

    def tissue(self, key: int | str) -> Tissue:
        """Look a tissue up by id or short name, with an error that lists the valid ones."""
        for t in self.tissues:
            if key == t.id or (isinstance(key, str) and key.lower() == t.name):
                return t
        valid = ", ".join(f"{t.id}={t.name}" for t in self.tissues)
        raise OmnisegError(f"unknown tissue {key!r}; valid: {valid}")

    def parse_tasks(self, spec: str | None) -> tuple[Tissue, ...]:
        """``"dt,pt,capsule"`` -> tissues (None or "all" = every task). The names a pathologist
        uses also work: ``glomerulus`` is the glomerular unit and its tuft (what summary.json and
        the objects call glomerulus), ``bowman`` the capsule."""
        if spec is None or spec.strip().lower() in ("", "all"):
            return self.tissues
        chosen: list[Tissue] = []
        for part in (p.strip() for p in spec.split(",")):
            if not part:
                continue
            names = TASK_ALIASES.get(part.lower(), (part,))
            chosen += [self.tissue(int(n) if n.isdigit() else n) for n in names]
        return tuple(sorted(set(chosen), key=lambda t: t.id))

    def scale_at(self, magnification: int) -> Scale:
        for s in self.scales:
            if s.magnification == magnification:
                return s
        valid = ", ".join(f"{s.magnification}x" for s in self.scales)
        raise OmnisegError(f"no {magnification}x scale; valid: {valid}")

    def parse_task_scales(self, entries: tuple[str, ...]) -> dict[int, int]:
        """``("ptc=20",)`` or ``("ptc=20x",)`` -> {task id: scale id}: tasks a model runs at
        another magnification than the one its patches were labelled at."""
        chosen: dict[int, int] = {}
        for entry in entries:
            name, sep, mag = entry.partition("=")
            if not sep or not mag.strip().lower().removesuffix("x").isdigit():
                raise OmnisegError(f"task scale {entry!r}: write TASK=MAGNIFICATION, e.g. ptc=20")
            t = self.tissue(name.strip())
            chosen[t.id] = self.scale_at(int(mag.strip().lower().removesuffix("x"))).id
        return chosen

    def with_task_scales(self, task_scales: dict[int, int]) -> Catalogue:
        """This catalogue with some tasks moved to other scale slots (ids from
        :meth:`parse_task_scales`)."""
        moved = tuple(
            dataclasses.replace(t, scale_id=task_scales.get(t.id, t.scale_id)) for t in self.tissues
        )
        return Catalogue(moved, self.scales)

    def to_dict(self) -> dict:
        return {
            "tissues": [
                {
                    "id": t.id,
                    "name": t.name,
                    "full_name": t.full_name,
                    "scale_id": t.scale_id,
                    "color": list(t.color),
                    "mask_suffix": t.mask_suffix,
                }
                for t in self.tissues
            ],
            "scales": [
                {"id": s.id, "magnification": s.magnification, "mpp": s.mpp} for s in self.scales
            ],
        }


def catalogue_from_dict(raw: dict, *, kidney: bool = True) -> Catalogue:
    """Validate and type a catalogue mapping (from the package or a model's config.json).

    ``kidney``: the classes must be the package's six, by id and name (:func:`check_kidney`)."""
    try:
        scale_list = tuple(
            Scale(int(s["id"]), int(s["magnification"]), float(s["mpp"])) for s in raw["scales"]
        )
        tissue_list = tuple(
            Tissue(
                int(t["id"]),
                str(t["name"]),
                str(t["full_name"]),
                int(t["scale_id"]),
                tuple(int(c) for c in t["color"]),
                str(t.get("mask_suffix", t["name"])),
            )
            for t in raw["tissues"]
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise OmnisegError(f"invalid tissue catalogue: {exc!r}") from exc
    if [s.id for s in scale_list] != list(range(len(scale_list))):
        raise OmnisegError("invalid tissue catalogue: scale ids must be 0..n-1 in order")
    if [t.id for t in tissue_list] != list(range(len(tissue_list))):
        raise OmnisegError("invalid tissue catalogue: tissue ids must be 0..n-1 in order")
    for t in tissue_list:
        if not 0 <= t.scale_id < len(scale_list):
            raise OmnisegError(f"invalid tissue catalogue: {t.name} has unknown scale {t.scale_id}")
    catalogue = Catalogue(tissue_list, scale_list)
    if kidney:
        check_kidney(catalogue)
    return catalogue


def check_kidney(catalogue: Catalogue) -> None:
    """A model's catalogue names the kidney's six classes, each by its id: what the merge rule
    (glomerulus = capsule ∪ tuft, PTC only in the interstitium), the glomerulus check and the
    outputs do with a class is kidney anatomy tied to it. A model may change where a class runs
    (its scale: PTC at 20x) and how it is shown (full name, colour), not what it is."""
    base = default_catalogue()
    found = [(t.id, t.name) for t in catalogue.tissues]
    wanted = [(t.id, t.name) for t in base.tissues]
    if found != wanted:
        raise OmnisegError(
            f"invalid tissue catalogue: classes {found} are not the kidney's {wanted}; a model "
            "may move a class to another scale or recolour it, not rename or reorder it"
        )
    if [s.mpp for s in catalogue.scales] != [s.mpp for s in base.scales]:
        raise OmnisegError("invalid tissue catalogue: its scales differ from the package's")


@cache
def default_catalogue() -> Catalogue:
    text = resources.files("omniseg").joinpath("catalogue.json").read_text(encoding="utf-8")
    return catalogue_from_dict(json.loads(text), kidney=False)


def tissues() -> tuple[Tissue, ...]:
    return default_catalogue().tissues


def scales() -> tuple[Scale, ...]:
    return default_catalogue().scales


def tissue(key: int | str) -> Tissue:
    """A tissue of the package's catalogue by id or short name."""
    return default_catalogue().tissue(key)


def parse_tasks(spec: str | None) -> tuple[Tissue, ...]:
    """A comma-separated task list of the package's catalogue (None or "all" = every task)."""
    return default_catalogue().parse_tasks(spec)


def catalogue_of(model) -> Catalogue:
    """The model's own catalogue (a model folder saves it), else the package's."""
    return getattr(model, "catalogue", None) or default_catalogue()


def moved_tasks(catalogue: Catalogue) -> dict[int, int]:
    """{task id: scale id} of the tasks ``catalogue`` runs at another scale than the package's
    catalogue (where their patches are labelled), e.g. PTC at 20x."""
    base = default_catalogue()
    if len(catalogue.tissues) != len(base.tissues):
        return {}
    return {
        t.id: t.scale_id
        for t, b in zip(catalogue.tissues, base.tissues, strict=True)
        if t.scale_id != b.scale_id
    }


def scale_for_mpp(mpp: float) -> Scale:
    """The scale slot whose nominal µm/px is nearest (in log space) to ``mpp``."""
    import math

    return min(scales(), key=lambda s: abs(math.log2(s.mpp) - math.log2(mpp)))


@dataclass(frozen=True)
class GlomerulusSize:
    """Equivalent diameters (µm) a glomerular unit can have in a section: mature human
    glomeruli are about 150-250 µm across; a tangential cut shows less (but below 40 µm no
    tuft is recognisable) and even hypertrophic ones stay well under 400 µm."""

    min_um: float = 40.0
    max_um: float = 400.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_um) and 0 < self.min_um < self.max_um):
            raise OmnisegError(
                f"glomerulus diameters need 0 < min < max µm, got [{self.min_um}, {self.max_um}]"
            )


def equivalent_diameter_um(area_px: np.ndarray, pixel_area_um2: float) -> np.ndarray:
    """Diameter of the disc with the object's area (µm)."""
    return 2.0 * np.sqrt(np.asarray(area_px, np.float64) * pixel_area_um2 / np.pi)
