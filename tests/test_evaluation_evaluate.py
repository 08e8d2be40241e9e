"""evaluate_records / evaluate_path / `omniseg evaluate` on tiny synthetic patch folders."""

import csv
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from omniseg.catalogue import scales, tissues
from omniseg.cli.main import main
from omniseg.data import discover_patches
from omniseg.data.patches import read_manifest, walk_layout
from omniseg.errors import OmnisegError
from omniseg.evaluation.evaluate import evaluate_path, evaluate_records
from omniseg.models import InferenceSettings, create_model, save_pretrained
from omniseg.models.pretrained import WEIGHTS_NAME, sha256_of
from omniseg.scoring import metrics

SCHEMA_KEYS = {"n", "dice", "iou", "hd95", "hd95_um", "assd", "assd_um", "hd_null"}
SCHEMA_KEYS |= {"dice_bg_inclusive"}


class RedChannelModel(nn.Module):
    """Foreground probability = the red channel (steeply): predictions we can compute by hand."""

    def __init__(self, thresholds=(0.5,) * 6, tta=False) -> None:
        super().__init__()
        self.config = SimpleNamespace(size_divisor=16, in_channels=3)
        self.inference = InferenceSettings(thresholds=tuple(thresholds), tta=tta)
        self.anchor = nn.Parameter(torch.zeros(()))  # gives the model a device

    def forward(self, x, task_ids, scale_ids):
        fg = torch.logit(x[:, 0].clamp(1e-4, 1 - 1e-4))
        return torch.stack([torch.zeros_like(fg), fg], dim=1) + self.anchor


