"""`omniseg train` command (thin shell over ``omniseg.training.train``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from omniseg.errors import OmnisegError


def register(app: typer.Typer) -> None:
    """Add ``omniseg train`` to the app."""

    @app.command()
    def train(
        out: Annotated[Path, typer.Option(help="Run folder (config, logs, last/, model/).")],
        data: Annotated[
            str | None, typer.Option(help="Manifest CSV or patch folder (original layout).")
        ] = None,
        config: Annotated[
            Path | None, typer.Option(help="YAML training config; flags override it.")
        ] = None,
        model: Annotated[str | None, typer.Option(help="Architecture, e.g. omniseg.")] = None,
        head_init: Annotated[
            str | None, typer.Option(help="head (live heads) | default (as the original).")
        ] = None,
        head_activation: Annotated[
            str | None, typer.Option(help="relu (as the original) | leaky_relu in the heads.")
        ] = None,
        pretrained_encoder: Annotated[
            bool | None,
            typer.Option(
                "--pretrained-encoder/--random-encoder",
                help="Start the encoder from its bundled ImageNet weights (lite0) or at random.",
            ),
        ] = None,
        encoder_lr_scale: Annotated[
            float | None, typer.Option(help="Encoder lr = --lr x this (pretrained encoders).")
        ] = None,
        freeze_encoder_steps: Annotated[
            int | None, typer.Option(help="Leave the encoder untouched for the first N steps.")
        ] = None,
        freeze_norm_stats: Annotated[
            bool | None,
            typer.Option(
                "--freeze-norm-stats/--train-norm-stats",
                help="Keep BatchNorm running statistics as loaded (default) or re-estimate them.",
            ),
        ] = None,
        negatives: Annotated[
            float | None,
            typer.Option(help="Share of each task's samples that are known negatives (0-1)."),
        ] = None,
        epochs: Annotated[int | None, typer.Option(help="Number of epochs.")] = None,
        max_steps: Annotated[
            int | None, typer.Option(help="Stop after N optimiser steps (sets the schedule).")
        ] = None,
        batch_size: Annotated[int | None, typer.Option(help="Patches per step (per GPU).")] = None,
        patch_size: Annotated[int | None, typer.Option(help="Training patch size in px.")] = None,
        lr: Annotated[float | None, typer.Option(help="Peak learning rate.")] = None,
        device: Annotated[str | None, typer.Option(help="auto | cpu | cuda.")] = None,
        precision: Annotated[str | None, typer.Option(help="fp32 | bf16 | auto.")] = None,
        seed: Annotated[
            int | None, typer.Option(help="Seed for sampling, augmentation, init.")
        ] = None,
        split_seed: Annotated[
            int | None,
            typer.Option(help="Seed for the val split and --threshold-holdout rows."),
        ] = None,
        init: Annotated[
            str | None, typer.Option(help="'default' (bundled model) or a model folder.")
        ] = None,
        train_split: Annotated[str | None, typer.Option(help="Split to learn on.")] = None,
        val_split: Annotated[
            str | None, typer.Option(help="Split to select on; 'none' = no validation.")
        ] = None,
        val_fraction: Annotated[
            float | None, typer.Option(help="Val share when the data have no split column.")
        ] = None,
        threshold_holdout: Annotated[
            float | None,
            typer.Option(
                help="Hold back this share of the train rows to choose per-task thresholds on "
                "(never val); > 0 turns threshold tuning on."
            ),
        ] = None,
        val_every: Annotated[
            int | None, typer.Option(help="Validate every N epochs (and at the end).")
        ] = None,
        semi: Annotated[
            bool | None, typer.Option("--semi/--no-semi", help="Cross-scale semi terms.")
        ] = None,
        workers: Annotated[int | None, typer.Option(help="Data loader processes.")] = None,
        checkpoint_minutes: Annotated[
            float | None, typer.Option(help="Save RUN_DIR/last every N minutes.")
        ] = None,
        resume: Annotated[bool, typer.Option(help="Continue the run in --out.")] = False,
        overwrite: Annotated[bool, typer.Option(help="Replace the run in --out.")] = False,
        progress: Annotated[
            bool | None, typer.Option("--progress/--no-progress", help="Progress bar.")
        ] = None,
        allow_outside_paths: Annotated[
            bool | None,
            typer.Option(
                "--allow-outside-paths", help="Let manifest rows point outside its folder."
            ),
        ] = None,
    ) -> None:
        """Train a model on labelled patches; writes OUT/model (a model folder) and OUT/last."""
        from omniseg.training import load_train_config
        from omniseg.training import train as run_training
        from omniseg.training.rundir import CONFIG_NAME

        for flag, value in (("--max-steps", max_steps), ("--epochs", epochs)):
            if value is not None and value < 1:  # 0 would fall back to the config's schedule
                raise OmnisegError(f"{flag} must be >= 1, got {value}")
        overrides = {
            "data.path": data,
            "data.allow_outside_paths": allow_outside_paths,
            "run.out": str(out),
            "run.model": model,
            "run.head_init": head_init,
            "run.head_activation": head_activation,
            "run.pretrained_encoder": pretrained_encoder,
            "data.negatives": negatives,
            "finetune.encoder_lr_scale": encoder_lr_scale,
            "finetune.freeze_encoder_steps": freeze_encoder_steps,
            "finetune.freeze_norm_stats": freeze_norm_stats,
            "run.epochs": epochs,
            "run.max_steps": max_steps,
            "data.batch_size": batch_size,
            "data.patch_size": patch_size,
            "optim.lr": lr,
            "run.device": device,
            "run.precision": precision,
            "run.seed": seed,
            "data.split_seed": split_seed,
            "run.init": init,
            "data.train_split": train_split,
            "data.val_split": val_split,
            "data.val_fraction": val_fraction,
            "data.threshold_holdout": threshold_holdout,
            "run.tune_thresholds": True if threshold_holdout else None,
            "run.val_every_epochs": val_every,
            "semi.enabled": semi,
            "data.num_workers": workers,
            "run.checkpoint_minutes": checkpoint_minutes,
            "run.progress": progress,
        }
        base, saved_run = config, False
        if base is None and resume and (out / CONFIG_NAME).is_file():
            base, saved_run = out / CONFIG_NAME, True  # resume needs only --out
        resolved = load_train_config(base, overrides, saved_run=saved_run)
        result = run_training(resolved, resume=resume, overwrite=overwrite)
        best = "n/a" if result.best_metric is None else f"{result.best_metric:.4f}"
        typer.echo(
            f"trained {result.steps} steps ({result.seconds_per_step:.3f} s/step); "
            f"val Dice {best}; model folder: {result.model_dir}"
        )
