"""K-fold cross-validation of a training recipe: ``omniseg train --folds K`` / ``--fold i``.

Each fold trains the whole recipe on the other folds into ``RUN/fold-<i>/`` and scores its
held-out patches there (``oof.json``: out-of-fold rows). Once every fold has its rows,
``RUN/crossval.json`` (per task and stain, bootstrap intervals over images) and
``RUN/crossval.csv`` (one row per patch) hold the report. Folds run one after another or, with
``--fold i``, in separate processes; every step resumes.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from omniseg.atomic import atomic_path, atomic_write_json
from omniseg.catalogue import moved_tasks, tissues
from omniseg.data import PatchRecord, discover_patches
from omniseg.data.folds import assign_folds, source_group, untrained_tasks
from omniseg.data.patches import at_model_scales, check_pairs
from omniseg.errors import OmnisegError
from omniseg.evaluation.bootstrap import DEFAULT_RESAMPLES, with_intervals
from omniseg.evaluation.evaluate import CSV_COLUMNS, json_safe
from omniseg.models import load_pretrained
from omniseg.runtime import TorchPredictor
from omniseg.scoring.aggregate import summarise_all
from omniseg.scoring.records import score_records
from omniseg.training.complete import CompletionSettings, complete_labels
from omniseg.training.config import TrainConfig
from omniseg.training.config_loading import replace_config
from omniseg.training.recipe import run_stages
from omniseg.training.rundir import MODEL_NAME
from omniseg.training.trainer import config_records

OOF_NAME = "oof.json"
FOLDS_NAME = "folds.csv"
REPORT_JSON = "crossval.json"
REPORT_CSV = "crossval.csv"
# Keys that say where or how fast a run goes, not what it learns: left out of the recipe digest.
_RUN_ONLY = ("run.out", "run.progress", "run.device", "data.num_workers", "data.path")
# Keys added after runs were digested, left out at their default (the behaviour before they
# existed), so folds trained before and after the key appeared still pool.
_ADDED_LATER = {"finetune.train_parts": "all", "data.task_scales": []}


@dataclass(frozen=True)
class CrossvalResult:
    run_dir: Path
    folds_run: tuple[int, ...]
    report: dict | None  # None until every fold has its out-of-fold rows


def fold_dir(run_dir: Path, fold: int) -> Path:
    return run_dir / f"fold-{fold}"


def recipe_digest(stages: Sequence[TrainConfig]) -> str:
    """SHA-256 of what the stages learn, so folds of different recipes are never pooled."""
    plain = []
    for stage in stages:
        flat = stage.to_dict()
        for key in _RUN_ONLY:
            section, name = key.split(".")
            flat[section].pop(name, None)
        for key, default in _ADDED_LATER.items():
            section, name = key.split(".")
            if flat[section].get(name) == default:
                flat[section].pop(name)
        plain.append(flat)
    return hashlib.sha256(json.dumps(plain, sort_keys=True).encode()).hexdigest()


def _write_assignment(run_dir: Path, records: Sequence[PatchRecord], fold_of: list[int]) -> None:
    with atomic_path(run_dir / FOLDS_NAME) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["image", "task", "stain", "source_group", "fold"])
        for record, fold in zip(records, fold_of, strict=True):
            task = tissues()[record.task_id].name
            writer.writerow([str(record.image), task, record.stain, source_group(record), fold])


def score_fold(
    model_dir: Path, held: Sequence[PatchRecord], fold: int, digest: str, tta: bool = False
) -> dict:
    """Out-of-fold rows of one fold's model on its held-out patches (threshold = the model's)."""
    model = load_pretrained(model_dir)
    predictor = TorchPredictor(model, "fp32")
    seen = at_model_scales(list(held), moved_tasks(model.catalogue))
    rows, _ = score_records(predictor, model.inference, seen, tta=tta)
    for row in rows:
        row["fold"] = fold
    return {"fold": fold, "recipe_sha256": digest, "model": str(model_dir), "rows": rows}


def cross_validate(
    stages: Sequence[TrainConfig],
    run_dir: Path,
    folds: int,
    *,
    only_fold: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    resamples: int = DEFAULT_RESAMPLES,
    teacher_run: Path | None = None,
    completion: CompletionSettings | None = None,
) -> CrossvalResult:
    """Train and score the folds (all, or ``only_fold``); report when all are scored.

    ``teacher_run``: a finished cross-validation run of the same data and folds. Each fold then
    trains a student on its training folds with the missing labels completed by that run's model
    of the same fold (training/complete.py), so no model behind fold i's score saw fold i.
    """
    first = stages[0]
    seed = first.data.split_seed
    records = config_records(first)
    fold_of = assign_folds(records, folds, seed)
    if only_fold is not None and not 0 <= only_fold < folds:
        raise OmnisegError(f"--fold {only_fold}: must lie in 0..{folds - 1} for --folds {folds}")
    check_pairs(records)
    completion = completion or CompletionSettings()
    digest = recipe_digest(stages)
    if teacher_run is not None:
        digest = hashlib.sha256(
            f"{digest}|{teacher_run.resolve()}|{completion}".encode()
        ).hexdigest()
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_assignment(run_dir, records, fold_of)
    todo = tuple(range(folds)) if only_fold is None else (only_fold,)
    for fold in todo:
        train = [r for r, f in zip(records, fold_of, strict=True) if f != fold]
        held = [r for r, f in zip(records, fold_of, strict=True) if f == fold]
        blind = untrained_tasks(train, held)
        if blind:
            names = ", ".join(tissues()[t].name for t in blind)
            warnings.warn(
                f"fold {fold}: no training patch of {names}; its held-out patches of these tasks "
                "are scored by a model that never learned them",
                stacklevel=2,
            )
        here = fold_dir(run_dir, fold)
        if teacher_run is None:
            fold_stages = [
                replace_config(s, {"data.folds": folds, "data.fold": fold}) for s in stages
            ]
        else:  # the student of this fold learns only from its teacher, which never saw the fold
            fold_stages = _student_stages(
                stages, teacher_run, fold, train, here, completion, overwrite
            )
        result = run_stages(fold_stages, here, resume=resume, overwrite=overwrite)
        atomic_write_json(
            here / OOF_NAME, json_safe(score_fold(result.model_dir, held, fold, digest))
        )
    report = (
        write_report(run_dir, folds, digest, resamples) if _all_scored(run_dir, folds) else None
    )
    return CrossvalResult(run_dir, todo, report)


def _student_stages(
    stages: Sequence[TrainConfig], teacher_run: Path, fold: int, train: Sequence[PatchRecord],
    here: Path, completion: CompletionSettings, overwrite: bool,
) -> list[TrainConfig]:  # fmt: skip
    """Complete fold ``fold``'s training patches with its teacher; stages that train on them."""
    teacher_dir = fold_dir(teacher_run, fold) / MODEL_NAME
    patches = here.parent / f"{here.name}-patches"
    manifest, made_by = patches / "manifest.csv", patches / "completion.json"
    wanted = {"teacher": str(teacher_dir.resolve()), "settings": dataclasses.asdict(completion)}
    wanted = json.loads(json.dumps(wanted))  # as read back: tuples become lists
    made = json.loads(made_by.read_text(encoding="utf-8")) if made_by.is_file() else None
    if made is not None and made != wanted and not overwrite:
        raise OmnisegError(
            f"{made_by}: fold {fold}'s labels were completed by another teacher or with other "
            f"settings ({made}); pass --overwrite to redo the fold, or choose another --out"
        )
    if made != wanted or not manifest.is_file():
        complete_labels(train, [load_pretrained(teacher_dir)], patches, completion)
        atomic_write_json(made_by, wanted)
    on_patches = {"data.path": str(manifest), "data.val_split": "none", "data.folds": 0,
                  "data.fold": -1}  # fmt: skip
    return [replace_config(s, on_patches) for s in stages]


