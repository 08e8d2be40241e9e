"""The default model that ships inside the package (offline, SHA-256 checked on load)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from omniseg.errors import OmnisegError

DEFAULT_MODEL_NAME = "omniseg-kidney-v5"
CONFIG_NAME = "config.json"
BUNDLED_ALIAS = "default"  # what --weights / --init accept for the bundled model


def default_model_dir() -> Path | None:
    """Folder of the bundled default model, or None when this build ships no weights."""
    root = resources.files("omniseg").joinpath("weights", DEFAULT_MODEL_NAME)
    path = Path(str(root))
    return path if (path / CONFIG_NAME).is_file() else None


def require_model_dir(weights: str | Path | None) -> Path:
    """``--weights`` if given (``default`` names the bundled model), else the bundled model; a
    clear error when neither exists."""
    if weights is not None and str(weights) != BUNDLED_ALIAS:
        return Path(weights)
    path = default_model_dir()
    if path is None:
        raise OmnisegError(
            "no bundled default model in this build; pass --weights MODEL_DIR "
            "(a folder with config.json + model.safetensors, e.g. RUN_DIR/model from `omniseg train`)"
        )
    return path
