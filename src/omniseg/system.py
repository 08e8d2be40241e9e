"""Environment report behind `omniseg info`."""

from __future__ import annotations

import platform


def system_info() -> dict:
    import torch

    from omniseg import __version__
    from omniseg.catalogue import default_catalogue
    from omniseg.models import count_parameters, create_model, list_models
    from omniseg.runtime.device import default_device

    cat = default_catalogue()
    catalogue_rows = cat.to_dict()
    with torch.device("meta"):
        models = {name: count_parameters(create_model(name)) for name in list_models()}
    return {
        "omniseg": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": default_device(),
        "threads": torch.get_num_threads(),
        "models": models,
        "bundled_model": bundled_model(),
        "tissues": [
            {**row, "magnification": t.magnification, "mpp": t.mpp, "label_value": t.label_value}
            for row, t in zip(catalogue_rows["tissues"], cat.tissues, strict=True)
        ],
        "scales": catalogue_rows["scales"],
    }


def bundled_model() -> dict | None:
    """Name, folder and weights SHA-256 of the model that ships inside the package."""
    from omniseg.models.bundled import DEFAULT_MODEL_NAME, default_model_dir
    from omniseg.models.pretrained import sha256_of

    folder = default_model_dir()
    if folder is None:
        return None
    return {"name": DEFAULT_MODEL_NAME, "folder": str(folder),
            "sha256": sha256_of(folder / "model.safetensors")}  # fmt: skip
