"""The training loop: :class:`TrainState` (what a checkpoint restores) and :class:`Fit`
(model, optimiser, sampler and logs of one run, with ``fit()`` as the loop).

The loop is deterministic given the state: a run resumed from ``last/`` continues with the
same batches, random numbers and schedule as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from omniseg.data import PatchRecord
from omniseg.data.dataset import PatchDataset, TaskBalancedBatchSampler, collate
from omniseg.data.provenance import training_data_record
from omniseg.models import InferenceSettings, OmniSeg, load_pretrained, save_pretrained
from omniseg.runtime import TorchPredictor
from omniseg.scoring.records import score_records
from omniseg.training import distributed
from omniseg.training.checkpoint import capture_rng, load_state, restore_rng, save_state
from omniseg.training.config import TrainConfig
from omniseg.training.finetune import (
    batch_norms,
    calibration_batches,
    recalibrate_norm_stats,
    restrict_training,
)  # fmt: skip
from omniseg.training.holdout import held_back_info
from omniseg.training.optim import build_optimizer, build_scheduler
from omniseg.training.rundir import LAST_NAME, MODEL_NAME, MetricsLog
from omniseg.training.semi import StudentStep, ema_update, make_teacher
from omniseg.training.step import StepContext, train_step

MAX_GPU_LOADER_WORKERS = 8


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    model_dir: Path
    steps: int
    epochs: int  # epochs started (the last one may be partial)
    best_metric: float | None  # best mean val fg Dice (None without a val split)
    best_step: int | None
    seconds_per_step: float  # median compute time of an optimiser step in this session


@dataclass
class TrainState:
    """Where the loop stands; saved with the weights in every checkpoint."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_metric: float | None = None
    best_step: int | None = None
    val_step: int = -1  # the step of the last validation

    @classmethod
    def from_checkpoint(cls, saved: dict) -> TrainState:
        return cls(
            step=saved["step"],
            epoch=saved["epoch"],
            batch_in_epoch=saved["batch_in_epoch"],
            best_metric=saved.get("best_metric"),
            best_step=saved.get("best_step"),
            val_step=saved.get("val_step", -1),
        )

    def to_checkpoint(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class RunRecords:
    fit: list[PatchRecord]  # learned on
    val: list[PatchRecord]  # selects the best step
    held: list[PatchRecord]  # held back from fit for threshold tuning


def loader_workers(requested: int, device: torch.device) -> int:
    """-1 = auto: on a GPU, decode/augment in parallel; on the CPU, leave the cores to compute."""
    if requested >= 0:
        return requested
    if device.type == "cpu":
        return 0
    return min(MAX_GPU_LOADER_WORKERS, max(1, (os.cpu_count() or 2) - 1))


def validation_score(
    model: OmniSeg, records: list[PatchRecord], config: TrainConfig, precision: str
) -> tuple[float, dict]:
    """(mean fg Dice over tasks, the scoring summary) of ``model`` on val, without TTA."""
    predictor = TorchPredictor(model, precision, allow_emulated=True)
    _, summary = score_records(
        predictor, model.inference, records, tta=False, batch_size=config.run.val_batch_size
    )
    dice = summary["mean"]["dice"]
    return (float(dice) if dice is not None else 0.0), summary


class Fit:
    """One training run on one process (rank ``info.rank`` of a DDP group, or alone)."""

    def __init__(self, config: TrainConfig, run_dir: Path, info, device, precision: str,
                 records: RunRecords, model: OmniSeg, resume: bool) -> None:  # fmt: skip
        self.config, self.run_dir, self.info = config, run_dir, info
        self.device, self.precision, self.records = device, precision, records
        model = model.to(device)
        model.frozen_norm_stats = config.finetune.freeze_norm_stats
        if config.run.channels_last:
            model = model.to(memory_format=torch.channels_last)
        f = config.finetune
        if not resume and f.freeze_norm_stats and f.recalibrate_norm_stats and batch_norms(model):
            batches = calibration_batches(
                records.fit, config.data.patch_size, config.data.batch_size, device,
                config.run.channels_last,
            )  # fmt: skip
            recalibrate_norm_stats(model, batches)
        model.train()
        self.model = model
        self.teacher = make_teacher(model) if config.semi.enabled else None
        # run.ema_decay > 0: the saved model is an exponential moving average of the weights
        self.ema = make_teacher(model) if config.run.ema_decay > 0 else None
        student: torch.nn.Module = StudentStep(model)
        if info.enabled:
            ids = [device.index] if device.type == "cuda" else None
            student = torch.nn.parallel.DistributedDataParallel(student, device_ids=ids)
        self.sampler = TaskBalancedBatchSampler(
            [r.task_id for r in records.fit], config.data.batch_size, config.run.seed,
            rank=info.rank, world_size=info.world_size,
        )  # fmt: skip
        run = config.run
        self.total = run.max_steps if run.max_steps > 0 else run.epochs * self.batches_per_epoch
        tasks = tuple(sorted({r.task_id for r in records.fit}))
        restrict_training(model, config.finetune.train_parts, tasks)
        self.optimizer = build_optimizer(model, config.optim, config.finetune.encoder_lr_scale)
        self.scheduler = build_scheduler(self.optimizer, self.total, config.optim)
        self.ctx = StepContext(config, model, student, self.teacher, self.optimizer,
                               self.scheduler, device, precision, tasks, self.total)  # fmt: skip
        self.state = self._restore() if resume else TrainState()
        # the log drops rows after the restored step (they were written after the checkpoint)
        self.log = MetricsLog(run_dir, self.state.step) if info.is_main else None
        self.step_times: list[float] = []
        # what evaluate checks to say a score is on patches this model learned from
        self.data_record = (
            training_data_record([*records.fit, *records.held]) if info.is_main else None
        )

    @property
    def batches_per_epoch(self) -> int:
        return self.sampler.batches_per_epoch

    def _restore(self) -> TrainState:
        saved = load_state(self.run_dir / LAST_NAME)
        self.model.load_state_dict(saved["model"])
        if self.teacher is not None and saved.get("teacher") is not None:
            self.teacher.load_state_dict(saved["teacher"])
        if self.ema is not None and saved.get("ema") is not None:
            self.ema.load_state_dict(saved["ema"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        restore_rng(saved["rng"])
        return TrainState.from_checkpoint(saved)

    @property
    def kept(self) -> OmniSeg:
        """The weights a model folder gets: the moving average when run.ema_decay > 0."""
        return self.ema if self.ema is not None else self.model

    def checkpoint(self) -> None:
        s = self.state
        save_state(self.run_dir / LAST_NAME, {
            "model": self.model.state_dict(),
            "teacher": self.teacher.state_dict() if self.teacher is not None else None,
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": capture_rng(),
            "sampler": {**self.sampler.state_dict(), "start_batch": s.batch_in_epoch},
            **s.to_checkpoint(),
        })  # fmt: skip

    def fit(self, callback: Callable[[int, dict], None] | None = None) -> TrainResult:
        """Steps until the schedule ends, validating per epoch; a KeyboardInterrupt (Ctrl-C,
        SIGTERM) saves ``last/`` first."""
        config, s, main = self.config, self.state, self.info.is_main
        dataset = PatchDataset(self.records.fit, config.data.patch_size, config.augment,
                               config.run.seed, config.data.negatives)  # fmt: skip
        bar = tqdm(total=self.total, initial=s.step, desc="train", unit="step",
                   disable=not (config.run.progress and main), dynamic_ncols=True)  # fmt: skip
        last_save, interval = time.monotonic(), config.run.checkpoint_minutes * 60.0
        try:
            while s.step < self.total:
                self.sampler.set_epoch(s.epoch, s.batch_in_epoch)
                loader = DataLoader(
                    dataset, batch_sampler=self.sampler, collate_fn=collate,
                    num_workers=loader_workers(config.data.num_workers, self.device),
                    pin_memory=self.device.type == "cuda",
                )  # fmt: skip
                for batch in loader:
                    metrics = train_step(self.ctx, batch, s.step)
                    if self.ema is not None:
                        ema_update(self.ema, self.model, config.run.ema_decay, s.step)
                    s.step, s.batch_in_epoch = s.step + 1, s.batch_in_epoch + 1
                    self.step_times.append(metrics["step_seconds"])
                    bar.update(1)
                    bar.set_postfix(loss=f"{metrics['loss']:.4f}", lr=f"{metrics['lr']:.2e}")
                    if main:
                        every = config.run.log_every_steps
                        if s.step % every == 0 or s.step == self.total:
                            self.log.log({"step": s.step, "epoch": s.epoch, **metrics})
                        if callback is not None:
                            callback(s.step, metrics)
                        if time.monotonic() - last_save >= interval:
                            self.checkpoint()
                            last_save = time.monotonic()
                    if s.step >= self.total:
                        break
                self._end_of_epoch()
            if self.records.val and s.val_step != s.step:
                self.validate_and_select()
            if main:
                self.finish()
            distributed.barrier(self.info)
        except KeyboardInterrupt:
            if main:
                self.checkpoint()
            raise
        finally:
            bar.close()
            if self.log is not None:
                self.log.close()
        return self.result()

    def _end_of_epoch(self) -> None:
        s = self.state
        if s.batch_in_epoch < self.batches_per_epoch:
            return
        s.epoch, s.batch_in_epoch = s.epoch + 1, 0
        if self.records.val and s.epoch % self.config.run.val_every_epochs == 0:
            self.validate_and_select()
            distributed.barrier(self.info)

    def validate_and_select(self) -> None:
        """Score val; keep the model folder of the best step (or of every step without
        ``run.select_best``)."""
        s = self.state
        s.val_step = s.step
        if not self.info.is_main:
            return
        dice, _ = validation_score(self.kept, self.records.val, self.config, self.precision)
        self.model.train()
        self.log.log({"step": s.step, "epoch": s.epoch, "val_dice": dice})
        improved = s.best_metric is None or dice > s.best_metric
        if improved:
            s.best_metric, s.best_step = dice, s.step
        if improved or not self.config.run.select_best:
            self.save_model(self.kept, {"step": s.step, "val_dice": dice, **self._thresholds()})

    def finish(self) -> None:
        """Final checkpoint, the model folder when nothing selected one, then threshold tuning
        on the held-back rows (or val)."""
        self.checkpoint()
        if not self.records.val:
            info = {"step": self.state.step, "val_dice": None, **self._thresholds()}
            self.save_model(self.kept, info)
        holdout = self.config.data.threshold_holdout > 0  # then never val, even if none held
        tune, source = (self.records.held, "holdout") if holdout else (self.records.val, "val")
        if tune and self.config.run.tune_thresholds:
            self.tune_saved_model(tune, source)

    def _thresholds(self) -> dict:
        return {"thresholds": list(self.model.inference.thresholds)}

    def save_model(self, model: OmniSeg, info: dict) -> Path:
        extra = {"training": {"config": self.config.to_dict(), **info, "data": self.data_record}}
        return save_pretrained(model, self.run_dir / MODEL_NAME, extra=extra)

    def tune_saved_model(self, records: list[PatchRecord], source: str) -> None:
        """Choose per-task thresholds on ``records`` for the saved (best) model."""
        from omniseg.models.pretrained import read_model_config
        from omniseg.training.thresholds import tune_thresholds

        folder = self.run_dir / MODEL_NAME
        info = read_model_config(folder).get("training", {})
        best = load_pretrained(folder, device=self.device)
        # From neutral, so rerunning a finished run does not tune on top of its own tuning.
        neutral = InferenceSettings().thresholds
        best.inference = dataclasses.replace(best.inference, thresholds=neutral)
        predictor = TorchPredictor(best, self.precision, allow_emulated=True)
        values, report = tune_thresholds(best, records, predictor=predictor)
        best.inference = dataclasses.replace(best.inference, thresholds=values)
        info = {k: v for k, v in info.items() if k != "config"}
        info.update(thresholds=list(values), threshold_search=report, threshold_source=source)
        if source == "holdout":
            info.update(held_back_info(records))
        self.save_model(best, info)

    def result(self) -> TrainResult:
        s = self.state
        return TrainResult(
            run_dir=self.run_dir,
            model_dir=self.run_dir / MODEL_NAME,
            steps=s.step,
            epochs=s.epoch + (1 if s.batch_in_epoch else 0),
            best_metric=s.best_metric,
            best_step=s.best_step,
            seconds_per_step=statistics.median(self.step_times) if self.step_times else 0.0,
        )
