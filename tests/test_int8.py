"""int8 inference (--backend onnxruntime-int8): calibrated on patches, decoder only, close to fp32,
cached once, and every missing or stale calibration is one clear error."""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pytest
import torch

from omniseg.errors import OmnisegError
from omniseg.models import load_pretrained
from omniseg.models.pretrained import WEIGHTS_NAME, sha256_of
from omniseg.runtime.backends import make_predictor
from tests._training_synth import FAST, make_patch_set

pytest.importorskip("onnxruntime")
MODELS = ["omniseg-tiny", "omniseg-lite0-tiny"]
ENCODER_MODULES = ("backbone.encoder.", "conv1", "layer")  # torch names of the fp32 encoders
DICE_GAP = 0.01  # the bound, per task


@pytest.fixture(scope="module")
def patches(tmp_path_factory):
    root = tmp_path_factory.mktemp("int8")
    return make_patch_set(root / "p", size=64, per_task=4, tasks=((0, 1), (2, 0), (5, 3)))


@pytest.fixture(scope="module", params=MODELS)
def trained(request, patches, tmp_path_factory):
    """A tiny model trained to find the discs (so Dice means something), then calibrated."""
    from omniseg.evaluation.int8_calibration import calibrate_model_dir
    from omniseg.training import load_train_config, train

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = load_train_config(None, {
            **FAST, "run.model": request.param, "data.patch_size": 64, "data.path": str(patches),
            "run.out": str(tmp_path_factory.mktemp("run") / "r"), "run.max_steps": 60,
            "data.val_split": "none", "semi.enabled": False,
        })  # fmt: skip
        folder = train(cfg).model_dir
        calibrate_model_dir(folder, patches, verify=False)
    finally:
        torch.set_num_threads(previous)
    return folder


def _predictor(folder, backend):
    model = load_pretrained(folder, verify=False)
    return make_predictor(
        model, backend, "fp32", model_dir=folder, sha256=sha256_of(folder / WEIGHTS_NAME)
    )


def test_int8_keeps_each_tasks_dice_within_a_hundredth_of_fp32(trained, patches):
    from omniseg.data import discover_patches, load_pair
    from omniseg.runtime import image_to_tensor
    from omniseg.scoring.metrics import score_pair

    int8 = _predictor(trained, "onnxruntime-int8")
    fp32 = _predictor(trained, "torch")
    assert (int8.backend, int8.precision) == ("onnxruntime-int8", "int8")
    dice = {b: defaultdict(list) for b in ("fp32", "int8")}
    largest = 0.0
    for record in discover_patches(patches):
        image, mask = load_pair(record)
        x = image_to_tensor(image)[None]
        probs = {}
        for name, predictor in (("fp32", fp32), ("int8", int8)):
            probs[name] = predictor.predict_probability(
                x, [record.task_id], [record.scale_id], tta=False
            )[0].numpy()
            score = score_pair(probs[name] > 0.5, mask)["dice"]
            dice[name][record.task_id].append(0.0 if score is None else score)
        largest = max(largest, float(np.abs(probs["fp32"] - probs["int8"]).max()))
    assert 0 < largest < 0.25  # quantized (not the fp32 graph), yet close
    for task, scores in dice["fp32"].items():
        assert np.mean(scores) > 0.5, "the model must have learnt something to compare"
        assert abs(np.mean(dice["int8"][task]) - np.mean(scores)) <= DICE_GAP, task


def test_only_the_decoder_convolutions_are_quantized(trained):
    import onnx

    from omniseg.runtime.int8 import CALIBRATION_NAME, quantized_nodes

    model = load_pretrained(trained, verify=False)
    decoder = [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Conv2d) and not name.startswith(ENCODER_MODULES)
    ]
    table = json.loads((trained / CALIBRATION_NAME).read_text())
    assert len(table["nodes"]) == len(decoder) > 0
    int8 = _predictor(trained, "onnxruntime-int8")
    (path,) = [
        p for p in (trained / ".onnx-cache").iterdir() if "-int8-" in p.name and p.suffix == ".onnx"
    ]
    graph = onnx.load(str(path)).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("DequantizeLinear") > len(decoder)  # weights and activations
    assert set(quantized_nodes(path)) >= set(table["nodes"])
    int8_weights = [  # 4-D int8 tensors: conv weights (zero points are int8 vectors)
        t for t in graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4
    ]
    assert len(int8_weights) == len(decoder)
    assert int8.precision == "int8"


def test_the_int8_graph_is_built_once_and_keyed_by_the_table(trained):
    from omniseg.runtime.int8 import CALIBRATION_NAME

    _predictor(trained, "onnxruntime-int8")
    cache = trained / ".onnx-cache"
    (built,) = [p for p in cache.iterdir() if "-int8-" in p.name and p.suffix == ".onnx"]
    stamp = built.stat().st_mtime_ns
    _predictor(trained, "onnxruntime-int8")
    assert built.stat().st_mtime_ns == stamp and built.exists()
    table_path = trained / CALIBRATION_NAME
    original = table_path.read_text()
    try:
        table = json.loads(original)
        table["source"] = "recalibrated"
        table_path.write_text(json.dumps(table))
        _predictor(trained, "onnxruntime-int8")
        assert (
            len([p for p in cache.iterdir() if "-int8-" in p.name and p.suffix == ".onnx"]) == 2
        )  # a new table
    finally:
        table_path.write_text(original)


