"""`omniseg train` command (thin shell over ``omniseg.training.train``).

A few common flags; every other training setting is ``--set section.key=value``, checked by
:class:`omniseg.training.TrainConfig` like a YAML config. A flag that older versions had gets a
usage error naming its ``--set`` key (:data:`SET_INSTEAD`).
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

from omniseg.cli.options import QuietOption, SetOption, dotted_overrides, invoked_as
from omniseg.errors import OmnisegError

# Flags `train` had before issue 35 -> the config key to --set instead.
SET_INSTEAD = {
    "--head-init": "run.head_init", "--head-activation": "run.head_activation",
    "--pretrained-encoder": "run.pretrained_encoder=true",
    "--random-encoder": "run.pretrained_encoder=false",
    "--encoder-lr-scale": "finetune.encoder_lr_scale",
    "--freeze-encoder-steps": "finetune.freeze_encoder_steps",
    "--freeze-norm-stats": "finetune.freeze_norm_stats=true",
    "--train-norm-stats": "finetune.freeze_norm_stats=false",
    "--negatives": "data.negatives", "--ema-decay": "run.ema_decay",
    "--split-seed": "data.split_seed", "--train-split": "data.train_split",
    "--val-fraction": "data.val_fraction",
    "--threshold-holdout": "data.threshold_holdout=F --set run.tune_thresholds=true",
    "--val-every": "run.val_every_epochs", "--semi": "semi.enabled=true",
    "--no-semi": "semi.enabled=false", "--workers": "data.num_workers",
    "--checkpoint-minutes": "run.checkpoint_minutes",
    "--allow-outside-paths": "data.allow_outside_paths=true",
}  # fmt: skip

OutOption = Annotated[Path, typer.Option(help="Run folder (config, logs, last/, model/).")]
DataOption = Annotated[
    str | None, typer.Option(help="Manifest CSV or patch folder (original layout).")
]
ConfigOption = Annotated[
    list[Path] | None,
    typer.Option(
        help="YAML training config; flags override it. Repeat it for stages run in "
        "order, each from the one before. None: the shipped two-stage recipe."
    ),
]
FoldsOption = Annotated[
    int | None,
    typer.Option(
        help="K-fold cross-validation: train the recipe K times, each fold held out "
        "once, into OUT/fold-i/, and write OUT/crossval.json (out-of-fold scores)."
    ),
]
FoldOption = Annotated[
    int | None,
    typer.Option(help="With --folds: run only this fold (0..K-1), e.g. one per process."),
]
TeacherFoldsOption = Annotated[
    Path | None,
    typer.Option(
        help="With --folds: a finished cross-validation run (same data, same --folds) "
        "whose fold-i model completes the missing labels for fold i's student."
    ),
]
TeacherConfidenceOption = Annotated[
    str | None,
    typer.Option(
        help="With --teacher-folds: LO,HI cut-offs of the teacher's probability "
        "(background <= LO, foreground >= HI, unlabelled between); default 0.2,0.8. "
        "HI=1 teaches only what not to mark.",
    ),
]
TeacherTasksOption = Annotated[
    str | None,
    typer.Option(help="With --teacher-folds: complete only these tasks, e.g. capsule,tuft."),
]
ModelOption = Annotated[str | None, typer.Option(help="Architecture, e.g. omniseg-lite0.")]
InitOption = Annotated[
    str | None, typer.Option(help="'default' (bundled model) or a model folder to start from.")
]
StepsOption = Annotated[
    int | None, typer.Option(help="Stop after N optimiser steps (sets the schedule).")
]
EpochsOption = Annotated[int | None, typer.Option(help="Number of epochs.")]
TrainBatchOption = Annotated[int | None, typer.Option(help="Patches per step (per GPU).")]
PatchOption = Annotated[int | None, typer.Option(help="Training patch size in px.")]
LrOption = Annotated[float | None, typer.Option(help="Peak learning rate.")]
TrainDeviceOption = Annotated[str | None, typer.Option(help="auto | cpu | cuda.")]
TrainPrecisionOption = Annotated[str | None, typer.Option(help="fp32 | bf16 | auto.")]
SeedOption = Annotated[int | None, typer.Option(help="Seed for sampling, augmentation, init.")]
ValSplitOption = Annotated[
    str | None, typer.Option(help="Split to select on; 'none' = no validation.")
]
ResumeOption = Annotated[bool, typer.Option(help="Continue the run in --out.")]
OverwriteOption = Annotated[bool, typer.Option(help="Replace the run in --out.")]


def train(
    out: OutOption,
    data: DataOption = None,
    config: ConfigOption = None,
    set_values: SetOption = None,
    model: ModelOption = None,
    init: InitOption = None,
    max_steps: StepsOption = None,
    epochs: EpochsOption = None,
    batch_size: TrainBatchOption = None,
    patch_size: PatchOption = None,
    lr: LrOption = None,
    device: TrainDeviceOption = None,
    precision: TrainPrecisionOption = None,
    seed: SeedOption = None,
    val_split: ValSplitOption = None,
    folds: FoldsOption = None,
    fold: FoldOption = None,
    teacher_folds: TeacherFoldsOption = None,
    teacher_confidence: TeacherConfidenceOption = None,
    teacher_tasks: TeacherTasksOption = None,
    resume: ResumeOption = False,
    overwrite: OverwriteOption = False,
    quiet: QuietOption = False,
) -> None:
    """Train a model on labelled patches; writes OUT/model (a model folder) and OUT/last.
    Any other setting: --set section.key=value (see docs/training.md)."""
    from omniseg.cli.options import completion_settings
    from omniseg.training import load_train_config
    from omniseg.training.recipe import load_recipe, run_stages, saved_stage_configs

    for flag, value in (("--max-steps", max_steps), ("--epochs", epochs)):
        if value is not None and value < 1:  # 0 would fall back to the config's schedule
            raise OmnisegError(f"{flag} must be >= 1, got {value}")
    overrides = {
        "data.path": data, "run.out": str(out), "run.model": model, "run.init": init,
        "run.max_steps": max_steps, "run.epochs": epochs, "data.batch_size": batch_size,
        "data.patch_size": patch_size, "optim.lr": lr, "run.device": device,
        "run.precision": precision, "run.seed": seed, "data.val_split": val_split,
        "run.progress": False if quiet else None, **dotted_overrides(set_values),
    }  # fmt: skip
    if (fold is not None or teacher_folds is not None) and folds is None:
        raise OmnisegError("--fold and --teacher-folds need --folds K (cross-validation)")
    saved = saved_stage_configs(out) if resume and not config and folds is None else []
    if saved:  # resuming needs only --out: each stage's settings come from its config.yaml
        stages = tuple(load_train_config(p, overrides, saved_run=True) for p in saved)
    else:
        stages = load_recipe(config or None, overrides)
    if folds is not None:
        _cross_validate(stages, out, folds, fold, resume=resume, overwrite=overwrite,
                        teacher_run=teacher_folds,
                        completion=completion_settings(teacher_confidence, teacher_tasks))  # fmt: skip
        return
    result = run_stages(stages, out, resume=resume, overwrite=overwrite)
    best = "n/a" if result.best_metric is None else f"{result.best_metric:.4f}"
    typer.echo(
        f"trained {result.steps} steps ({result.seconds_per_step:.3f} s/step); "
        f"val Dice {best}; model folder: {result.model_dir}; segment with: {invoked_as()} "
        f"segment SLIDE... -o OUT --weights {shlex.quote(str(result.model_dir))}"
    )


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command()(train)


def _cross_validate(stages, out: Path, folds: int, fold: int | None, **kwargs) -> None:
    from omniseg.evaluation.crossval import REPORT_JSON, cross_validate

    result = cross_validate(stages, out, folds, only_fold=fold, **kwargs)
    done = ", ".join(str(f) for f in result.folds_run)
    if result.report is None:
        typer.echo(
            f"fold(s) {done} trained and scored in {out}; the report is written once every "
            f"fold is (run the others, or: omniseg train --folds {folds} --out {out} --resume)"
        )
        return
    mean = result.report["mean"]
    ci = mean.get("dice_ci")
    spread = f" [95% CI {ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
    typer.echo(
        f"cross-validation ({folds} folds, {result.report['n_images']} patches out-of-fold): "
        f"mean fg Dice {mean['dice']:.3f}{spread}; report: {out / REPORT_JSON}"
    )
