"""Patch datasets: the original folder layout and manifest CSVs."""

from omniseg.data.patches import (
    PatchRecord,
    discover_patches,
    load_labelled,
    load_pair,
    read_image,
    read_labels,
    read_mask,
    select_split,
)

__all__ = [
    "PatchRecord",
    "discover_patches",
    "load_labelled",
    "load_pair",
    "read_image",
    "read_labels",
    "read_mask",
    "select_split",
]