def _write_patch(folder, stem, image, mask, mode=None):
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image, mode).save(folder / f"{stem}.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(folder / f"{stem}_mask_x.png")


@pytest.fixture
def patch_folder(tmp_path):
    """4 images, 3 tasks, 4 stains, two sizes; RGB, RGBA and greyscale; one empty label."""
    rng = np.random.default_rng(0)
    root = tmp_path / "patches"

    def red_image(h, w, channels):
        img = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
        return img

    rgb = red_image(32, 32, 3)
    _write_patch(root / "0_1_dt" / "he", "a", rgb, rgb[..., 0] > 100)
    rgba = red_image(32, 32, 4)
    _write_patch(root / "0_1_dt" / "pas", "b", rgba, rgba[..., 0] > 140, "RGBA")
    grey = red_image(40, 24, 1)[..., 0]
    _write_patch(root / "3_0_tuft" / "sil", "c", grey, grey > 128, "L")
    empty = np.zeros((32, 32, 3), np.uint8)
    _write_patch(root / "5_3_ptc" / "pas", "d", empty, np.zeros((32, 32), bool))
    return root


def _expected_row(record, threshold):
    """Independent recomputation: red channel > threshold vs the label."""
    img = np.asarray(Image.open(record.image).convert("RGB"))
    mask = np.asarray(Image.open(record.mask)) >= 128
    pred = img[..., 0] / 255.0 > threshold
    return pred, mask


def test_scores_every_image_with_the_schema(patch_folder):
    records = discover_patches(patch_folder)
    result = evaluate_records(RedChannelModel(), records, batch_size=3)
    s = result.summary
    assert s["n_images"] == len(records) == len(result.per_image) == 4
    assert s["split"] is None and s["tta"] is False
    assert list(s["tasks"]) == ["dt", "tuft", "ptc"]
    assert set(s["stains"]) == {"dt/he", "dt/pas", "tuft/sil", "ptc/pas"}
    for row in (*s["tasks"].values(), *s["stains"].values(), s["mean"]):
        assert set(row) >= SCHEMA_KEYS
    assert sum(t["n"] for t in s["tasks"].values()) == 4
    assert set(s["thresholds"]) == {t.name for t in tissues()}
    assert [r["image"] for r in result.per_image] == [str(r.image) for r in records]


def test_per_image_scores_match_independent_computation(patch_folder):
    records = discover_patches(patch_folder)
    result = evaluate_records(RedChannelModel(), records, batch_size=2)
    for record, row in zip(records, result.per_image, strict=True):
        pred, mask = _expected_row(record, 0.5)
        assert row["dice"] == pytest.approx(metrics.dice(pred, mask))
        assert row["iou"] == pytest.approx(metrics.iou(pred, mask))
        assert row["fg_pred"] == int(pred.sum()) and row["fg_gt"] == int(mask.sum())
        assert (row["height"], row["width"]) == mask.shape
        mpp = scales()[record.scale_id].mpp
        if row["hd95"] is None:
            assert row["hd95_um"] is None and row["assd"] is None
        else:
            assert row["hd95_um"] == pytest.approx(row["hd95"] * mpp)
    ptc = result.summary["tasks"]["ptc"]  # empty label, empty prediction: perfect, no distance
    assert ptc["dice"] == 1.0 and ptc["iou"] == 1.0 and ptc["hd95"] is None
    assert ptc["hd_null"] == 1
    dt_rows = [r for r in result.per_image if r["task"] == "dt"]
    assert result.summary["tasks"]["dt"]["dice"] == pytest.approx(
        np.mean([r["dice"] for r in dt_rows])
    )
    task_dice = [t["dice"] for t in result.summary["tasks"].values()]
    assert result.summary["mean"]["dice"] == pytest.approx(np.mean(task_dice))


def test_model_thresholds_are_applied_and_can_be_overridden(patch_folder):
    records = discover_patches(patch_folder)
    strict = RedChannelModel(thresholds=(0.9, 0.5, 0.5, 0.5, 0.5, 0.5))
    by_model = evaluate_records(strict, records)
    by_arg = evaluate_records(RedChannelModel(), records, thresholds={"dt": 0.9})
    assert by_model.summary["thresholds"]["dt"] == 0.9
    for record, a, b in zip(records, by_model.per_image, by_arg.per_image, strict=True):
        threshold = 0.9 if record.task_id == 0 else 0.5
        pred, _ = _expected_row(record, threshold)
        assert a["fg_pred"] == b["fg_pred"] == int(pred.sum())
    with pytest.raises(OmnisegError, match="must lie in"):
        evaluate_records(RedChannelModel(), records, thresholds=[1.5] * 6)


def test_batch_size_and_tta_default(patch_folder):
    records = discover_patches(patch_folder)
    model = create_model("omniseg-tiny").eval()
    one = evaluate_records(model, records, batch_size=1)
    many = evaluate_records(model, records, batch_size=4)
    for a, b in zip(one.per_image, many.per_image, strict=True):
        assert a["fg_pred"] == b["fg_pred"] and a["image"] == b["image"]
    tta_model = RedChannelModel(tta=True)
    assert evaluate_records(tta_model, records).summary["tta"] is True
    assert evaluate_records(tta_model, records, tta=False).summary["tta"] is False


def test_split_selection_and_reports(patch_folder, tmp_path):
    rows = [r for r in discover_patches(patch_folder)]
    manifest = patch_folder / "manifest.csv"
    with open(manifest, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "mask", "task_id", "scale_id", "stain", "split"])
        for i, r in enumerate(rows):
            w.writerow([r.image.relative_to(patch_folder), r.mask.relative_to(patch_folder),
                        r.task_id, r.scale_id, r.stain, "val" if i % 2 else "train"])  # fmt: skip
    result = evaluate_records(RedChannelModel(), discover_patches(manifest), split="val")
    assert result.summary["split"] == "val" and result.summary["n_images"] == 2
    assert {r["split"] for r in result.per_image} == {"val"}
    out = result.to_json(tmp_path / "out" / "r.json", weights="w", sha="abc")
    report = json.loads(out.read_text())
    assert report["weights"] == "w" and report["weights_sha256"] == "abc"
    assert report["n_images"] == 2 and report["split"] == "val"
    result.to_csv(tmp_path / "out" / "r.csv")
    with open(tmp_path / "out" / "r.csv") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 2 and {"image", "dice", "hd95", "fg_pred", "fg_gt"} <= set(table[0])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["r.csv", "r.json"]


