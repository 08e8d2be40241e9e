"""``omniseg finetune``: adapt a trained model to a lab's own corrected patches, forgetting nothing.

The patches (``omniseg extract`` of a corrected QuPath export, or any manifest) carry labels for
a few tasks. Those tasks learn from them. Every other task is held to the *starting model's own
predictions* on the same patches ("learning without forgetting", Li & Hoiem 2016): the package
does not ship our training patches, but the starting model can label the user's. Those labels
are made once (``training/complete.py``, confident pixels only) into ``RUN/patches/``; the run
itself is an ordinary ``train`` run in ``RUN/train/`` (progress, checkpoints, ``--resume``).
``RUN/model/`` is the result, ``RUN/adapt.json`` what was adapted from what.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from omniseg.atomic import atomic_write_json
from omniseg.catalogue import tissue, tissues
from omniseg.data import PatchRecord, discover_patches
from omniseg.errors import OmnisegError
from omniseg.models import load_pretrained
from omniseg.models.pretrained import sha256_of
from omniseg.training.complete import CompletionSettings, complete_labels
from omniseg.training.config_loading import load_train_config
from omniseg.training.recipe import packaged_config
from omniseg.training.rundir import MODEL_NAME
from omniseg.training.trainer import train

ADAPT_CONFIG = "adapt.yaml"
RECORD_NAME = "adapt.json"
PATCHES_DIR = "patches"
TRAIN_DIR = "train"
OUR_ENTRIES = {PATCHES_DIR, TRAIN_DIR, MODEL_NAME, RECORD_NAME}
# Patches more than this factor finer or coarser than a task's scale are refused: the network
# meets each task at one magnification, and a lab's "20x" export at 40x halves every object.
MPP_TOLERANCE = math.sqrt(2.0)
# Every scale the other tasks can be shown at: from 2x coarser (10x -> 5x) to the finest (5x -> 40x)
KEEP_MIN_ZOOM, KEEP_MAX_ZOOM = 0.5, 8.0


@dataclass(frozen=True)
class AdaptSettings:
    """What ``omniseg finetune`` changes; None keeps configs/adapt.yaml's value."""

    weights: Path | None = None  # starting model folder; None = the bundled model
    tasks: tuple[int, ...] = ()  # tasks to adapt; empty = every task the patches are labelled for
    max_steps: int | None = None
    lr: float | None = None
    seed: int | None = None
    keep_others: bool = True  # hold the other tasks to the starting model (False: plain fine-tune)
    # "task": only the adapted tasks' controller blocks learn (the others stay bit-identical, so
    # nothing needs holding); "decoder" / "all": more capacity, held by distillation
    parts: str | None = None  # None = configs/adapt.yaml's finetune.train_parts
    config_overrides: dict = dataclasses.field(default_factory=dict)  # --set section.key=value
    resume: bool = False
    overwrite: bool = False
    progress: bool = True


@dataclass(frozen=True)
class AdaptResult:
    run_dir: Path
    model_dir: Path
    tasks: tuple[str, ...]
    kept: tuple[str, ...]
    steps: int
    seconds: float


def adapted_tasks(
    records: list[PatchRecord], wanted: tuple[int, ...], where: Path
) -> tuple[int, ...]:
    """The tasks to adapt: ``wanted`` (each must have patches) or every task present."""
    present = sorted({r.task_id for r in records})
    if not wanted:
        return tuple(present)
    missing = [tissue(t).name for t in wanted if t not in present]
    if missing:
        names = ", ".join(tissue(t).name for t in present)
        raise OmnisegError(
            f"{where}: no patches labelled for {', '.join(missing)}; the patches hold {names}: "
            "pass --tasks from those, or extract patches for the others"
        )
    return tuple(sorted(wanted))


