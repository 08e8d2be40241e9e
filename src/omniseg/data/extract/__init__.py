"""Annotated whole slides -> native-scale training patches (``omniseg extract``)."""

from omniseg.data.extract.run import ExtractResult, ExtractSettings, extract_patches

__all__ = ["ExtractResult", "ExtractSettings", "extract_patches"]