def test_unreadable_image_is_an_error_not_a_skip(patch_folder):
    (patch_folder / "0_1_dt" / "he" / "a.png").write_bytes(b"not a png")
    with pytest.raises(OmnisegError, match="a.png"):
        evaluate_records(RedChannelModel(), discover_patches(patch_folder))


def test_missing_bundled_model_asks_for_weights(patch_folder, monkeypatch):
    from omniseg.models import bundled

    monkeypatch.setattr(bundled, "default_model_dir", lambda: None)
    with pytest.raises(OmnisegError, match="--weights"):
        evaluate_path(patch_folder, device="cpu")


@pytest.fixture
def tiny_model_dir(tmp_path):
    model = create_model("omniseg-tiny")
    model.inference = InferenceSettings(thresholds=(0.4, 0.5, 0.5, 0.5, 0.5, 0.6), tta=True)
    return save_pretrained(model, tmp_path / "model")


def test_cli_writes_json_and_csv(patch_folder, tiny_model_dir, tmp_path, capsys):
    out_json, out_csv = tmp_path / "r" / "eval.json", tmp_path / "r" / "eval.csv"
    args = ["evaluate", str(patch_folder), "--weights", str(tiny_model_dir), "--no-tta"]
    args += ["--json", str(out_json), "--csv", str(out_csv), "--device", "cpu"]
    assert main([*args, "--batch-size", "2"]) == 0
    report = json.loads(out_json.read_text())
    assert report["n_images"] == 4 and report["tta"] is False and report["split"] is None
    assert report["weights"] == str(tiny_model_dir)
    assert report["weights_sha256"] == sha256_of(tiny_model_dir / WEIGHTS_NAME)
    assert report["thresholds"]["dt"] == 0.4 and report["thresholds"]["ptc"] == 0.6
    assert set(report["tasks"]) == {"dt", "tuft", "ptc"}
    with open(out_csv) as fh:
        assert len(list(csv.DictReader(fh))) == 4
    assert "dt" in capsys.readouterr().out
    assert main(["evaluate", str(patch_folder), "--weights", str(tiny_model_dir),
                 "--json", str(out_json)]) == 0  # fmt: skip
    assert json.loads(out_json.read_text())["tta"] is True  # the model folder's default


def test_bootstrap_adds_intervals_that_match_the_bootstrap_module(patch_folder):
    from omniseg.evaluation.bootstrap import task_mean_intervals

    records = discover_patches(patch_folder)
    plain = evaluate_records(RedChannelModel(), records)
    assert "bootstrap" not in plain.summary and "dice_ci" not in plain.summary["mean"]
    result = evaluate_records(RedChannelModel(), records, bootstrap=400)
    s = result.summary
    assert s["bootstrap"]["resamples"] == 400
    for metric in ("dice", "dice_bg_inclusive"):
        scores = {}
        for row in result.per_image:
            scores.setdefault(row["task"], {})[str(row["image"])] = row[metric]
        expected = task_mean_intervals(scores, 400, 0)
        for task, row in s["tasks"].items():
            assert row[f"{metric}_ci"] == expected["tasks"][task]["ci"]
            assert row[f"{metric}_ci"][0] <= row[metric] <= row[f"{metric}_ci"][1]
        assert s["mean"][f"{metric}_ci"] == expected["mean"]["ci"]
        assert s["tasks"]["dt"][metric] == plain.summary["tasks"]["dt"][metric]  # scores unchanged
    with pytest.raises(OmnisegError, match="--bootstrap -1"):
        evaluate_records(RedChannelModel(), records, bootstrap=-1)