def _all_scored(run_dir: Path, folds: int) -> bool:
    return all((fold_dir(run_dir, f) / OOF_NAME).is_file() for f in range(folds))


def read_oof(run_dir: Path, folds: int, digest: str | None = None) -> list[dict]:
    """Every fold's out-of-fold rows; folds of another recipe than ``digest`` are refused."""
    rows: list[dict] = []
    for fold in range(folds):
        path = fold_dir(run_dir, fold) / OOF_NAME
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise OmnisegError(
                f"{path}: unreadable out-of-fold rows ({exc}); rerun with --resume"
            ) from exc
        if digest is not None and saved.get("recipe_sha256") != digest:
            raise OmnisegError(
                f"{path}: this fold was trained with another recipe than the other folds; "
                f"rerun it with the same settings (--fold {fold} --overwrite)"
            )
        rows.extend(saved["rows"])
    return rows


def write_report(run_dir: Path, folds: int, digest: str | None, resamples: int) -> dict:
    """crossval.json (summary with bootstrap intervals over images) and crossval.csv."""
    return report_files(run_dir, read_oof(run_dir, folds, digest), folds, digest, resamples)


def rescore(run_dir: Path, data: str, folds: int, *, tta: bool, resamples: int) -> dict:
    """Score every fold model again on its held-out patches (e.g. with dihedral TTA) into
    ``crossval-tta.json/.csv``; the fold assignment is read back from ``folds.csv``."""
    with open(run_dir / FOLDS_NAME, newline="", encoding="utf-8") as fh:
        fold_of = {row["image"]: int(row["fold"]) for row in csv.DictReader(fh)}
    records = [r for r in discover_patches(data) if str(r.image) in fold_of]
    rows = []
    for fold in range(folds):
        held = [r for r in records if fold_of[str(r.image)] == fold]
        model_dir = fold_dir(run_dir, fold) / MODEL_NAME
        rows.extend(score_fold(model_dir, held, fold, "", tta=tta)["rows"])
    stem = "crossval-tta" if tta else "crossval-rescored"
    return report_files(run_dir, rows, folds, None, resamples, stem=stem, tta=tta)


