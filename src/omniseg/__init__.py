"""omniseg: scale-aware multi-tissue segmentation of kidney pathology (Omni-Seg), as software."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("omniseg")
except PackageNotFoundError:  # running from a source tree (e.g. PYTHONPATH=src on a GPU box)
    __version__ = "0.1.0+src"

__all__ = ["__version__"]
