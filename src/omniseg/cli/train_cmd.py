"""`omniseg train` command (thin shell over ``omniseg.training.train``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from omniseg.cli.options import QuietOption, SetOption, dotted_overrides
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
            list[Path] | None,
            typer.Option(
                help="YAML training config; flags override it. Repeat it for stages run in "
                "order, each from the one before. None: the shipped two-stage recipe."
            ),
        ] = None,
        folds: Annotated[
            int | None,
            typer.Option(
                help="K-fold cross-validation: train the recipe K times, each fold held out "
                "once, into OUT/fold-i/, and write OUT/crossval.json (out-of-fold scores)."
            ),
        ] = None,
        set_values: SetOption = None,
        teacher_folds: Annotated[
            Path | None,
            typer.Option(
                help="With --folds: a finished cross-validation run (same data, same --folds) "
                "whose fold-i model completes the missing labels for fold i's student."
            ),
        ] = None,
        teacher_confidence: Annotated[
            str | None,
            typer.Option(
                help="With --teacher-folds: LO,HI cut-offs of the teacher's probability "
                "(background <= LO, foreground >= HI, unlabelled between); default 0.2,0.8. "
                "HI=1 teaches only what not to mark.",
            ),
        ] = None,
        teacher_tasks: Annotated[
            str | None,
            typer.Option(
                help="With --teacher-folds: complete only these tasks, e.g. capsule,tuft."
            ),
        ] = None,
        fold: Annotated[
            int | None,
            typer.Option(help="With --folds: run only this fold (0..K-1), e.g. one per process."),
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
        ema_decay: Annotated[
            float | None,
            typer.Option(help="Save a moving average of the weights (e.g. 0.999); 0 = off."),
        ] = None,
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
        quiet: QuietOption = False,
        allow_outside_paths: Annotated[
            bool | None,
            typer.Option(
                "--allow-outside-paths", help="Let manifest rows point outside its folder."
            ),
        ] = None,
    ) -> None:
        """Train a model on labelled patches; writes OUT/model (a model folder) and OUT/last."""
        from omniseg.cli.options import completion_settings
        from omniseg.training import load_train_config
        from omniseg.training.recipe import load_recipe, run_stages, saved_stage_configs

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
            "run.ema_decay": ema_decay,
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
            "run.progress": False if quiet else None,
        }
        overrides.update(dotted_overrides(set_values))
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
            f"val Dice {best}; model folder: {result.model_dir}"
        )


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
