"""Recipes: training stages run in order, each starting from the previous stage's model.

The shipped model is two stages (random crops, then foreground-biased crops), so "train the
shipped recipe" must mean both: bare ``omniseg train`` runs :data:`DEFAULT_RECIPE`, whose configs
ship inside the package. A one-stage recipe is an ordinary run folder; a longer one keeps each
stage in ``RUN/stage-<j>/`` and copies the last stage's model to ``RUN/model``.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from omniseg.atomic import atomic_folder
from omniseg.errors import OmnisegError
from omniseg.training.config import TrainConfig
from omniseg.training.config_loading import load_train_config, replace_config
from omniseg.training.fit import TrainResult
from omniseg.training.rundir import CONFIG_NAME, MODEL_NAME, RUN_MARKER
from omniseg.training.trainer import train

# The shipped model's recipe (docs/model-card.md), in order.
DEFAULT_RECIPE = ("train_lite0.yaml", "finetune_lite0.yaml")
STAGE_PREFIX = "stage-"
RECIPE_MARKER = ".omniseg-recipe"


def packaged_config(name: str) -> Path:
    """A config file shipped inside the package (``omniseg/configs/``)."""
    path = Path(str(resources.files("omniseg") / "configs" / name))
    if not path.is_file():
        raise OmnisegError(f"{path}: packaged config missing; reinstall omniseg")
    return path


def default_recipe_paths() -> tuple[Path, ...]:
    return tuple(packaged_config(name) for name in DEFAULT_RECIPE)


def load_recipe(
    paths: Sequence[Path] | None, overrides: dict[str, Any] | None = None
) -> tuple[TrainConfig, ...]:
    """Stage configs from YAML files (none: the shipped recipe) with the CLI's overrides.

    ``run.init`` applies to the first stage only (later stages start from the one before);
    ``run.seed`` moves every stage's seed by the same amount, so stages keep distinct seeds.
    """
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    init, seed = given.pop("run.init", None), given.pop("run.seed", None)
    stages = [load_train_config(p, given) for p in (paths or default_recipe_paths())]
    first_seed = stages[0].run.seed
    out = []
    for j, stage in enumerate(stages):
        extra: dict[str, Any] = {}
        if seed is not None:
            extra["run.seed"] = seed + stage.run.seed - first_seed
        if j == 0 and init is not None:
            extra["run.init"] = init
        out.append(replace_config(stage, extra) if extra else stage)
    return tuple(out)


def stage_dir(folder: Path, index: int) -> Path:
    return folder / f"{STAGE_PREFIX}{index + 1}"


def saved_stage_configs(folder: Path) -> list[Path]:
    """The config.yaml of each stage of a run folder (one for a one-stage run; none if new)."""
    if (folder / CONFIG_NAME).is_file():
        return [folder / CONFIG_NAME]
    found, j = [], 0
    while (stage_dir(folder, j) / CONFIG_NAME).is_file():
        found.append(stage_dir(folder, j) / CONFIG_NAME)
        j += 1
    return found


def _check_folder(folder: Path, *, resume: bool, overwrite: bool) -> None:
    """A multi-stage folder is refused unless new, resumed, or made by omniseg (overwrite)."""
    if folder.exists() and not folder.is_dir():
        raise OmnisegError(f"{folder}: exists and is not a folder; choose another --out")
    if not folder.is_dir() or not any(folder.iterdir()) or resume:
        return
    if not overwrite:
        raise OmnisegError(
            f"{folder}: already exists; pass --resume to continue it or --overwrite to replace it"
        )
    if not (folder / RECIPE_MARKER).is_file():
        raise OmnisegError(
            f"{folder}: --overwrite refused: it has no {RECIPE_MARKER} marker (not a multi-stage "
            "run folder of omniseg); nothing was deleted. Choose another --out"
        )


def _copy_model(source: Path, target: Path) -> None:
    with atomic_folder(target) as tmp:
        for item in source.iterdir():
            shutil.copy2(item, tmp / item.name)


def run_stages(
    stages: Sequence[TrainConfig],
    folder: Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    callback: Callable[[int, dict], None] | None = None,
) -> TrainResult:
    """Train every stage into ``folder`` (resumable stage by stage); the result of the last."""
    if not stages:
        raise OmnisegError("a recipe needs at least one stage (--config)")
    if len(stages) == 1:
        config = replace_config(stages[0], {"run.out": str(folder)})
        return train(config, resume=resume, overwrite=overwrite, callback=callback)
    _check_folder(folder, resume=resume, overwrite=overwrite)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RECIPE_MARKER).touch()
    (folder / RUN_MARKER).touch()
    previous: Path | None = None
    result: TrainResult | None = None
    for j, stage in enumerate(stages):
        here = stage_dir(folder, j)
        chained = {"run.out": str(here)}
        if previous is not None:
            chained["run.init"] = str(previous)
        result = train(
            replace_config(stage, chained), resume=resume, overwrite=overwrite, callback=callback
        )
        previous = result.model_dir
    assert result is not None and previous is not None
    _copy_model(previous, folder / MODEL_NAME)
    return dataclasses.replace(result, run_dir=folder, model_dir=folder / MODEL_NAME)