def report_files(
    run_dir: Path, rows: list[dict], folds: int, digest: str | None, resamples: int,
    stem: str = "crossval", tta: bool = False,
) -> dict:  # fmt: skip
    """``<stem>.json`` (summary, bootstrap intervals over images) and ``<stem>.csv`` (rows)."""
    summary = (
        with_intervals(summarise_all(rows), rows, resamples) if resamples else summarise_all(rows)
    )
    report = {
        **summary,
        "folds": folds,
        "n_images": len(rows),
        "recipe_sha256": digest,
        "per_fold": {str(f): {"n": sum(1 for r in rows if r["fold"] == f)} for f in range(folds)},
        "tta": tta,
        "thresholds": "each fold model's own (0.5 unless its recipe tunes them on train rows)",
        "scored": "out-of-fold: every patch by the one fold model that never trained on it",
    }
    atomic_write_json(run_dir / f"{stem}.json", json_safe(report))
    with atomic_path(run_dir / f"{stem}.csv") as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[*CSV_COLUMNS, "fold"], extrasaction="ignore",
                                lineterminator="\n")  # fmt: skip
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {k: "" if row.get(k) is None else row[k] for k in (*CSV_COLUMNS, "fold")}
            )
    return report


def read_report(path: Path) -> dict:
    """A crossval.json, from the file or its run folder."""
    file = path / REPORT_JSON if path.is_dir() else path
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise OmnisegError(
            f"{file}: no cross-validation report; run `omniseg train --folds K --out RUN` first "
            "(or --resume it until every fold is scored)"
        ) from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise OmnisegError(f"{file}: unreadable cross-validation report ({exc})") from exc
