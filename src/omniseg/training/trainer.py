"""``train(config)``: checks the data, builds the model, prepares and locks the run folder,
then hands over to :class:`omniseg.training.fit.Fit` (the loop, validation, checkpoints)."""

from __future__ import annotations

import contextlib
import dataclasses
import random
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from omniseg.catalogue import moved_tasks, scales
from omniseg.data import PatchRecord, discover_patches, select_split
from omniseg.data.dataset import check_group_split, group_split, stratified_split
from omniseg.data.folds import fold_split
from omniseg.data.patches import at_model_scales, check_pairs
from omniseg.errors import OmnisegError
from omniseg.locks import folder_lock
from omniseg.models import (
    InferenceSettings,
    OmniSeg,
    create_model,
    load_pretrained,
    model_config,
)
from omniseg.runtime import resolve_device, resolve_precision
from omniseg.runtime.memory import tune_allocator
from omniseg.training import distributed
from omniseg.training.config import TrainConfig
from omniseg.training.fit import Fit, RunRecords, TrainResult
from omniseg.training.holdout import check_held_back, hold_back
from omniseg.training.rundir import (
    check_resume_compatible,
    prepare_run_dir,
    write_config,
)

NO_VAL = "none"


def config_records(config: TrainConfig) -> list[PatchRecord]:
    """Every patch of ``data.path`` (of ``data.tasks`` when set), before any split."""
    d = config.data
    if not d.path:
        raise OmnisegError("no training data; pass --data (a manifest CSV or a patch folder)")
    records = discover_patches(d.path, allow_outside=d.allow_outside_paths)
    if d.tasks:
        records = [r for r in records if r.task_id in d.tasks]
        if not records:
            raise OmnisegError(f"{d.path}: no patches of the selected tasks {list(d.tasks)}")
    return records


def split_records(config: TrainConfig) -> tuple[list[PatchRecord], list[PatchRecord]]:
    """(train, val) records; a seeded stratified split when the data carry no split column."""
    d = config.data
    records = config_records(config)
    if d.folds:  # the held-out fold is scored after training (crossval.py), never during it
        train, _ = fold_split(records, d.folds, d.fold, d.split_seed)
        return train, []
    if d.val_split == NO_VAL:
        return records, []
    if all(r.split is None for r in records):
        if any(r.group is not None for r in records):  # e.g. omniseg extract: split by slide
            records = group_split(records, d.val_fraction, d.split_seed)
        else:
            records = stratified_split(records, d.val_fraction, d.split_seed)
    check_group_split(records, d.train_split, d.val_split)
    return select_split(records, d.train_split), select_split(records, d.val_split)


def build_model(config: TrainConfig) -> OmniSeg:
    init = config.run.init
    if not init:
        head = model_config(config.run.model).head
        model = create_model(
            config.run.model,
            head_init=config.run.head_init,
            head=dataclasses.replace(head, activation=config.run.head_activation),
            pretrained_encoder=config.run.pretrained_encoder,
        )
    else:
        if init == "default":
            from omniseg.models.bundled import default_model_dir

            folder = default_model_dir()
            if folder is None:
                raise OmnisegError(
                    "--init default: this build ships no bundled model; pass --init MODEL_DIR "
                    "(a model folder, e.g. RUN_DIR/model of an earlier run) or leave --init out"
                )
        else:
            folder = Path(init)
        model = load_pretrained(folder)
    moved = model.catalogue.parse_task_scales(config.data.task_scales)
    model.catalogue = model.catalogue.with_task_scales(moved)
    size = config.data.patch_size
    divisor = model.config.size_divisor
    ratio = max(s.magnification for s in scales()) // min(s.magnification for s in scales())
    if size % divisor or (config.semi.enabled and size % ratio):
        need = divisor if not config.semi.enabled else int(np.lcm(divisor, ratio))
        raise OmnisegError(f"data.patch_size={size}: must be a multiple of {need}")
    # Thresholds belong to the weights they were tuned for: a run starts neutral and only its own
    # tuning (run.tune_thresholds) may change them, never an --init model's.
    neutral = InferenceSettings().thresholds
    model.inference = dataclasses.replace(model.inference, patch_size=size, thresholds=neutral)
    return model


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    callback: Callable[[int, dict], None] | None = None,
) -> TrainResult:
    """Train (or resume) a run in ``config.run.out``; see docs/training.md.

    ``callback(step, metrics)`` runs after every optimiser step (rank 0); raising from it stops
    the run (KeyboardInterrupt saves ``last/`` first, like Ctrl-C).
    """

    tune_allocator()
    info = distributed.dist_info()
    if not config.run.out:
        raise OmnisegError("no run folder; pass --out RUN_DIR")
    run_dir = Path(config.run.out)
    _seed_everything(config.run.seed)
    # Everything that can be wrong with the inputs fails here, before RUN_DIR is touched.
    train_records, val_records = split_records(config)
    check_pairs([*train_records, *val_records])
    fit_records, held_records = hold_back(
        train_records, config.data.threshold_holdout, config.data.split_seed
    )
    check_held_back(train_records, held_records, config.data.threshold_holdout)
    model = build_model(config)
    moved = moved_tasks(model.catalogue)  # tasks this model runs at another scale: resampled
    records = RunRecords(
        *(at_model_scales(r, moved) for r in (fit_records, val_records, held_records))
    )
    device = resolve_device(config.run.device)
    has_state = False
    # One writer per run folder (rank 0 writes; the other ranks only read its checkpoints).
    with folder_lock(run_dir) if info.is_main else contextlib.nullcontext():
        if info.is_main:
            has_state = prepare_run_dir(run_dir, resume=resume, overwrite=overwrite)
            if has_state:
                check_resume_compatible(run_dir, config)
            write_config(run_dir, config)
        device = distributed.setup(info, device)
        try:
            has_state = distributed.broadcast_flag(info, has_state, device)
            precision = resolve_precision(
                config.run.precision, device, allow_emulated=True, cpu_auto_bf16=False
            )
            with _terminate_as_interrupt():
                run = Fit(config, run_dir, info, device, precision, records, model, has_state)
                return run.fit(callback)
        finally:
            distributed.cleanup(info)


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (cluster pre-emption, `kill`) stops like Ctrl-C: last/ is saved before exiting."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
