"""Bootstrap intervals over images, for reports made from few labelled patches.

A val split of 20 patches (one PTC patch) makes every score uncertain; these intervals say by
how much. Images are resampled with replacement *within each task*, so every resample keeps each
task's image count and the mean over tasks stays the unweighted one ``evaluate`` reports.
A task with a single image contributes no spread (report that, do not hide it). Scores are
"higher is better" (Dice, IoU); memory is resamples x images of the largest task, in float64.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

DEFAULT_RESAMPLES = 10_000
DEFAULT_LEVEL = 0.95

ScoresByTask = Mapping[str, Mapping[str, float]]  # task -> image -> score


def _check(resamples: int, level: float) -> None:
    if resamples < 1:
        raise ValueError(f"resamples={resamples}: must be >= 1")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level={level}: must be in (0, 1)")


def _percentiles(values: np.ndarray, level: float) -> list[float]:
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(values, [tail, 100.0 - tail])
    return [float(lo), float(hi)]


def _resampled_task_means(
    scores: np.ndarray, resamples: int, rng: np.random.Generator
) -> np.ndarray:
    index = rng.integers(0, scores.shape[-1], size=(resamples, scores.shape[-1]))
    return scores[..., index].mean(axis=-1)  # (..., resamples)


def task_mean_intervals(
    scores: ScoresByTask,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
) -> dict:
    """Per-task mean and interval, and the same for the unweighted mean over tasks.

    Tasks and images are taken in sorted order, so the result does not depend on input order.
    """
    _check(resamples, level)
    rng = np.random.default_rng(seed)
    tasks, total = {}, np.zeros(resamples)
    for task in sorted(scores):
        by_image = scores[task]
        values = np.asarray([by_image[i] for i in sorted(by_image)], dtype=np.float64)
        if values.size == 0:
            raise ValueError(f"task {task!r} has no images")
        means = _resampled_task_means(values, resamples, rng)
        total += means / len(scores)
        tasks[task] = {"n": int(values.size), "mean": float(values.mean()),
                       "ci": _percentiles(means, level)}  # fmt: skip
    overall = float(np.mean([t["mean"] for t in tasks.values()]))
    return {"level": level, "resamples": resamples, "tasks": tasks,
            "mean": {"mean": overall, "ci": _percentiles(total, level)}}  # fmt: skip


def paired_mean_difference(
    a: ScoresByTask,
    b: ScoresByTask,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
) -> dict:
    """Interval of (mean over tasks of a) - (same of b), scored on the SAME images.

    Each resample draws one set of images per task and scores both models on it (a paired
    bootstrap), so image difficulty, shared by both, cancels. ``fraction_b_better`` is the share
    of resamples where b's mean is higher (scores: higher is better), ``fraction_tied`` where the
    two are equal: a quick sense of how often the ranking flips.
    """
    _check(resamples, level)
    if set(a) != set(b):
        raise ValueError(f"different tasks: {sorted(set(a) ^ set(b))}")
    rng = np.random.default_rng(seed)
    total, observed = np.zeros(resamples), 0.0
    for task in sorted(a):
        if set(a[task]) != set(b[task]):
            odd = sorted(set(a[task]) ^ set(b[task]))
            raise ValueError(f"task {task!r}: images scored by only one model: {odd[:3]}")
        images = sorted(a[task])
        pair = np.asarray([[a[task][i] for i in images], [b[task][i] for i in images]])
        means = _resampled_task_means(pair, resamples, rng)
        total += (means[0] - means[1]) / len(a)
        observed += float(pair[0].mean() - pair[1].mean()) / len(a)
    return {"difference": observed, "ci": _percentiles(total, level), "level": level,
            "fraction_b_better": float(np.mean(total < 0.0)),
            "fraction_tied": float(np.mean(total == 0.0)), "resamples": resamples}  # fmt: skip


def tasks_with_several_images(scores: ScoresByTask) -> ScoresByTask:
    """Only the tasks scored on more than one image: a one-image task (val PTC) adds its whole
    difference with no spread, which makes an interval over all tasks look surer than it is."""
    return {task: by_image for task, by_image in scores.items() if len(by_image) > 1}


def scores_from_rows(rows: list[Mapping[str, str]], metric: str = "dice", source: str = "") -> dict:
    """task -> image -> score, from the rows of an ``omniseg evaluate --csv`` file (``source``,
    named in errors). An empty cell (a distance on an empty mask) or a repeated image is an error.
    """
    out: dict[str, dict[str, float]] = {}
    for number, row in enumerate(rows, start=2):  # line 1 is the header
        where = f"{source or 'rows'} line {number}"
        try:
            value = float(row[metric])
        except KeyError:
            raise ValueError(f"{where}: no column {metric!r}") from None
        except ValueError:
            raise ValueError(f"{where}: {metric}={row[metric]!r} is not a number") from None
        by_image = out.setdefault(row["task"], {})
        if row["image"] in by_image:
            raise ValueError(f"{where}: image {row['image']} appears twice for {row['task']}")
        by_image[row["image"]] = value
    return out


BOOTSTRAPPED_METRICS = ("dice", "dice_bg_inclusive")


def with_intervals(summary: dict, per_image: list[Mapping], resamples: int, seed: int = 0) -> dict:
    """``summary`` of ``evaluate`` plus a ``<metric>_ci`` [lo, hi] for each task and for the mean
    over tasks (Dice and bg-inclusive Dice), and a ``bootstrap`` entry saying how they were made.
    """
    out = {**summary, "tasks": {t: dict(r) for t, r in summary["tasks"].items()}}
    out["mean"] = dict(summary["mean"])
    for metric in BOOTSTRAPPED_METRICS:
        intervals = task_mean_intervals(scores_from_rows(per_image, metric), resamples, seed)
        for task, row in intervals["tasks"].items():
            out["tasks"][task][f"{metric}_ci"] = row["ci"]
        out["mean"][f"{metric}_ci"] = intervals["mean"]["ci"]
    out["bootstrap"] = {"resamples": resamples, "seed": seed, "level": DEFAULT_LEVEL,
                        "over": "images, within each task"}  # fmt: skip
    return out