def test_cli_bootstrap_writes_and_prints_intervals(patch_folder, tiny_model_dir, tmp_path, capsys):
    out_json = tmp_path / "eval.json"
    args = ["evaluate", str(patch_folder), "--weights", str(tiny_model_dir), "--no-tta"]
    assert main([*args, "--json", str(out_json), "--bootstrap", "200"]) == 0
    report = json.loads(out_json.read_text())
    assert report["bootstrap"]["resamples"] == 200 and len(report["mean"]["dice_ci"]) == 2
    assert "95% CI" in capsys.readouterr().out


def test_cli_bad_data_path_exit_2(tmp_path, tiny_model_dir, capsys):
    missing = tmp_path / "no-such-folder"
    out_json = tmp_path / "eval.json"
    code = main(
        ["evaluate", str(missing), "--weights", str(tiny_model_dir), "--json", str(out_json)]
    )
    assert code == 2
    assert str(missing) in capsys.readouterr().err
    assert not out_json.exists()


def test_cli_bad_split_and_precision_exit_2(patch_folder, tiny_model_dir, capsys):
    base = ["evaluate", str(patch_folder), "--weights", str(tiny_model_dir)]
    assert main([*base, "--split", "test"]) == 2
    assert "--split test" in capsys.readouterr().err
    assert main([*base, "--precision", "fp8"]) == 2
    assert "--precision" in capsys.readouterr().err


def test_manifest_and_folder_readers_agree_on_real_patches(kidney_patches):
    from_manifest = read_manifest(kidney_patches / "manifest.csv")
    from_folders = walk_layout(kidney_patches)

    def key(r):
        return (r.image.resolve(), r.mask.resolve(), r.task_id, r.scale_id, r.stain)

    assert sorted(map(key, from_manifest)) == sorted(map(key, from_folders))
    model = RedChannelModel()
    a = evaluate_records(model, from_manifest, batch_size=8)
    b = evaluate_records(model, from_folders, batch_size=8)
    assert a.summary["n_images"] == b.summary["n_images"] == len(from_manifest)
    assert a.summary["tasks"] == b.summary["tasks"]
    assert a.summary["stains"] == b.summary["stains"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.5", [0.5] * 6),
        ("0.3,0.4,0.5,0.6,0.7,0.8", [0.3, 0.4, 0.5, 0.6, 0.7, 0.8]),
        ("vessel=0.3, dt=0.45", {"vessel": 0.3, "dt": 0.45}),
        ("0=0.3,ptc=0.6", {0: 0.3, "ptc": 0.6}),
        (None, None),
    ],
)
def test_thresholds_option_forms(text, expected):
    from omniseg.cli.evaluate_cmd import parse_thresholds

    assert parse_thresholds(text) == expected


def test_cli_thresholds_override_the_model_folder(patch_folder, tiny_model_dir, tmp_path, capsys):
    out_json = tmp_path / "eval.json"
    base = ["evaluate", str(patch_folder), "--weights", str(tiny_model_dir), "--no-tta"]
    assert main([*base, "--json", str(out_json), "--thresholds", "0.5"]) == 0
    assert set(json.loads(out_json.read_text())["thresholds"].values()) == {0.5}
    assert main([*base, "--json", str(out_json), "--thresholds", "tuft=1.0"]) == 0
    report = json.loads(out_json.read_text())
    assert report["thresholds"]["tuft"] == 1.0 and report["thresholds"]["dt"] == 0.4
    assert report["tasks"]["tuft"]["dice"] == 0.0  # p > 1.0 never holds: nothing predicted
    for bad, message in (("0.5,0.5", "expected 6 values"), ("nerve=0.3", "unknown tissue"),
                         ("high", "--thresholds 'high'"), ("dt=2", "must lie in"),
                         ("dt=0.3,dt=0.9", "given twice")):  # fmt: skip
        assert main([*base, "--thresholds", bad]) == 2
        assert message in capsys.readouterr().err
