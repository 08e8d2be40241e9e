"""``train(config)``: the whole run — data, model, loop, validation, checkpoints, model folder."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import signal
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from omniseg.catalogue import scales
from omniseg.data import PatchRecord, discover_patches, select_split
from omniseg.data.dataset import PatchDataset, TaskBalancedBatchSampler, collate, stratified_split
from omniseg.data.patches import check_pairs
from omniseg.errors import OmnisegError
from omniseg.locks import folder_lock
from omniseg.models import (
    InferenceSettings,
    OmniSeg,
    create_model,
    load_pretrained,
    model_config,
    save_pretrained,
)
from omniseg.runtime import TorchPredictor, resolve_device, resolve_precision
from omniseg.runtime.memory import tune_allocator
from omniseg.scoring.records import score_records
from omniseg.training import distributed
from omniseg.training.checkpoint import capture_rng, load_state, restore_rng, save_state
from omniseg.training.config import TrainConfig
from omniseg.training.finetune import batch_norms, calibration_batches, recalibrate_norm_stats
from omniseg.training.holdout import check_held_back, held_back_info, hold_back
from omniseg.training.optim import build_optimizer, build_scheduler
from omniseg.training.rundir import (
    LAST_NAME,
    MODEL_NAME,
    MetricsLog,
    check_resume_compatible,
    prepare_run_dir,
    write_config,
)
from omniseg.training.semi import StudentStep, make_teacher
from omniseg.training.step import StepContext, train_step

NO_VAL = "none"


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    model_dir: Path
    steps: int
    epochs: int  # epochs started (the last one may be partial)
    best_metric: float | None  # best mean val fg Dice (None without a val split)
    best_step: int | None
    seconds_per_step: float  # median compute time of an optimiser step in this session


def split_records(config: TrainConfig) -> tuple[list[PatchRecord], list[PatchRecord]]:
    """(train, val) records; a seeded stratified split when the data carry no split column."""
    d = config.data
    if not d.path:
        raise OmnisegError("no training data; pass --data (a manifest CSV or a patch folder)")
    records = discover_patches(d.path, allow_outside=d.allow_outside_paths)
    if d.tasks:
        records = [r for r in records if r.task_id in d.tasks]
        if not records:
            raise OmnisegError(f"{d.path}: no patches of the selected tasks {list(d.tasks)}")
    if d.val_split == NO_VAL:
        return records, []
    if all(r.split is None for r in records):
        records = stratified_split(records, d.val_fraction, d.split_seed)
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


def _workers(requested: int, device: torch.device) -> int:
    """-1 = auto: on a GPU, decode/augment in parallel; on the CPU, leave the cores to compute."""
    if requested >= 0:
        return requested
    return 0 if device.type == "cpu" else min(8, max(1, (os.cpu_count() or 2) - 1))


def _validate(model: OmniSeg, records: list[PatchRecord], config: TrainConfig, precision: str):
    predictor = TorchPredictor(model, precision, allow_emulated=True)
    _, summary = score_records(
        predictor, model.inference, records, tta=False, batch_size=config.run.val_batch_size
    )
    model.train()
    dice = summary["mean"]["dice"]
    return (float(dice) if dice is not None else 0.0), summary


def _save_model(model: OmniSeg, run_dir: Path, config: TrainConfig, info: dict) -> Path:
    extra = {"training": {"config": config.to_dict(), **info}}
    return save_pretrained(model, run_dir / MODEL_NAME, extra=extra)


def _tune_saved_model(
    run_dir: Path, config: TrainConfig, records, source: str, device, precision
) -> None:
    """Choose per-task thresholds on ``records`` (held-back rows or val) for the saved model."""
    from omniseg.models.pretrained import read_model_config
    from omniseg.training.thresholds import tune_thresholds

    folder = run_dir / MODEL_NAME
    info = read_model_config(folder).get("training", {})
    best_model = load_pretrained(folder, device=device)
    # Tune from neutral, so rerunning a finished run does not tune on top of its own tuning.
    neutral = InferenceSettings().thresholds
    best_model.inference = dataclasses.replace(best_model.inference, thresholds=neutral)
    predictor = TorchPredictor(best_model, precision, allow_emulated=True)
    values, report = tune_thresholds(best_model, records, predictor=predictor)
    best_model.inference = dataclasses.replace(best_model.inference, thresholds=values)
    info = {k: v for k, v in info.items() if k != "config"}
    info.update(thresholds=list(values), threshold_search=report, threshold_source=source)
    if source == "holdout":
        info.update(held_back_info(records))
    _save_model(best_model, run_dir, config, info)


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
    records = (fit_records, val_records, held_records)
    model = build_model(config)
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
            with _terminate_as_interrupt():
                return _run(config, run_dir, info, device, has_state, records, model, callback)
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


def _run(config, run_dir, info, device, has_state, records, model, callback) -> TrainResult:
    train_records, val_records, held_records = records
    precision = resolve_precision(
        config.run.precision, device, allow_auto=True, allow_emulated=True
    )
    model = model.to(device)
    model.frozen_norm_stats = config.finetune.freeze_norm_stats
    if config.run.channels_last:
        model = model.to(memory_format=torch.channels_last)
    f = config.finetune
    if not has_state and f.freeze_norm_stats and f.recalibrate_norm_stats and batch_norms(model):
        batches = calibration_batches(
            train_records, config.data.patch_size, config.data.batch_size, device,
            config.run.channels_last,
        )  # fmt: skip
        recalibrate_norm_stats(model, batches)
    model.train()
    teacher = make_teacher(model) if config.semi.enabled else None
    student: torch.nn.Module = StudentStep(model)
    if info.enabled:
        ids = [device.index] if device.type == "cuda" else None
        student = torch.nn.parallel.DistributedDataParallel(student, device_ids=ids)
    sampler = TaskBalancedBatchSampler(
        [r.task_id for r in train_records], config.data.batch_size, config.run.seed,
        rank=info.rank, world_size=info.world_size,
    )  # fmt: skip
    bpe = sampler.batches_per_epoch
    total = config.run.max_steps if config.run.max_steps > 0 else config.run.epochs * bpe
    optimizer = build_optimizer(model, config.optim, config.finetune.encoder_lr_scale)
    scheduler = build_scheduler(optimizer, total, config.optim)
    tasks = tuple(sorted({r.task_id for r in train_records}))
    ctx = StepContext(config, model, student, teacher, optimizer, scheduler, device, precision,
                      tasks, total)  # fmt: skip
    step, epoch, batch_in_epoch = 0, 0, 0
    best, best_step, val_step = None, None, -1
    if has_state:
        state = load_state(run_dir / LAST_NAME)
        model.load_state_dict(state["model"])
        if teacher is not None and state.get("teacher") is not None:
            teacher.load_state_dict(state["teacher"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        restore_rng(state["rng"])
        step, epoch, batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        best, best_step = state.get("best_metric"), state.get("best_step")
        val_step = state.get("val_step", -1)
    log = MetricsLog(run_dir, step) if info.is_main else None  # drops rows after `step`
    thresholds = {"thresholds": list(model.inference.thresholds)}

    def snapshot() -> dict:
        return {
            "model": model.state_dict(),
            "teacher": teacher.state_dict() if teacher is not None else None,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": capture_rng(),
            "sampler": {**sampler.state_dict(), "start_batch": batch_in_epoch},
            "step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch,
            "best_metric": best, "best_step": best_step, "val_step": val_step,
        }  # fmt: skip

    def validate_and_select() -> None:
        nonlocal best, best_step, val_step
        val_step = step
        if not info.is_main:
            return
        dice, _ = _validate(model, val_records, config, precision)
        log.log({"step": step, "epoch": epoch, "val_dice": dice})
        improved = best is None or dice > best
        if improved:
            best, best_step = dice, step
        if improved or not config.run.select_best:
            _save_model(model, run_dir, config, {"step": step, "val_dice": dice, **thresholds})

    dataset = PatchDataset(train_records, config.data.patch_size, config.augment, config.run.seed,
                           config.data.negatives)  # fmt: skip
    bar = tqdm(total=total, initial=step, disable=not (config.run.progress and info.is_main),
               desc="train", unit="step", dynamic_ncols=True)  # fmt: skip
    step_times: list[float] = []
    last_save = time.monotonic()
    interval = config.run.checkpoint_minutes * 60.0
    try:
        while step < total:
            sampler.set_epoch(epoch, batch_in_epoch)
            loader = DataLoader(
                dataset, batch_sampler=sampler, num_workers=_workers(config.data.num_workers, device),
                collate_fn=collate, pin_memory=device.type == "cuda",
            )  # fmt: skip
            for batch in loader:
                metrics = train_step(ctx, batch, step)
                step, batch_in_epoch = step + 1, batch_in_epoch + 1
                step_times.append(metrics["step_seconds"])
                bar.update(1)
                bar.set_postfix(loss=f"{metrics['loss']:.4f}", lr=f"{metrics['lr']:.2e}")
                if info.is_main:
                    if step % config.run.log_every_steps == 0 or step == total:
                        log.log({"step": step, "epoch": epoch, **metrics})
                    if callback is not None:
                        callback(step, metrics)
                    if time.monotonic() - last_save >= interval:
                        save_state(run_dir / LAST_NAME, snapshot())
                        last_save = time.monotonic()
                if step >= total:
                    break
            if batch_in_epoch >= bpe:
                epoch, batch_in_epoch = epoch + 1, 0
                if val_records and epoch % config.run.val_every_epochs == 0:
                    validate_and_select()
                    distributed.barrier(info)
        if val_records and val_step != step:
            validate_and_select()
        if info.is_main:
            save_state(run_dir / LAST_NAME, snapshot())
            if not val_records:
                _save_model(model, run_dir, config, {"step": step, "val_dice": None, **thresholds})
            holdout = config.data.threshold_holdout > 0  # then never val, even if none held
            tune_records, source = (held_records, "holdout") if holdout else (val_records, "val")
            if tune_records and config.run.tune_thresholds:
                _tune_saved_model(run_dir, config, tune_records, source, device, precision)
        distributed.barrier(info)
    except KeyboardInterrupt:
        if info.is_main:
            save_state(run_dir / LAST_NAME, snapshot())
        raise
    finally:
        bar.close()
        if log is not None:
            log.close()
    return TrainResult(
        run_dir=run_dir,
        model_dir=run_dir / MODEL_NAME,
        steps=step,
        epochs=epoch + (1 if batch_in_epoch else 0),
        best_metric=best,
        best_step=best_step,
        seconds_per_step=statistics.median(step_times) if step_times else 0.0,
    )