def check_pixel_size(data: Path, records: list[PatchRecord]) -> None:
    """Refuse patches whose recorded µm/px (manifest ``mpp``) is far from their task's scale."""
    manifest = data if data.is_file() else data / "manifest.csv"
    if not manifest.is_file():
        return  # a folder layout records no pixel size: nothing to check
    with open(manifest, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "mpp" not in rows[0]:
        return
    by_image = {(manifest.parent / row["image"]).resolve(): row["mpp"] for row in rows}
    for record in records:
        value = by_image.get(record.image.resolve(), "")
        if not value:
            continue
        mpp, expected = float(value), tissue(record.task_id).mpp
        if not 1 / MPP_TOLERANCE <= mpp / expected <= MPP_TOLERANCE:
            raise OmnisegError(
                f"{record.image}: {mpp:.3g} µm/px, but the model sees {tissue(record.task_id).name} "
                f"at {expected:.3g} µm/px; re-extract the patches (omniseg extract cuts each task "
                "at its own scale; --mpp overrides a slide's wrong pixel size)"
            )


def _prepare(out: Path, settings: AdaptSettings) -> None:
    if not out.exists() or settings.resume:
        return
    entries = {p.name for p in out.iterdir()} if out.is_dir() else {"?"}
    if not entries:
        return
    if settings.overwrite and entries <= OUR_ENTRIES:
        shutil.rmtree(out)
        return
    raise OmnisegError(
        f"{out}: already exists; pass --resume to continue it, --overwrite to replace a folder "
        "that finetune wrote, or choose another --out"
    )


def _distillation_patches(
    records: list[PatchRecord], start_dir: Path, adapted: tuple[int, ...], out: Path
) -> Path:  # fmt: skip
    """RUN/patches: the user's patches plus the starting model's labels of the other tasks."""
    patches = out / PATCHES_DIR
    others = tuple(t.id for t in tissues() if t.id not in adapted)
    completion = CompletionSettings(tasks=others, min_zoom=KEEP_MIN_ZOOM, max_zoom=KEEP_MAX_ZOOM)
    wanted = {"start": str(start_dir.resolve()), "sha256": sha256_of(start_dir / "model.safetensors"),
              "settings": dataclasses.asdict(completion)}  # fmt: skip
    wanted = json.loads(json.dumps(wanted))
    made_by = patches / "completion.json"
    made = json.loads(made_by.read_text(encoding="utf-8")) if made_by.is_file() else None
    if made == wanted and (patches / "manifest.csv").is_file():
        return patches / "manifest.csv"  # resume: labelled once already
    if patches.exists():
        shutil.rmtree(patches)
    manifest = complete_labels(records, [load_pretrained(start_dir)], patches, completion)
    atomic_write_json(made_by, wanted)
    return manifest


def _train_config(
    start_dir: Path, data: Path, out: Path, settings: AdaptSettings, tasks: tuple[int, ...] = ()
):  # fmt: skip
    start = json.loads((start_dir / "config.json").read_text(encoding="utf-8"))
    overrides = {
        "data.path": str(data), "data.val_split": "none", "run.init": str(start_dir),
        "run.model": start.get("architecture", "omniseg"), "run.out": str(out / TRAIN_DIR),
        # crops the size the model was trained and is run at (its controller pools the whole crop)
        "data.patch_size": start.get("inference", {}).get("patch_size"),
        "run.max_steps": settings.max_steps, "optim.lr": settings.lr, "run.seed": settings.seed,
        "run.progress": settings.progress, "finetune.train_parts": settings.parts,
    }  # fmt: skip
    if tasks:  # the user's patches themselves: only the adapted tasks' rows
        overrides["data.tasks"] = tasks
    given = {**{k: v for k, v in overrides.items() if v is not None}, **settings.config_overrides}
    return load_train_config(packaged_config(ADAPT_CONFIG), given)


def finetune(
    data: Path, out: Path, settings: AdaptSettings = AdaptSettings(),
    callback: Callable[[int, dict], None] | None = None,
) -> AdaptResult:  # fmt: skip
    """Fine-tune ``settings.weights`` (default: the bundled model) on the patches in ``data``;
    ``callback`` as in :func:`omniseg.training.train`."""
    from omniseg.models.bundled import require_model_dir

    start_dir = require_model_dir(settings.weights)
    records = discover_patches(data)
    adapted = adapted_tasks(records, settings.tasks, data)
    records = [r for r in records if r.task_id in adapted]
    check_pixel_size(data, records)
    _prepare(out, settings)
    out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    config = _train_config(start_dir, data, out, settings, adapted)
    holding = settings.keep_others and config.finetune.train_parts != "task"
    if holding:
        manifest = _distillation_patches(records, start_dir, adapted, out)
        config = _train_config(start_dir, manifest, out, settings)
    result = train(config, resume=settings.resume or (out / TRAIN_DIR).exists(), callback=callback)
    model_dir = out / MODEL_NAME
    if model_dir.exists():
        shutil.rmtree(model_dir)
    shutil.copytree(result.model_dir, model_dir)
    others = tuple(t.name for t in tissues() if t.id not in adapted)
    kept = others if holding else ()
    names = tuple(tissue(t).name for t in adapted)
    seconds = time.perf_counter() - began
    atomic_write_json(out / RECORD_NAME, {
        "data": str(Path(data).resolve()), "patches": len(records), "tasks": list(names),
        "kept_by_distillation": list(kept), "train_parts": config.finetune.train_parts,
        "unchanged_by_construction": list(others) if config.finetune.train_parts == "task" else [],
        "steps": result.steps,
        "start_model": str(start_dir.resolve()),
        "start_model_sha256": sha256_of(start_dir / "model.safetensors"),
        "model_sha256": sha256_of(model_dir / "model.safetensors"),
        "seconds_this_session": round(seconds, 1), "train_config": str(out / TRAIN_DIR / "config.yaml"),
    })  # fmt: skip
    return AdaptResult(out, model_dir, names, kept, result.steps, seconds)
