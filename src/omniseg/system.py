"""Environment report behind `omniseg info`."""

from __future__ import annotations

import platform


def default_device() -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def system_info() -> dict:
    import torch

    from omniseg import __version__
    from omniseg.catalogue import default_catalogue
    from omniseg.models import count_parameters, create_model, list_models

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
        "tissues": [
            {**row, "magnification": t.magnification, "mpp": t.mpp, "label_value": t.label_value}
            for row, t in zip(catalogue_rows["tissues"], cat.tissues, strict=True)
        ],
        "scales": catalogue_rows["scales"],
    }
