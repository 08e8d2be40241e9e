"""Bootstrap intervals: exact limits, pairing, brute-force agreement and clear errors."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from omniseg.evaluation.bootstrap import (
    paired_mean_difference,
    scores_from_rows,
    task_mean_intervals,
)


def _scores(seed, tasks=(("dt", 4), ("pt", 4), ("ptc", 1))):
    rng = np.random.default_rng(seed)
    return {t: {f"{t}/im{i}.png": float(rng.random()) for i in range(n)} for t, n in tasks}


def test_task_intervals_hold_the_mean_and_a_single_image_has_no_spread():
    scores = _scores(1)
    out = task_mean_intervals(scores, resamples=2000, seed=3)
    for task, by_image in scores.items():
        values = list(by_image.values())
        row = out["tasks"][task]
        assert row["n"] == len(values) and row["mean"] == pytest.approx(np.mean(values))
        assert min(values) <= row["ci"][0] <= row["mean"] <= row["ci"][1] <= max(values)
    assert out["tasks"]["ptc"]["ci"][0] == out["tasks"]["ptc"]["ci"][1]
    task_means = [r["mean"] for r in out["tasks"].values()]
    assert out["mean"]["mean"] == pytest.approx(np.mean(task_means))
    assert out["mean"]["ci"][0] < out["mean"]["mean"] < out["mean"]["ci"][1]


def test_task_interval_matches_a_brute_force_bootstrap():
    values = np.array([0.1, 0.9, 0.4, 0.6])
    scores = {"dt": {f"im{i}": float(v) for i, v in enumerate(values)}}
    out = task_mean_intervals(scores, resamples=40000, seed=0)
    # the exact bootstrap distribution: all 4**4 equally likely resamples, enumerated
    grid = np.array(np.meshgrid(*[values] * 4)).reshape(4, -1).mean(axis=0)
    expected = np.percentile(grid, [2.5, 97.5], method="inverted_cdf")
    assert out["tasks"]["dt"]["ci"] == pytest.approx(expected, abs=0.013)


def test_paired_difference_of_identical_and_shifted_models_is_exact():
    a = _scores(2)
    same = paired_mean_difference(a, a, resamples=500)
    assert same["difference"] == 0.0 and same["ci"] == [0.0, 0.0]
    assert same["fraction_b_better"] == 0.0 and same["fraction_tied"] == 1.0
    lower = {t: {i: v - 0.1 for i, v in by.items()} for t, by in a.items()}
    shifted = paired_mean_difference(a, lower, resamples=500)
    assert shifted["difference"] == pytest.approx(0.1)
    assert shifted["ci"] == pytest.approx([0.1, 0.1])
    assert paired_mean_difference(lower, a, resamples=500)["fraction_b_better"] == 1.0


def test_pairing_removes_shared_image_difficulty():
    """Two models that differ by a constant on images of very different difficulty: paired
    intervals are tight, while independent per-model intervals overlap widely."""
    base = {"dt": {f"im{i}": d for i, d in enumerate([0.05, 0.95, 0.1, 0.9, 0.5])}}
    better = {"dt": {i: v + 0.03 for i, v in base["dt"].items()}}
    paired = paired_mean_difference(better, base, resamples=4000, seed=1)
    assert paired["ci"][0] > 0.0
    wide_a = task_mean_intervals(better, resamples=4000, seed=1)["mean"]["ci"]
    wide_b = task_mean_intervals(base, resamples=4000, seed=1)["mean"]["ci"]
    assert wide_a[0] < wide_b[1]  # unpaired intervals overlap


def test_same_seed_same_interval_and_bad_inputs_are_named():
    a, b = _scores(4), _scores(5)
    assert paired_mean_difference(a, b, seed=7) == paired_mean_difference(a, b, seed=7)
    b_missing = {t: dict(list(by.items())[1:]) if t == "dt" else by for t, by in b.items()}
    with pytest.raises(ValueError, match="dt/im0.png"):
        paired_mean_difference(a, b_missing)
    with pytest.raises(ValueError, match="ptc"):
        paired_mean_difference(a, {t: v for t, v in b.items() if t != "ptc"})
    with pytest.raises(ValueError, match="level"):
        task_mean_intervals(a, level=1.5)
    with pytest.raises(ValueError, match="no images"):
        task_mean_intervals({"dt": {}})
    with pytest.raises(ValueError, match="resamples"):
        paired_mean_difference(a, b, resamples=0)


def test_input_order_does_not_change_the_interval():
    a = _scores(6)
    reordered = {t: dict(reversed(list(a[t].items()))) for t in reversed(list(a))}
    assert task_mean_intervals(a, resamples=300) == task_mean_intervals(reordered, resamples=300)


def test_scores_from_evaluate_csv_rows():
    rows = [
        {"task": "dt", "image": "x.png", "dice": "0.5"},
        {"task": "dt", "image": "y.png", "dice": "0.25"},
        {"task": "pt", "image": "z.png", "dice": "1.0"},
    ]
    assert scores_from_rows(rows) == {"dt": {"x.png": 0.5, "y.png": 0.25}, "pt": {"z.png": 1.0}}
    with pytest.raises(ValueError, match="f.csv line 3: image y.png appears twice"):
        scores_from_rows([rows[1], rows[1]], source="f.csv")
    with pytest.raises(ValueError, match="f.csv line 2: hd95='' is not a number"):
        scores_from_rows([{"task": "dt", "image": "x.png", "hd95": ""}], "hd95", "f.csv")
    with pytest.raises(ValueError, match="no column 'iou'"):
        scores_from_rows(rows, "iou")


def test_tasks_with_several_images_drops_one_image_tasks():
    from omniseg.evaluation.bootstrap import tasks_with_several_images

    scores = {"dt": {"a": 0.1, "b": 0.2}, "ptc": {"c": 0.9}, "pt": {"d": 0.5, "e": 0.4}}
    assert tasks_with_several_images(scores) == {"dt": scores["dt"], "pt": scores["pt"]}


def _write_csv(path, scores):
    lines = ["task,image,dice"] + [
        f"{task},{image},{value}" for task, by in scores.items() for image, value in by.items()
    ]
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(("shift", "within"), [(0.004, True), (0.03, False)])
def test_reproduction_check_script_reports_per_task_means_and_tolerance(tmp_path, shift, within):
    """scripts/paired_difference.py --tolerance: the ±0.01 check of a rerun against a model."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "paired_difference.py"
    base = _scores(8)
    moved = {t: {i: v + shift for i, v in by.items()} for t, by in base.items()}
    _write_csv(tmp_path / "a.csv", moved)
    _write_csv(tmp_path / "b.csv", base)
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "a.csv"), str(tmp_path / "b.csv"),
         "--tolerance", "0.01", "--resamples", "200"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    out = json.loads(done.stdout)
    assert out["within_tolerance"] is within and out["difference"] == pytest.approx(shift)
    assert set(out["tasks"]) == set(base)
    for task, row in out["tasks"].items():
        assert row["b"] == pytest.approx(np.mean(list(base[task].values())))
        assert row["difference"] == pytest.approx(shift) and row["n"] == len(base[task])