def test_missing_stale_or_foreign_calibrations_are_clear_errors(tmp_path):
    from omniseg.models import create_model, save_pretrained
    from omniseg.runtime.int8 import CALIBRATION_NAME

    folder = tmp_path / "m"
    save_pretrained(create_model("omniseg-tiny"), folder)
    with pytest.raises(OmnisegError, match="no int8 calibration.*omniseg calibrate"):
        _predictor(folder, "onnxruntime-int8")
    (folder / CALIBRATION_NAME).write_text("{not json")
    with pytest.raises(OmnisegError, match="not an omniseg int8 calibration"):
        _predictor(folder, "onnxruntime-int8")
    table = {"format": "omniseg-int8-calibration", "weights_sha256": "0" * 64, "ranges": {}}
    (folder / CALIBRATION_NAME).write_text(json.dumps(table))
    with pytest.raises(OmnisegError, match="calibrated for other weights"):
        _predictor(folder, "onnxruntime-int8")
    table.update(weights_sha256=None, nodes=["/decoder/not-here/Conv"])
    (folder / CALIBRATION_NAME).write_text(json.dumps(table))
    with pytest.raises(OmnisegError, match="layers this export does not have"):
        _predictor(folder, "onnxruntime-int8")
    assert not [
        p for p in (folder / ".onnx-cache").iterdir() if "-int8-" in p.name and p.suffix == ".onnx"
    ]
    with pytest.raises(OmnisegError, match="int8 only"):
        make_predictor(load_pretrained(folder), "onnxruntime-int8", "bf16", model_dir=folder)


def test_calibrate_cli_writes_the_table_and_refuses_bad_input(tmp_path, patches, capsys):
    from omniseg.cli.main import main
    from omniseg.models import create_model, save_pretrained
    from omniseg.runtime.int8 import CALIBRATION_NAME

    folder = tmp_path / "m"
    save_pretrained(create_model("omniseg-tiny"), folder)
    assert main(["calibrate", str(folder), "--data", str(patches), "--max-patches", "4"]) == 0
    table = json.loads((folder / CALIBRATION_NAME).read_text())
    assert table["patches"] == 4 and table["tasks"] == [0, 2, 5]  # round-robin over tasks
    assert table["weights_sha256"] == sha256_of(folder / WEIGHTS_NAME)
    assert all(low <= high for low, high in table["ranges"].values())
    capsys.readouterr()
    assert main(["calibrate", str(folder), "--data", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip()
    assert "none" in err and len(err.splitlines()) == 1
    assert main(["calibrate", str(folder), "--data", str(patches), "--max-patches", "0"]) == 2


def test_segment_runs_int8_and_records_it(trained, tmp_path):
    import tifffile

    from omniseg.data.synthetic import synthetic_tissue, write_tiff
    from omniseg.inference import ModelSource, SegmentSettings, segment_slide
    from omniseg.models import InferenceSettings

    model = load_pretrained(trained, verify=False)
    model.inference = InferenceSettings(tile_size=64, tile_overlap=16)
    source = ModelSource(str(trained), sha256_of(trained / WEIGHTS_NAME))
    slide = write_tiff(tmp_path / "s.tif", synthetic_tissue(120, 150), 0.5)
    labels = {}
    for backend in ("torch", "onnxruntime-int8"):
        # fp32: auto would pick bf16 for torch on a CPU with AVX512-BF16/AMX
        settings = SegmentSettings(progress=False, backend=backend, tissue_margin_um=None,
                                   precision="fp32")  # fmt: skip
        result = segment_slide(slide, tmp_path / backend, settings, model, model_source=source)
        runtime = result.summary["runtime"]
        assert (runtime["backend"], runtime["precision"]) == (
            backend,
            "int8" if backend.endswith("int8") else "fp32",
        )
        labels[backend] = tifffile.imread(result.out_dir / "labels.ome.tif", level=0)
    assert float(np.mean(labels["torch"] == labels["onnxruntime-int8"])) > 0.97


def test_the_bundled_model_ships_a_calibration_that_builds(tmp_path, monkeypatch):
    from omniseg.models.bundled import default_model_dir
    from omniseg.runtime.int8 import CALIBRATION_NAME, build_int8, read_calibration
    from omniseg.runtime.onnx_backend import export_onnx

    folder = default_model_dir()
    table, _ = read_calibration(folder, sha256_of(folder / WEIGHTS_NAME))
    assert table["patches"] >= 60 and table["tasks"] == [0, 1, 2, 3, 4, 5]
    fp32 = export_onnx(load_pretrained(folder), tmp_path / "m.onnx")
    build_int8(fp32, table, tmp_path / "m-int8.onnx", folder / CALIBRATION_NAME)
    assert (tmp_path / "m-int8.onnx").stat().st_size < fp32.stat().st_size
