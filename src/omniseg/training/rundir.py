"""The run folder: refuse/replace/resume rules, the resolved config.yaml, the metrics log."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

from omniseg.atomic import atomic_write_text, is_temp_of
from omniseg.errors import OmnisegError
from omniseg.training.config import TrainConfig
from omniseg.training.config_loading import dump_train_config, load_train_config

CONFIG_NAME = "config.yaml"
METRICS_NAME = "metrics.csv"
LAST_NAME = "last"
MODEL_NAME = "model"
RUN_MARKER = ".omniseg-run"  # written when omniseg creates a run folder
# Everything omniseg itself puts in a run folder; --overwrite deletes these and nothing else.
# (oof.json: the out-of-fold scores a cross-validation fold writes beside its run.)
RUN_ENTRIES = {
    CONFIG_NAME,
    METRICS_NAME,
    LAST_NAME,
    MODEL_NAME,
    "tensorboard",
    RUN_MARKER,
    "oof.json",
}
METRIC_COLUMNS = (
    "step", "epoch", "lr", "loss", "supervised", "pseudo", "match", "step_seconds", "val_dice",
)  # fmt: skip
# Keys that may change on --resume (they do not alter what is computed, only how long / where).
RESUMABLE_CHANGES = {
    "run.epochs", "run.max_steps", "run.device", "run.progress", "run.checkpoint_minutes",
    "run.log_every_steps", "run.val_batch_size", "run.tune_thresholds", "run.val_every_epochs",
    "data.num_workers", "data.path", "run.out",
}  # fmt: skip


def saved_config(run_dir: Path) -> TrainConfig | None:
    path = run_dir / CONFIG_NAME
    if not path.is_file():
        return None
    return load_train_config(path, saved_run=True)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_resume_compatible(run_dir: Path, config: TrainConfig) -> None:
    old = saved_config(run_dir)
    if old is None:
        return
    a, b = _flatten(old.to_dict()), _flatten(config.to_dict())
    changed = sorted(k for k in a if a[k] != b.get(k) and k not in RESUMABLE_CHANGES)
    if changed:
        detail = ", ".join(f"{k}: {a[k]!r} -> {b.get(k)!r}" for k in changed)
        raise OmnisegError(
            f"{run_dir / CONFIG_NAME}: --resume with a different configuration ({detail}); "
            "resume with the same settings, or start a new run (--overwrite or another --out)"
        )


def _is_our_temp(name: str) -> bool:
    """A half-written ``.<entry>.<random>`` file or folder of an interrupted atomic write."""
    return any(is_temp_of(name, entry) for entry in RUN_ENTRIES)


def _remove(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry)
    else:
        entry.unlink()


def _owned_by_omniseg(run_dir: Path) -> list[str]:
    """Names in RUN_DIR that omniseg did not create (temp files of ours count as ours)."""
    return sorted(
        p.name for p in run_dir.iterdir() if p.name not in RUN_ENTRIES and not _is_our_temp(p.name)
    )


def prepare_run_dir(run_dir: Path, *, resume: bool, overwrite: bool) -> bool:
    """Create/check RUN_DIR. Returns True when there is a checkpoint to resume from.

    ``--overwrite`` deletes only what omniseg provably created: the folder must carry the
    ``.omniseg-run`` marker and hold nothing but omniseg's own entries, else it is refused.
    """
    if resume and overwrite:
        raise OmnisegError("--resume and --overwrite exclude each other; pass only one")
    if run_dir.exists() and not run_dir.is_dir():
        raise OmnisegError(f"{run_dir}: exists and is not a folder; choose another --out")
    has_content = run_dir.is_dir() and any(run_dir.iterdir())
    if has_content and not (run_dir / CONFIG_NAME).is_file() and (resume or overwrite):
        raise OmnisegError(
            f"{run_dir}: not an omniseg run folder (no {CONFIG_NAME}); --resume and --overwrite "
            "only act on run folders, so choose another --out"
        )
    if has_content and resume:
        for entry in run_dir.iterdir():  # half-written files of the interrupted run
            if _is_our_temp(entry.name):
                _remove(entry)
        (run_dir / RUN_MARKER).touch()
        return (run_dir / LAST_NAME).is_dir()
    if has_content and not overwrite:
        raise OmnisegError(
            f"{run_dir}: already exists; pass --resume to continue it or --overwrite to replace it"
        )
    if has_content:
        foreign = _owned_by_omniseg(run_dir)
        if not (run_dir / RUN_MARKER).is_file() or foreign:
            why = (
                f"it holds files omniseg did not write ({', '.join(foreign[:5])})"
                if foreign
                else f"it has no {RUN_MARKER} marker (made by an older version or by hand)"
            )
            raise OmnisegError(
                f"{run_dir}: --overwrite refused: {why}; nothing was deleted. Remove it yourself "
                "or choose another --out"
            )
        for entry in run_dir.iterdir():
            _remove(entry)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RUN_MARKER).touch()
    return False


def write_config(run_dir: Path, config: TrainConfig) -> None:
    atomic_write_text(run_dir / CONFIG_NAME, dump_train_config(config))


class MetricsLog:
    """metrics.csv (always) and TensorBoard scalars (only when tensorboard is installed)."""

    def __init__(self, run_dir: Path, resume_step: int | None) -> None:
        self.path = run_dir / METRICS_NAME
        if resume_step is not None and self.path.is_file():
            self._truncate_after(resume_step)
        if not self.path.is_file():
            atomic_write_text(self.path, ",".join(METRIC_COLUMNS) + "\n")
        self.writer = None
        try:
            from torch.utils.tensorboard import SummaryWriter  # optional dependency
        except ImportError:
            SummaryWriter = None
        if SummaryWriter is not None:
            self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def _truncate_after(self, step: int) -> None:
        """Drop rows logged after the checkpoint we resume from (they will be redone)."""
        with open(self.path, newline="", encoding="utf-8") as fh:
            rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= step]
        lines = [",".join(METRIC_COLUMNS)]
        lines += [",".join(str(r.get(c, "")) for c in METRIC_COLUMNS) for r in rows]
        atomic_write_text(self.path, "\n".join(lines) + "\n")

    def log(self, row: dict) -> None:
        with open(self.path, "a", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerow(
                ["" if row.get(c) is None else row.get(c) for c in METRIC_COLUMNS]
            )
        if self.writer is not None:
            for key in METRIC_COLUMNS[2:]:
                if row.get(key) is not None:
                    self.writer.add_scalar(key, row[key], row["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
